"""The benchmark scripts still run end to end (tiny sizes), including
``--peer-python``, which runs duckdb-python's side under another interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent


def wrapper(path: Path, body: str) -> Path:
    """An executable shell script at ``path`` ending in ``body``."""
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def run_handoff(peer: Path) -> subprocess.CompletedProcess[str]:
    """``benches/handoff.py`` on 3,000 rows, once, with ``--peer-python peer``."""
    cmd = [sys.executable, str(ROOT / "benches" / "handoff.py"), "--rows", "3000"]
    cmd += ["--repeat", "1", "--peer-python", str(peer)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


def test_handoff_runs_the_peer_under_the_given_interpreter(tmp_path: Path) -> None:
    # A wrapper: a path of its own that only this option can have put in the report.
    calls = tmp_path / "calls.log"
    peer = wrapper(
        tmp_path / "peer-python", f'echo "$@" >> "{calls}"\nexec "{sys.executable}" "$@"'
    )

    proc = run_handoff(peer)

    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"duckdb {duckdb.__version__} (python " in proc.stdout
    assert f"at {peer})" in proc.stdout
    # every duckdb-python measurement, and only those, ran under the wrapper
    workers = [line for line in calls.read_text().splitlines() if "--worker" in line]
    assert len(workers) == 3, workers
    assert all('"side": "duckdb"' in line for line in workers), workers
    assert sorted(
        op
        for op in ("to_arrow", "to_pandas", "write_table")
        if any(f'"op": "{op}"' in line for line in workers)
    ) == ["to_arrow", "to_pandas", "write_table"]


def test_a_peer_python_without_duckdb_is_refused(tmp_path: Path) -> None:
    # -S -I: no site-packages, so no duckdb.
    fake = wrapper(tmp_path / "python-without-duckdb", f'exec "{sys.executable}" -S -I "$@"')

    proc = run_handoff(fake)

    assert proc.returncode != 0
    assert "cannot import duckdb" in proc.stdout + proc.stderr


def test_handoff_calls_times_later_calls_in_the_same_process() -> None:
    """``--calls 3``: the table still reports each process's first call, and
    a line per side lists it followed by the second and third."""
    cmd = [sys.executable, str(ROOT / "benches" / "handoff.py"), "--rows", "3000"]
    cmd += ["--repeat", "1", "--ops", "to_arrow", "--calls", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "calls after the first in the same process (--calls 3), per run:" in proc.stdout
    for side in ("duckmerge", "duckdb"):
        line = next(
            (text for text in proc.stdout.splitlines() if text.split()[:2] == ["to_arrow", side]),
            None,
        )
        assert line is not None, proc.stdout
        first, later = line.split(side, 1)[1].strip().removesuffix(" s").split(" then ")
        assert float(first) > 0
        assert len([float(x) for x in later.split(", ")]) == 2, line
