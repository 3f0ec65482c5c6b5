"""Search over a store of the seed CSV returns exactly what a plain filter of the CSV returns."""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from streams.exceptions import KeystoreError, MeterSealError
from streams.keys.keystore import Keystore
from streams.pipeline import Pipeline
from streams.store.query import Query, Reader
from streams.seal import Source
from streams.settings import Settings
from streams.ingest.sources import read_bills_csv
from streams.store.segments import SegmentStore


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    from tests.conftest import SEED_CSV

    data = tmp_path_factory.mktemp("seeded")
    keystore = Keystore.init(data, "pw")
    keys = keystore.unlock("pw")
    settings = Settings.from_env({}, data_dir=data, dek_max_records=250)
    pipeline = Pipeline(settings, keys.index_key, keystore.owner_public, SegmentStore(settings.store_dir),
                        keystore.ledger_signer("pw"))
    rows = list(read_bills_csv(SEED_CSV))
    by_partition: dict[int, list] = {}
    for i, row in enumerate(rows):
        sealed = pipeline.seal_bill(json.dumps(row).encode(), Source("bills.raw", i % 4, i))
        by_partition.setdefault(i % 4, []).append((i % 4, i, sealed.encode()))
    for msgs in by_partition.values():
        pipeline.store_batch("bills.sealed", msgs)
    pipeline.checkpoint_due(force=True)
    return data, keys, rows


def bill_nos(reader, hits):
    return sorted(reader.open(h)["Bill No."] for h in hits)


def test_every_distinct_date(seeded):
    data, keys, rows = seeded
    reader = Reader(data / "store", keys)
    for day in sorted({r["Date"] for r in rows}):
        want = sorted(r["Bill No."] for r in rows if r["Date"] == day)
        hits = reader.search(Query(date=dt.date.fromisoformat(day)), kinds=["bills"])
        assert bill_nos(reader, hits) == want, day


def test_fifty_random_date_ranges(seeded):
    data, keys, rows = seeded
    reader = Reader(data / "store", keys)
    rng = random.Random(4)
    lo, hi = dt.date(2019, 11, 1), dt.date(2025, 4, 1)
    for _ in range(50):
        a = lo + dt.timedelta(days=rng.randint(0, (hi - lo).days))
        b = a + dt.timedelta(days=rng.choice([0, 1, 7, 30, 45, 200, 400, 900]))
        want = sorted(r["Bill No."] for r in rows if a.isoformat() <= r["Date"] <= b.isoformat())
        assert bill_nos(reader, reader.search(Query(start=a, end=b), kinds=["bills"])) == want, (a, b)


def test_multi_field_searches(seeded):
    data, keys, rows = seeded
    reader = Reader(data / "store", keys)
    for r in rows[:25]:
        hits = reader.search(Query(meter=r["Meter No."]), kinds=["bills"])
        assert bill_nos(reader, hits) == [r["Bill No."]]
        assert bill_nos(reader, reader.search(Query(account=r["Account ID"], date=dt.date.fromisoformat(r["Date"])),
                                              kinds=["bills"])) == [r["Bill No."]]
        assert reader.search(Query(meter=r["Meter No."], date=dt.date(1999, 1, 1)), kinds=["bills"]) == []


def test_opened_hits_equal_the_csv_rows(seeded):
    data, keys, rows = seeded
    reader = Reader(data / "store", keys)
    hits = reader.search(Query(date=dt.date(2023, 3, 4)), kinds=["bills"])
    opened = [reader.open(h) for h in hits]
    assert reader.open_hits(hits) == opened  # the bulk path, same records in the same order
    want = [r for r in rows if r["Date"] == "2023-03-04"]
    as_text = lambda d: {k: str(v) for k, v in d.items()}
    assert sorted((as_text(o) for o in opened), key=str) == sorted(want, key=str)


def test_without_the_owner_key_hits_are_listed_sealed_and_unseal_fails_clearly(seeded):
    data, keys, rows = seeded
    reader = Reader(data / "store", index_key=keys.index_key)
    hits = reader.search(Query(date=dt.date(2023, 3, 4)), kinds=["bills"])
    assert hits and all("envelope" in h for h in hits) and not reader.can_open
    with pytest.raises(KeystoreError, match="private key"):
        reader.open(hits[0])
    con = reader.connect()
    assert con.execute("SELECT count(*) FROM bills WHERE day_tok = day_token('2023-03-04')").fetchone()[0] == len(hits)
    with pytest.raises(Exception, match="private key"):
        con.execute("SELECT plain FROM bills_open LIMIT 1").fetchall()


