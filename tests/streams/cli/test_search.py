"""``meterseal sql`` and ``meterseal search`` output: a table shows what the statement asked for."""

import json

from click.testing import CliRunner

from streams.cli.main import main
from streams.keys.keystore import Keystore
from tests.streams.keys.test_regions import _seal_some


def _store(tmp_path):
    env = {"METERSEAL_DATA_DIR": str(tmp_path), "METERSEAL_PASSPHRASE": "pw"}
    assert CliRunner().invoke(main, ["keys", "init"], env=env).exit_code == 0
    keystore = Keystore.load(tmp_path)
    _seal_some(tmp_path, keystore, keystore.unlock("pw"))
    return env


def _invoke(env, *args):
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_sql_table_shows_every_column_in_the_statements_order(tmp_path):
    env = _store(tmp_path)
    statement = "SELECT count(*) AS n, region, min(record_id) AS first_id FROM readings GROUP BY region ORDER BY region"
    rows = [json.loads(line) for line in _invoke(env, "sql", statement, "--format", "json").stdout.splitlines()]
    assert rows and all(r["n"] > 0 for r in rows)
    table = _invoke(env, "sql", statement, "--format", "table").stdout
    header = next(line for line in table.splitlines() if "region" in line)
    assert header.index(" n ") < header.index("region") < header.index("first_id")
    for r in rows:  # the aggregate's numbers are in the table, not only the region names
        line = next(line for line in table.splitlines() if f" {r['region']} " in line)
        assert f" {r['n']} " in line
    csv_header = _invoke(env, "sql", statement, "--format", "csv").stdout.splitlines()[0]
    assert csv_header == "n,region,first_id"


def test_search_table_keeps_its_narrow_identifying_columns(tmp_path):
    env = _store(tmp_path)
    hits = [json.loads(line) for line in _invoke(env, "search", "--kind", "readings", "--format", "json").stdout.splitlines()]
    assert hits and "meter_tok" not in hits[0]
    table = _invoke(env, "search", "--kind", "readings", "--format", "table").stdout
    header = next(line for line in table.splitlines() if "record_id" in line)
    assert "meter_id" in header and "kwh" in header
    assert "key_id" not in header and "leaf_index" not in header  # present in the hits, but not an identifying column
