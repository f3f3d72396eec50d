"""Resume (issue 4, semantics 7): finished stages are skipped on a rerun while
their inputs and config are unchanged; a SIGKILL mid-merge loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import duckmerge
import pytest

STAGES = ["import_original", "import_enriched", "consolidate", "match_merge", "export"]


def make_inputs(folder: Path, rows: int) -> dict[str, str]:
    """A CRM file and two vendor files sharing people (by email, some by phone)."""
    folder.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    paths = {n: str(folder / f"{n}.csv") for n in ("crm", "va", "vb")}
    con.execute(f"""
        COPY (SELECT i AS id, 'p' || i || '@x.cz' AS email,
                     CASE WHEN i % 3 = 0 THEN '+420 601 ' || lpad(CAST(i % 1000000 AS VARCHAR), 6, '0') END
                       AS phone,
                     'name ' || i AS name
              FROM range({rows}) t(i)) TO '{paths["crm"]}' (HEADER)""")
    con.execute(f"""
        COPY (SELECT upper('P' || (i * 7 % {rows}) || '@X.CZ ') AS email, NULL AS phone,
                     'title ' || i AS title, 'city ' || (i % 97) AS city
              FROM range({rows}) t(i)) TO '{paths["va"]}' (HEADER)""")
    con.execute(f"""
        COPY (SELECT CASE WHEN i % 2 = 0 THEN 'p' || i || '@x.cz' END AS email,
                     '00420601' || lpad(CAST(i % 1000000 AS VARCHAR), 6, '0') AS phone,
                     'vb title ' || i AS title, NULL AS city
              FROM range({rows}) t(i)) TO '{paths["vb"]}' (HEADER)""")
    con.close()
    return paths


def config(paths: dict[str, str], out: Path, **extra) -> dict:
    cfg = {
        "original": {"path": paths["crm"]},
        "enriched": [{"path": paths["va"]}, {"path": paths["vb"]}],
        "keys": ["email", {"column": "phone", "normalize": "phone", "default_region": "CZ"}],
        "output": {"path": str(out)},
    }
    cfg.update(extra)
    return cfg


def stage_events(session_dir: Path) -> list[dict]:
    path = session_dir / "logs" / "events.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        if e["event"] == "merge_progress":
            out.append(e)
    return out


def run_in(session_dir: Path, cfg: dict, step_id: str = "merged") -> dict:
    with duckmerge.Session(session_dir, keep=True) as s:
        return duckmerge.MergeDriver().run(step_id=step_id, config=cfg, inputs=None, ctx=s)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    return make_inputs(tmp_path_factory.mktemp("resume-data"), 300_000)


def test_sigkill_during_match_merge_then_rerun_gives_byte_identical_output(tmp_path, inputs):
    # The reference: one uninterrupted run in its own session.
    ref_out = tmp_path / "reference.csv"
    ref = run_in(tmp_path / "ref-session", config(inputs, ref_out))
    assert ref["rows"] == 300_000 and ref["skipped_stages"] == []

    session_dir = tmp_path / "session"
    out = tmp_path / "out" / "merged.csv"
    out.parent.mkdir()
    script = textwrap.dedent(f"""
        import duckmerge, json
        cfg = json.loads({json.dumps(json.dumps(config(inputs, out)))})
        with duckmerge.Session({str(session_dir)!r}, keep=True) as s:
            duckmerge.MergeDriver().run(step_id="merged", config=cfg, inputs=None, ctx=s)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        # consolidate's event is the last thing before match_merge starts.
        deadline = time.monotonic() + 180
        while not any(e["stage"] == "consolidate" for e in stage_events(session_dir)):
            assert proc.poll() is None, "the merge ended before it could be killed"
            assert time.monotonic() < deadline, "consolidate never finished"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = [e["stage"] for e in stage_events(session_dir)]
    assert "match_merge" not in done, f"killed too late to test anything: {done}"
    # Nothing half-written where the output goes.
    assert list(out.parent.iterdir()) == []

    again = run_in(session_dir, config(inputs, out))
    assert again["skipped_stages"] == ["import_original", "import_enriched", "consolidate"]
    assert again["rows"] == 300_000
    assert out.read_bytes() == ref_out.read_bytes()
    assert again["stats"] == ref["stats"]
    # The log says what was skipped.
    rerun = stage_events(session_dir)[len(done):]
    assert [(e["stage"], e["skipped"]) for e in rerun] == [
        ("import_original", True), ("import_enriched", True), ("consolidate", True),
        ("match_merge", False), ("export", False)]
    assert "unchanged" in rerun[0]["message"]


def small_inputs(folder: Path) -> dict[str, str]:
    return make_inputs(folder, 2_000)


