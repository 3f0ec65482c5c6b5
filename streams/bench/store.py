"""``meterseal bench store``: range and meter queries and unseal throughput over a built store of sealed readings.

The unseal rate is reported beside the prototype's per-record RSA + AES-CFB open, measured in the same run.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from streams.crypto import _primitives
from streams.crypto.envelope import DekRing
from streams.crypto.tokens import BlindIndex

from streams.bench.micro import rate


def build_reading_store(store_dir, n: int, *, meters: int | None = None, chunk: int = 250_000,
                        progress: Callable[[int], None] | None = None, dek_records: int = 1_000_000):
    """Write ``n`` sealed readings straight into a store (no broker): the same sealing as the worker,
    tokens cached per meter and per day, a new DEK every ``dek_records`` readings. Returns (index, the DEKs by
    key id, owner pair)."""
    import datetime as dt

    import pyarrow as pa

    import schemas
    from streams.keys.owner import OwnerKeyPair
    from streams.seal import record_aad
    from streams.store.segments import SegmentStore, arrow_schema, write_segment

    meters = meters or max(1, min(5000, n // 400))  # every size spans >= 100 days of 6-hourly readings
    owner = OwnerKeyPair.generate()
    store = SegmentStore(store_dir)
    made = {}

    def keep(dek):
        made[dek.key_id] = dek
        store.put_dek({"key_id": dek.key_hex, "scheme": owner.scheme, "owner_fingerprint": owner.public_key.fingerprint,
                       "wrapped": owner.public_key.wrap(dek), "created_at_ms": 0, "worker": "bench"})

    ring = DekRing(max_records=dek_records, max_age_s=1e9, on_new_key=keep)
    index = BlindIndex(os.urandom(32))
    reading = schemas.get("reading")
    start = dt.datetime(2022, 1, 1, tzinfo=dt.timezone.utc)
    meter_tok = {}
    day_tok = {}
    schema = arrow_schema("readings")
    directory = store.partition_dir("readings", 0)
    directory.mkdir(parents=True, exist_ok=True)
    for first in range(0, n, chunk):
        rows = []
        for i in range(first, min(n, first + chunk)):
            m = i % meters
            ts = start + dt.timedelta(hours=6 * (i // meters))
            meter_id, day = f"BENCH-{m:05d}", ts.date()
            if m not in meter_tok:
                meter_tok[m] = index.meter(meter_id)
            if day not in day_tok:
                day_tok[day] = index.date_tokens(day)
            dates = day_tok[day]
            ts_text = ts.isoformat()
            rec = {"format": 1, "record_id": index.record_id("reading", meter_id, ts_text), "kind": "reading",
                   "schema_version": reading.version, "key_id": "", "region": "north", "category": "Domestic",
                   "meter_tok": meter_tok[m], "account_tok": None, "day_tok": dates.day, "month_tok": dates.month,
                   "year_tok": dates.year, "sealed_at_ms": 0, "topic_partition": 0, "topic_offset": i,
                   "leaf_index": i, "meter_seq": i // meters}
            body = schemas.encode_body(reading, {"meter_id": meter_id, "ts": ts_text, "kwh": 0.25 + (i % 7) / 10,
                                                 "register_kwh": float(i // meters), "region": "north",
                                                 "category": "Domestic", "account_id": None, "label": None})
            rec["envelope"] = ring.seal(body, aad=record_aad(rec))
            rec["key_id"] = rec["envelope"][1:17].hex()
            rows.append(rec)
        name = f"{first:013d}-{first:020d}-{first + len(rows) - 1:020d}-{os.urandom(4).hex()}.parquet"
        write_segment(pa.Table.from_pylist(rows, schema=schema), directory / name)
        if progress:
            progress(len(rows))
    return index, made, owner


def bench_store(n: int = 1_000_000, store_dir=None, progress: Callable[[int], None] | None = None) -> dict:
    """Date-range and exact-date query latency over ``n`` sealed readings, unseal throughput, and the
    prototype's per-record RSA-OAEP unwrap + AES-CFB decrypt of the same records, in one run."""
    import datetime as dt
    import statistics
    import tempfile

    from streams.keys.keyring import Keyring
    from streams.store.query import Query, register_functions, where
    from streams.unseal import SEALED_COLUMNS, open_table
    from streams.store.segments import SegmentStore, connect

    if store_dir is None:

        with tempfile.TemporaryDirectory(prefix="meterseal-bench-") as tmp:
            return bench_store(n, tmp, progress)
    t0 = time.perf_counter()
    index, made, owner = build_reading_store(store_dir, n, progress=progress)
    build_s = time.perf_counter() - t0
    con = connect(store_dir)

    def timed(sql: str, params: list):
        runs, result = [], None
        for _ in range(5):
            start = time.perf_counter()
            result = con.sql(sql, params=params).to_arrow_table()
            runs.append(time.perf_counter() - start)
        return statistics.median(runs) * 1000, result

    cols = ", ".join(SEALED_COLUMNS)

    def search(query: Query):  # the SQL `meterseal search` runs, tokens made here from the index key
        condition, params = where(query, index)
        return timed(f"SELECT {cols} FROM readings WHERE {condition}", params)

    first, last = dt.date(2022, 1, 10), dt.date(2022, 2, 20)  # 42 days
    range_ms, hits = search(Query(start=first, end=last))
    week_ms, week_hits = search(Query(start=first, end=first + dt.timedelta(days=6)))
    day_ms, day_hits = search(Query(date=dt.date(2022, 1, 15)))
    meter_ms, meter_hits = search(Query(start=first, end=last, meter="BENCH-00007"))
    ring = Keyring(SegmentStore(store_dir), {owner.public_key.fingerprint: owner.unwrapper()})
    start = time.perf_counter()
    opened = open_table(hits, ring)  # from the Arrow table the query returned: conversion included
    unseal_s = time.perf_counter() - start
    assert len(opened) == hits.num_rows
    # the same hits through SQL: ``unseal()`` (the Arrow UDF users call) on the range query, which also
    # rechecks each record's id and meter token against the index and returns JSON text
    register_functions(con, index, ring)
    condition, params = where(Query(start=first, end=last), index)  # the 42-day range again
    start = time.perf_counter()
    sql_rows = con.sql(f"SELECT unseal({cols}) FROM readings WHERE {condition}", params=params).fetchall()
    sql_unseal_s = time.perf_counter() - start
    assert len(sql_rows) == hits.num_rows
    sample = opened[:1000]
    private, public = _primitives.rsa_keypair(2048)
    import schemas

    boxes = [_primitives.prototype_seal(public, schemas.encode_body(schemas.get("reading"), p)) for p in sample]
    proto_rate, _ = rate(len(boxes), lambda: [_primitives.prototype_open(private, *b) for b in boxes])
    unseal_rate = hits.num_rows / unseal_s
    return {"readings": n, "build_s": round(build_s, 1), "range_days": 42, "range_hits": hits.num_rows,
            "range_query_ms": round(range_ms, 1), "week_hits": week_hits.num_rows, "week_query_ms": round(week_ms, 1),
            "day_hits": day_hits.num_rows, "day_query_ms": round(day_ms, 1),
            "meter_range_hits": meter_hits.num_rows, "meter_range_query_ms": round(meter_ms, 1),
            "unseal_per_s": round(unseal_rate), "sql_unseal_per_s": round(len(sql_rows) / sql_unseal_s),
            "prototype_open_per_s": round(proto_rate),
            "unseal_vs_prototype": round(unseal_rate / proto_rate, 1),
            "note": "queries: median of 5 on one DuckDB connection over Parquet segments, every column of every hit "
                    "returned as an Arrow table; unseal = open_table on the range query's Arrow table: "
                    "associated data joined by Arrow, AEAD open + Avro decode of every hit to a dict (no index "
                    "recheck); sql_unseal = SELECT unseal(...) over the range query: query + AEAD open + decode + "
                    "record id/meter token recheck + JSON text; prototype = RSA-2048-OAEP unwrap + AES-CFB per record"}
