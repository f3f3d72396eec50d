"""Shared fixtures for the duckmerge test suite.

Every test gets its own session folder under ``tmp_path``; nothing is shared
between tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckmerge
import pytest


@pytest.fixture
def session_path(tmp_path: Path) -> Path:
    """The folder the ``session`` fixture opens (it does not exist before)."""
    return tmp_path / "s"


@pytest.fixture
def session(session_path: Path) -> Iterator[duckmerge.Session]:
    """An open session in ``tmp_path / "s"``, closed after the test."""
    s = duckmerge.Session(session_path)
    try:
        yield s
    finally:
        s.close()
