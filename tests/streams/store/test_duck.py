"""The shared in-process DuckDB database: each cursor's TEMP views are its own, from any thread."""

from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.parquet as pq

from streams.store import duck


def test_temp_views_of_two_open_cursors_do_not_mix_and_go_with_their_cursor(tmp_path):
    for name, rows in (("a", [1, 2]), ("b", [3, 4, 5])):
        (tmp_path / name).mkdir()
        pq.write_table(pa.table({"x": rows}), tmp_path / name / "0.parquet")
    first, second = duck.cursor(), duck.cursor()
    for con, name in ((first, "a"), (second, "b")):
        con.execute(f"CREATE TEMP VIEW t AS SELECT * FROM read_parquet('{tmp_path / name}/*.parquet')")
    assert first.execute("SELECT sum(x) FROM t").fetchone() == (3,)
    assert second.execute("SELECT sum(x) FROM t").fetchone() == (12,)
    first.close(), second.close()
    later = duck.cursor()
    assert later.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 't'").fetchone() == (0,)
    later.close()


def test_cursors_from_many_threads(tmp_path):
    pq.write_table(pa.table({"x": list(range(100))}), tmp_path / "0.parquet")
    sums, errors = [], []

    def query() -> None:
        try:
            for _ in range(20):
                con = duck.cursor()
                con.execute(f"CREATE TEMP VIEW t AS SELECT * FROM read_parquet('{tmp_path}/*.parquet')")
                sums.append(con.execute("SELECT sum(x) FROM t").fetchone()[0])
                con.close()
        except Exception as exc:  # noqa: BLE001 - collected and shown by the assertion
            errors.append(exc)

    threads = [threading.Thread(target=query) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sums == [4950] * 80