def test_an_unchanged_rerun_skips_every_stage_and_keeps_the_output(tmp_path):
    paths = small_inputs(tmp_path / "data")
    out = tmp_path / "merged.csv"
    first = run_in(tmp_path / "s", config(paths, out))
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    second = run_in(tmp_path / "s", config(paths, out))
    assert second["skipped_stages"] == STAGES
    assert second["stats"] == first["stats"]
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before


def test_a_deleted_output_file_is_written_again(tmp_path):
    paths = small_inputs(tmp_path / "data")
    out = tmp_path / "merged.csv"
    run_in(tmp_path / "s", config(paths, out))
    expected = out.read_bytes()
    out.unlink()
    again = run_in(tmp_path / "s", config(paths, out))
    assert again["skipped_stages"] == STAGES[:4]
    assert out.read_bytes() == expected


def test_a_changed_vendor_file_reruns_from_import_enriched(tmp_path):
    paths = small_inputs(tmp_path / "data")
    out = tmp_path / "merged.csv"
    run_in(tmp_path / "s", config(paths, out))
    with open(paths["vb"], "a") as f:
        f.write("p1@x.cz,,changed title,\n")
    again = run_in(tmp_path / "s", config(paths, out))
    assert again["skipped_stages"] == ["import_original"]
    assert again["stats"]["rows_per_source"]["vb"] == 2_001
    # The run against the changed vendor matches a fresh session's answer.
    fresh = run_in(tmp_path / "fresh", config(paths, tmp_path / "fresh.csv"))
    assert out.read_bytes() == (tmp_path / "fresh.csv").read_bytes()
    assert fresh["stats"] == again["stats"]


def test_a_changed_config_reruns_only_what_it_affects(tmp_path):
    paths = small_inputs(tmp_path / "data")
    out = tmp_path / "merged.csv"
    run_in(tmp_path / "s", config(paths, out))
    again = run_in(tmp_path / "s", config(paths, out, strategy="last"))
    assert again["skipped_stages"] == ["import_original", "import_enriched", "consolidate"]
    with duckmerge.Session(tmp_path / "s", keep=True) as s:
        # p0 is in both vendors: va row 0 ("title 0") and vb row 0 ("vb title 0").
        assert s.sql("SELECT title FROM merged WHERE id = 0").fetchone() == ("vb title 0",)
    # A different key normaliser changes the consolidated table too.
    keys = ["email", {"column": "phone", "normalize": "exact"}]
    third = run_in(tmp_path / "s", config(paths, out, keys=keys))
    assert third["skipped_stages"] == ["import_original"]


def test_another_original_against_the_same_vendors_reuses_the_consolidated_table(tmp_path):
    paths = small_inputs(tmp_path / "data")
    other = tmp_path / "data" / "crm2.csv"
    other.write_text("id,email,phone\n1,p5@x.cz,\n2,nobody@x.cz,\n")
    run_in(tmp_path / "s", config(paths, tmp_path / "a.csv"), step_id="first")
    cfg = config(paths, tmp_path / "b.csv")
    cfg["original"] = {"path": str(other)}
    second = run_in(tmp_path / "s", cfg, step_id="second")
    assert second["skipped_stages"] == ["import_enriched", "consolidate"]
    assert second["rows"] == 2 and second["stats"]["matched"] == 1
    with duckmerge.Session(tmp_path / "s", keep=True) as s:
        consolidated = [t for t in s.get_db_connection().tables()
                        if t.startswith("_duckmerge_consolidated_")]
        assert len(consolidated) == 1


def test_resume_false_reruns_everything(tmp_path):
    paths = small_inputs(tmp_path / "data")
    out = tmp_path / "merged.csv"
    run_in(tmp_path / "s", config(paths, out))
    again = run_in(tmp_path / "s", config(paths, out, resume=False))
    assert again["skipped_stages"] == []


def test_a_changed_table_source_is_noticed(tmp_path):
    import pyarrow as pa

    with duckmerge.Session(tmp_path / "s", keep=True) as s:
        s.write_table("crm", pa.table({"id": [1, 2], "email": ["a@x.cz", "b@x.cz"]}))
        s.write_table("va", pa.table({"email": ["a@x.cz"], "title": ["CEO"]}))
        cfg = {"original": "crm", "enriched": ["va"], "keys": ["email"]}
        driver = duckmerge.MergeDriver()
        driver.run(step_id="m", config=cfg, inputs=None, ctx=s)
        assert driver.run(step_id="m", config=cfg, inputs=None, ctx=s)["skipped_stages"] == [
            "import_enriched", "consolidate", "match_merge"]
        # Same row count, other content: the fingerprint sees it.
        s.write_table("va", pa.table({"email": ["b@x.cz"], "title": ["CTO"]}), mode="replace")
        out = driver.run(step_id="m", config=cfg, inputs=None, ctx=s)
        assert out["skipped_stages"] == []
        assert s.sql("SELECT id, title FROM m ORDER BY id").fetchall() == [(1, None), (2, "CTO")]