def test_sql_functions(seeded):
    data, keys, rows = seeded
    con = Reader(data / "store", keys).connect()
    per_month = dict(con.execute(
        "SELECT month_tok, count(*) FROM bills WHERE year_tok = year_token('2024') GROUP BY 1").fetchall())
    want = {}
    for r in rows:
        if r["Date"].startswith("2024"):
            want[r["Date"][:7]] = want.get(r["Date"][:7], 0) + 1
    assert sorted(per_month.values()) == sorted(want.values())
    total = con.execute("SELECT sum((plain->>'Billed Unit')::BIGINT) FROM bills_open "
                        "WHERE category = 'Industrial'").fetchone()[0]
    assert total == sum(int(r["Billed Unit"]) for r in rows if r["Category"] == "Industrial")


def test_open_table_equals_open_many_and_fails_closed(seeded):
    import pyarrow as pa

    from streams.exceptions import InvalidEnvelope
    from streams.keys.keyring import Keyring
    from streams.unseal import SEALED_COLUMNS, open_many, open_table

    data, keys, rows = seeded
    reader = Reader(data / "store", keys)
    table = reader.connect().sql(f"SELECT {', '.join(SEALED_COLUMNS)} FROM bills ORDER BY record_id").to_arrow_table()
    ring = Keyring(reader.store, keys.unwrappers(), index_key=keys.index_key)
    opened = open_table(table, ring, reader.index)
    assert len(opened) == len(rows) == table.num_rows
    assert opened == open_many(table.to_pylist(), ring, reader.index)
    assert sorted(o["bill_no"] for o in opened) == sorted(r["Bill No."] for r in rows)

    def changed(column: str, value) -> pa.Table:
        i = table.schema.get_field_index(column)
        values = table.column(column).to_pylist()
        values[7] = value
        return table.set_column(i, column, pa.array(values, table.schema.field(column).type))

    for column, value in (("region", "elsewhere"), ("day_tok", table.column("day_tok")[8].as_py()),
                          ("meter_tok", None), ("schema_version", 9)):
        with pytest.raises(InvalidEnvelope):  # every clear column is bound into the AEAD: a changed one never opens
            open_table(changed(column, value), ring, reader.index)
    with pytest.raises(InvalidEnvelope):  # no data key for this owner key
        open_table(table, lambda key_id: (_ for _ in ()).throw(KeyError(key_id)))


def test_query_arguments_are_checked():
    with pytest.raises(MeterSealError):
        Query(date=dt.date(2024, 1, 1), start=dt.date(2024, 1, 1), end=dt.date(2024, 1, 2))
    with pytest.raises(MeterSealError):
        Query(start=dt.date(2024, 1, 1))
    with pytest.raises(KeystoreError):
        Reader("nowhere")


def test_search_cli_prints_every_matching_bill_opened(seeded):
    from click.testing import CliRunner

    from streams.cli.main import main

    data, keys, rows = seeded
    env = {"METERSEAL_DATA_DIR": str(data), "METERSEAL_PASSPHRASE": "pw"}
    result = CliRunner().invoke(main, ["search", "--date", "2023-03-04", "--format", "json"], env=env)
    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    want = [r for r in rows if r["Date"] == "2023-03-04"]
    assert sorted(p["Bill No."] for p in printed) == sorted(r["Bill No."] for r in want)
    for p in printed:
        row = next(r for r in want if r["Bill No."] == p["Bill No."])
        assert {k: str(v) for k, v in p.items() if k != "record_id"} == row and len(p["record_id"]) == 32
    sealed = CliRunner().invoke(main, ["search", "--date", "2023-03-04", "--sealed", "--format", "json"], env=env)
    assert all("Name" not in line and want[0]["Name"] not in line for line in sealed.stdout.splitlines())
    sql = CliRunner().invoke(main, ["sql", "SELECT count(*) AS n FROM bills WHERE day_tok = day_token('2023-03-04')",
                                    "--format", "json"], env=env)
    assert json.loads(sql.stdout.splitlines()[0]) == {"n": len(want)}
    bad = CliRunner().invoke(main, ["search", "--date", "2023-13-01"], env=env)
    assert bad.exit_code != 0 and "YYYY-MM-DD" in bad.output


def test_search_verify_checks_ledger_inclusion(seeded, tmp_path):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from streams.cli.main import main
    from streams.store.segments import arrow_schema

    data, keys, rows = seeded
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    env = {"METERSEAL_DATA_DIR": str(copy), "METERSEAL_PASSPHRASE": "pw"}
    args = ["search", "--date", "2023-03-04", "--verify", "--sealed", "--format", "json"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0
    assert {json.loads(l)["ledger"] for l in result.stdout.splitlines() if l.startswith("{")} == {"verified"}
    hit = json.loads(result.stdout.splitlines()[0])
    store = SegmentStore(copy / "store")
    for seg in store.segments("bills"):
        table = pq.read_table(seg).to_pylist()
        for r in table:
            if r["record_id"] == hit["record_id"]:
                r["region"] = "north"  # relabel the row
                pq.write_table(pa.Table.from_pylist(table, schema=arrow_schema("bills")), seg)
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 1
    assert [json.loads(l)["ledger"] for l in result.stdout.splitlines() if hit["record_id"] in l] == ["TAMPERED"]
