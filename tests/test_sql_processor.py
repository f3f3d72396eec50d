"""SqlProcessor ("duckdb.processor"): a query's result becomes table ``step_id``."""

from __future__ import annotations

import duckmerge
import pytest
from _drivers_util import (
    RecordingCtx,
    all_table_names,
    column_names,
    fetch,
    staging_tables,
    table_rows,
)


@pytest.fixture
def crm(session):
    session.execute(
        "CREATE TABLE crm AS SELECT * FROM (VALUES (1, 'ann@x.cz', 'Brno'), (2, 'bob@x.cz', 'Praha'), "
        "(3, 'cyd@x.cz', 'Brno')) v(id, email, city)"
    )
    session.execute(
        "CREATE TABLE vendor AS SELECT * FROM (VALUES ('ann@x.cz', 'CEO'), ('cyd@x.cz', 'CTO')) v(email, title)"
    )
    return session


def run(ctx, step_id, query, inputs=None):
    return duckmerge.SqlProcessor().run(
        step_id=step_id, config={"query": query}, inputs=inputs, ctx=ctx
    )


def test_query_result_is_stored_as_step_table(crm):
    out = run(crm, "brno", "SELECT id, email FROM crm WHERE city = 'Brno' ORDER BY id")
    assert out == {"table": "brno", "rows": 2}
    assert column_names(crm, "brno") == ["id", "email"]
    assert table_rows(crm, "brno") == [(1, "ann@x.cz"), (3, "cyd@x.cz")]


def test_positional_call(crm):
    out = duckmerge.SqlProcessor().run("n", {"query": "SELECT count(*) AS n FROM crm"}, None, crm)
    assert out == {"table": "n", "rows": 1}
    assert table_rows(crm, "n") == [(3,)]


@pytest.mark.parametrize(
    "inputs",
    [None, {"table": "crm"}, {"tables": ["crm", "vendor"]}, {"crm": "crm", "vendor": "vendor"}],
)
def test_query_over_several_tables_with_any_inputs(crm, inputs):
    query = "SELECT c.id, c.email, v.title FROM crm c JOIN vendor v USING (email)"
    assert run(crm, "joined", query, inputs) == {"table": "joined", "rows": 2}
    assert table_rows(crm, "joined") == [(1, "ann@x.cz", "CEO"), (3, "cyd@x.cz", "CTO")]


def test_empty_result_is_a_zero_row_table(crm):
    assert run(crm, "none", "SELECT * FROM crm WHERE false") == {"table": "none", "rows": 0}
    assert column_names(crm, "none") == ["id", "email", "city"]


def test_trailing_semicolon_and_whitespace_are_accepted(crm):
    assert run(crm, "t", "  SELECT 1 AS one;  \n") == {"table": "t", "rows": 1}


def test_query_with_cte(crm):
    query = "WITH b AS (SELECT * FROM crm WHERE city = 'Brno') SELECT count(*) AS n FROM b"
    assert run(crm, "cte", query) == {"table": "cte", "rows": 1}
    assert table_rows(crm, "cte") == [(2,)]


def test_rows_written_metric_and_start_complete_events(crm):
    ctx = RecordingCtx(crm.get_db_connection())
    run(ctx, "r", "SELECT * FROM range(7)")
    assert ("rows_written", 7) in ctx.metrics
    for args, kwargs in ctx.metric_calls:
        assert len(args) == 2 and kwargs == {}, (args, kwargs)
    names = ctx.event_names
    assert "start" in names[0] and "complete" in names[-1], names


def test_rerun_replaces_the_table(crm):
    run(crm, "t", "SELECT 1 AS a, 2 AS b")
    assert run(crm, "t", "SELECT 'x' AS c FROM range(3)") == {"table": "t", "rows": 3}
    assert column_names(crm, "t") == ["c"]


def test_query_may_read_the_step_table_it_replaces(crm):
    run(crm, "t", "SELECT range AS i FROM range(5)")
    assert run(crm, "t", "SELECT i * 10 AS i FROM t WHERE i < 3") == {"table": "t", "rows": 3}
    assert table_rows(crm, "t") == [(0,), (10,), (20,)]


def test_sql_error_is_sql_error_naming_the_step_with_duckdbs_message(crm):
    with pytest.raises(duckmerge.SqlError) as err:
        run(crm, "bad-step", "SELECT * FROM nowhere")
    assert isinstance(err.value, duckmerge.DuckMergeError)
    message = str(err.value)
    assert "Step bad-step" in message
    assert "Table with name nowhere does not exist" in message
    assert "bad-step" not in all_table_names(crm)
    assert staging_tables(crm) == []


def test_syntax_error_is_sql_error(crm):
    with pytest.raises(duckmerge.SqlError) as err:
        run(crm, "syn", "SELEC 1")
    assert "Step syn" in str(err.value)
    assert "syntax error" in str(err.value)


def test_runtime_error_is_sql_error(crm):
    with pytest.raises(duckmerge.SqlError) as err:
        run(crm, "cast", "SELECT CAST('abc' AS INTEGER) AS x")
    assert "Step cast" in str(err.value)
    assert "abc" in str(err.value)


def test_failing_rerun_keeps_the_previous_table(crm):
    run(crm, "keep", "SELECT id FROM crm")
    with pytest.raises(duckmerge.SqlError):
        run(crm, "keep", "SELECT no_such_column FROM crm")
    assert table_rows(crm, "keep") == [(1,), (2,), (3,)]
    assert staging_tables(crm) == []


def test_failing_runtime_rerun_keeps_the_previous_table(crm):
    run(crm, "keep", "SELECT id FROM crm")
    with pytest.raises(duckmerge.SqlError):
        run(crm, "keep", "SELECT CAST(email AS INTEGER) AS id FROM crm")
    assert table_rows(crm, "keep") == [(1,), (2,), (3,)]
    assert staging_tables(crm) == []


@pytest.mark.parametrize("step_id", ["extract-movies", 'x"; DROP TABLE y; --'])
def test_step_id_is_only_a_table_name(crm, step_id):
    crm.execute("CREATE TABLE y AS SELECT 42 AS v")
    assert run(crm, step_id, "SELECT * FROM crm") == {"table": step_id, "rows": 3}
    assert step_id in all_table_names(crm)
    assert fetch(crm, "SELECT v FROM y") == [(42,)]


@pytest.mark.parametrize("config", [{}, {"query": ""}, {"query": "   "}])
def test_query_is_required(crm, config):
    with pytest.raises(duckmerge.ConfigError) as err:
        duckmerge.SqlProcessor().run(step_id="q", config=config, inputs=None, ctx=crm)
    assert "query" in str(err.value)


def test_unknown_config_key_is_config_error_listing_valid_keys(crm):
    with pytest.raises(duckmerge.ConfigError) as err:
        duckmerge.SqlProcessor().run(
            step_id="q", config={"query": "SELECT 1", "sql": "x"}, inputs=None, ctx=crm
        )
    assert "sql" in str(err.value) and "query" in str(err.value)
