"""What the benchmark scripts measure in their worker processes: peak
resident memory and CPU time (Linux /proc first, getrusage elsewhere)."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """The process's peak resident size in MB (since the last
    :func:`reset_peak_rss` on Linux, else over its whole life)."""
    status = Path("/proc/self/status")
    if status.exists():
        # VmHWM is the figure clear_refs resets; ru_maxrss may also keep the
        # high-water mark of threads that exited before a reset.
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (less sensitive
    than the wall clock to other load on the machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sql_string(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def spawn_worker(script: str, spec: dict, timeout: float, python: str | None = None) -> dict:
    """Run ``script --worker <spec as JSON>`` in a fresh interpreter (so each
    measurement starts from an empty process); its last stdout line is JSON.
    ``python`` is the interpreter (default: this one). A failure or timeout
    comes back as ``{"error": ...}``."""
    import json
    import os
    import subprocess

    cmd = [python or sys.executable, os.path.abspath(script), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        return {"error": f"exit status {proc.returncode}\n{tail}"}
    result: dict = json.loads(lines[-1])
    return result


def peer_python_for(spec: dict, peer_sides: tuple[str, ...]) -> str | None:
    """The interpreter for ``spec``'s side: ``spec["peer_python"]`` (from
    ``--peer-python``) for the duckdb-python sides, else this one."""
    return spec.get("peer_python") if spec.get("side") in peer_sides else None


def peer_duckdb_version(python: str) -> str:
    """duckdb-python's version under another interpreter (``--peer-python``)."""
    import subprocess

    probe = "import duckdb, platform; print(duckdb.__version__, platform.python_version())"
    proc = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"--peer-python {python}: cannot import duckdb ({proc.stderr.strip()})")
    duckdb_version, python_version = proc.stdout.split()
    return f"{duckdb_version} (python {python_version} at {python})"


PEER_PYTHON_HELP = (
    "run the duckdb-python side(s) with this interpreter instead, e.g. a virtualenv "
    "with another duckdb release than the installed one (duckmerge embeds 2.0.0); "
    "it needs duckdb, pandas, pyarrow and numpy"
)
