"""The hand-written stub matches the built module (mypy stubtest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_stub_matches_compiled_module(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "duckmerge._duckmerge"],
        check=False,
        cwd=tmp_path,  # so the installed package is checked, not a source tree
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(proc.stdout)
    print(proc.stderr, file=sys.stderr)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_package_ships_py_typed() -> None:
    import duckmerge

    package_dir = Path(duckmerge.__file__).parent
    assert (package_dir / "py.typed").is_file()
    assert (package_dir / "_duckmerge.pyi").is_file()
