"""Where one merge spends its time: a profiling aid, not a benchmark.

Runs the benchmark's merge (``merge_bench.py``'s data and config) once, in
this process, in a fresh session with the ``duckmerge`` logger at DEBUG, and
prints the wall time, CPU time and peak RSS, each stage's seconds and the
slowest SQL statements from the debug log (``SQL 1.234s (CPU 2.10s): CREATE
TABLE ...``, the CPU the whole process used while the statement ran).
To compare two builds, run each several times, alternating: the machine's
load moves single runs by a quarter.

    python benches/merge_profile.py                 # 1M rows, as merge_bench
    python benches/merge_profile.py --rows 100000 --top 5
    python benches/merge_profile.py --no-compress-text   # sources and output
    python benches/merge_profile.py --log merge.log      # keep the whole log
    python benches/merge_profile.py --log merge.log --full-sql  # ... and whole statements
"""

from __future__ import annotations

import argparse
import logging
import re
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import merge_bench

STATEMENT = re.compile(r"^(?:SQL|query)(?: beside it)? (\d+\.\d+)s(?: \(CPU (\d+\.\d+)s\))?: (.*)$")


class Collect(logging.Handler):
    """Keeps every record's message (and writes it to ``log_file``)."""

    def __init__(self, log_file: Path | None) -> None:
        super().__init__(1)
        self.messages: list[str] = []
        self.started = time.perf_counter()
        self.out = log_file.open("w") if log_file else None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if self.out:
            at = time.perf_counter() - self.started
            self.out.write(f"{at:9.3f} {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="original rows (1,000,000)")
    parser.add_argument("--vendors", type=int, default=3, help="vendor files (3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=merge_bench.default_data_dir())
    parser.add_argument("--memory-limit", default="500MB")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=12, help="slowest statements to print (12)")
    parser.add_argument("--log", type=Path, help="write the whole debug log here")
    parser.add_argument(
        "--full-sql", action="store_true",
        help="with --log: each statement longer than 160 characters also whole (trace level)",
    )
    parser.add_argument(
        "--no-compress-text",
        action="store_true",
        help="compress_text: false on every source and on the output",
    )
    args = parser.parse_args(argv)

    import duckmerge

    original, vendors = merge_bench.datasets(
        args.data_dir, args.rows, int(args.rows * 0.8), args.vendors, args.seed
    )
    work = Path(tempfile.mkdtemp(prefix="duckmerge-profile-"))
    try:
        spec = {"original": str(original), "vendors": [str(v) for v in vendors],
                "out": str(work / "out.csv")}
        config = merge_bench.merge_config(spec)
        if args.no_compress_text:
            for source in [config["original"], *config["enriched"]]:
                source["compress_text"] = False
            config["output"]["compress_text"] = False

        handler = Collect(args.log)
        logger = logging.getLogger("duckmerge")
        logger.addHandler(handler)
        logger.setLevel(5 if args.full_sql else logging.DEBUG)
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        session_dir = work / "session"
        with duckmerge.Session(session_dir, memory_limit=args.memory_limit,
                               threads=args.threads) as session:
            result = duckmerge.MergeDriver().run(step_id="merged", config=config, ctx=session)
        seconds = time.perf_counter() - started
        used = resource.getrusage(resource.RUSAGE_SELF)
        logger.removeHandler(handler)
        stages = merge_bench.stage_seconds_from_events(session_dir / "logs" / "events.jsonl")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cpu_s = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
    print(f"merge of {args.rows:,} rows: {seconds:.2f} s, CPU {cpu_s:.1f} s, "
          f"peak RSS {used.ru_maxrss / 1024:.0f} MB, {result['rows']:,} output rows"
          + (" (compress_text: false)" if args.no_compress_text else ""))
    print("stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    timed = []
    for message in handler.messages:
        m = STATEMENT.match(message)
        if m:
            cpu = float(m.group(2)) if m.group(2) else None
            timed.append((float(m.group(1)), cpu, m.group(3)))
    timed.sort(key=lambda t: t[0], reverse=True)
    print(f"slowest {min(args.top, len(timed))} of {len(timed)} statements "
          "(wall s, process CPU s meanwhile; CPU close to wall: one thread busy):")
    for secs, cpu, sql in timed[: args.top]:
        used = f"{cpu:6.2f}" if cpu is not None else "     -"
        print(f"  {secs:7.3f}s {used}s  {sql[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
