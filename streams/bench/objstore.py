"""``meterseal bench store --s3``: the local segment store against Iceberg on S3 (SeaweedFS + PostgreSQL on
this machine), in one run: range, day and meter queries and unseal throughput over the same sealed
readings, each Iceberg partition spec tried, and append throughput with 1, 2 and 3 writer processes.

The servers are the ones in the AWS_* / METERSEAL_CATALOG variables, or, with ``trial=True``, a fresh
PostgreSQL and ``weed mini`` on loopback (``streams.store.servers``) stopped afterwards.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import multiprocessing
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

QUERIES = {"range_42d": dict(start=dt.date(2022, 1, 10), end=dt.date(2022, 2, 20)),
           "week": dict(start=dt.date(2022, 1, 10), end=dt.date(2022, 1, 16)),
           "day": dict(date=dt.date(2022, 1, 15)),
           "meter_42d": dict(start=dt.date(2022, 1, 10), end=dt.date(2022, 2, 20), meter="BENCH-00007")}


def _median_ms(fn: Callable[[], Any], runs: int = 3) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, out


@contextlib.contextmanager
def _servers(trial: bool, base: Path, port: int):
    if not trial:
        yield None
        return
    from streams.store.servers import Servers

    servers = Servers(base / "servers", pg_port=port + 16, s3_port=port)  # weed mini: port..port+15
    saved = dict(os.environ)
    with servers:
        os.environ.update(servers.env())
        try:
            yield servers
        finally:
            os.environ.clear()
            os.environ.update(saved)
    servers.stop_postgres(remove=True)


def _bucket() -> str:
    from streams.store.objects import s3_client

    name = f"bench-{uuid.uuid4().hex[:10]}"
    s3_client().create_bucket(Bucket=name)
    return name


def _writer(location: str, catalog: str, partition: int, batches: list[bytes], out: Any, go: Any) -> None:
    """One writer process: append sealed-row batches (Arrow IPC) to partition ``partition`` through the store
    interface (dedup against the snapshot, commit with retry). Timed from ``go``, after every writer started."""
    from streams.store.iceberg import IcebergStore

    store = IcebergStore(location, catalog, work_dir=tempfile.mkdtemp(prefix="meterseal-w-"))
    store.max_leaf("readings", partition)
    out.put("ready")
    go.wait()
    start, rows = time.perf_counter(), 0
    for blob in batches:
        table = pa.ipc.open_stream(blob).read_all()
        records = table.to_pylist()
        with store.locked("readings", partition):
            fresh = store.fresh("readings", partition, [(r["topic_offset"], r) for r in records])
            store.number("readings", partition, fresh, rows)
            rows += store.write("readings", partition, fresh)
    out.put((rows, time.perf_counter() - start))


def _get(queue: Any, procs: list, timeout: float) -> Any:
    """The next message from the writers; fails at once if a writer died instead of waiting out ``timeout``."""
    import queue as queues

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return queue.get(timeout=1)
        except queues.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a writer process exited with code {dead[0]} (its traceback is above)")
    raise TimeoutError(f"no word from the writer processes in {timeout:g} s")


def _append_throughput(location: str, catalog: str, batches: list[pa.Table], writers: int) -> float:
    """Rows/s of ``writers`` processes appending concurrently (each its own partition, same table)."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    per = [[] for _ in range(writers)]
    for i, batch in enumerate(batches):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as w:
            w.write_table(batch)
        per[i % writers].append(sink.getvalue().to_pybytes())
    go = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(location, catalog, p, per[p], out, go)) for p in range(writers)]
    for p in procs:
        p.start()
    assert [_get(out, procs, 300) for _ in procs] == ["ready"] * writers
    start = time.perf_counter()
    go.set()
    results = [_get(out, procs, 900) for _ in procs]
    wall = time.perf_counter() - start
    for p in procs:
        p.join(30)
    return sum(r for r, _ in results) / max(wall - 0, 1e-9)


def bench_objstore(n: int = 1_000_000, *, trial: bool = False, specs: tuple[str, ...] = ("day+bucket", "month+bucket", "day", "none"),
                   append_rows: int = 60_000, trial_port: int = 15420,
                   progress: Callable[[str], None] = lambda _: None) -> dict:
    from streams.bench.store import build_reading_store
    from streams.keys.keyring import Keyring
    from streams.unseal import SEALED_COLUMNS, open_table
    from streams.store.iceberg import IcebergStore
    from streams.store.query import Query, where
    from streams.store.segments import SegmentStore, connect

    with tempfile.TemporaryDirectory(prefix="meterseal-bench-s3-") as tmp, _servers(trial, Path(tmp), trial_port):
        catalog = os.environ.get("METERSEAL_CATALOG")
        if not catalog:
            raise SystemExit("set METERSEAL_CATALOG and AWS_* (or use --trial)")
        local_dir = Path(tmp) / "local"
        progress(f"sealing {n:,} readings into a local store")
        built = [0]

        def step(k: int) -> None:
            built[0] += k
            if built[0] % 1_000_000 < k:
                progress(f"  {built[0]:,} sealed")
        t0 = time.perf_counter()
        index, _, owner = build_reading_store(local_dir, n, progress=step)
        out_build_s = time.perf_counter() - t0
        local = SegmentStore(local_dir)
        ring = Keyring(local, {owner.public_key.fingerprint: owner.unwrapper()})
        cols = ", ".join(SEALED_COLUMNS)
        con = connect(local_dir)
        out: dict[str, Any] = {"readings": n, "build_s": round(out_build_s), "local": {}, "s3": {}}
        for name, q in QUERIES.items():
            condition, params = where(Query(**q), index)
            ms, hits = _median_ms(lambda: con.sql(f"SELECT {cols} FROM readings WHERE {condition}", params=params).to_arrow_table())
            out["local"][name] = {"ms": round(ms, 1), "hits": hits.num_rows}
        q = QUERIES["range_42d"]
        condition, params = where(Query(**q), index)
        hits = con.sql(f"SELECT {cols} FROM readings WHERE {condition}", params=params).to_arrow_table()
        start = time.perf_counter()
        open_table(hits, ring)
        out["local"]["unseal_per_s"] = round(hits.num_rows / (time.perf_counter() - start))
        progress(f"local: {json.dumps(out['local'])}")  # each phase's figures as soon as they exist
        data = pa.concat_tables([pq.read_table(p) for p in local.segments("readings")])
        bucket = _bucket()
        for k, spec in enumerate(specs):  # a spec named twice is measured twice (interleaved repeats)
            progress(f"loading {n:,} readings into Iceberg, partition spec {spec}")
            store = IcebergStore(f"s3://{bucket}/{k}-{spec.replace('+', '-')}", catalog, work_dir=Path(tmp) / "w",
                                 spec=spec)
            tbl = store._table("readings")
            start = time.perf_counter()
            for offset in range(0, data.num_rows, 250_000):
                tbl.append(data.slice(offset, 250_000).cast(pa.schema([f.with_nullable(True) for f in data.schema])))
            load_s = time.perf_counter() - start
            res: dict[str, Any] = {"bulk_load_rows_per_s": round(n / load_s), "files": len(list(tbl.scan().plan_files()))}
            for name, q in QUERIES.items():
                query = Query(**q)
                condition, params = where(query, index)
                first_day, last_day = (query.date, query.date) if query.date else (query.start, query.end)
                dates = [first_day + dt.timedelta(days=i) for i in range((last_day - first_day).days + 1)]
                days = [index.day(d.isoformat()) for d in dates]
                months = sorted({index.month(d.year, d.month) for d in dates})

                def run():
                    cand = store.pruned("readings", day_toks=days, month_toks=months,
                                        meter_tok=index.meter(query.meter) if query.meter else None)
                    c = duckdb.connect()
                    c.register("candidates", cand)
                    return c.sql(f"SELECT {cols} FROM candidates WHERE {condition}", params=params).to_arrow_table()
                ms, got = _median_ms(run)
                res[name] = {"ms": round(ms, 1), "hits": got.num_rows, "vs_local": round(ms / out["local"][name]["ms"], 2)}
                assert got.num_rows == out["local"][name]["hits"], (spec, name)
            out["s3"][spec if spec not in out["s3"] else f"{spec} (again)"] = res
            progress(f"{spec}: {json.dumps(res)}")
        # unseal over what S3 returned for the 42-day range (same CPU work: AEAD opens)
        first = out["s3"][specs[0]]
        store = IcebergStore(f"s3://{bucket}/0-{specs[0].replace('+', '-')}", catalog, work_dir=Path(tmp) / "w", spec=specs[0])
        query = Query(**QUERIES["range_42d"])
        days = [index.day((query.start + dt.timedelta(days=i)).isoformat()) for i in range(42)]
        hits = store.pruned("readings", day_toks=days)
        start = time.perf_counter()
        open_table(hits.select(list(SEALED_COLUMNS)), ring)
        first["unseal_per_s"] = round(hits.num_rows / (time.perf_counter() - start))
        # append throughput through the store interface: 1, 2, 3 writer processes, batches of 2,000 rows
        rows = data.slice(0, append_rows)
        batches = [rows.slice(i, 2000) for i in range(0, rows.num_rows, 2000)]
        out["append_rows_per_s"] = {}
        from streams.store.iceberg import DEFAULT_SPEC

        out["append_spec"] = DEFAULT_SPEC
        for writers in (1, 2, 3):
            progress(f"appending {append_rows:,} rows with {writers} writer process(es)")
            location = f"s3://{bucket}/append-{writers}"
            IcebergStore(location, catalog, work_dir=Path(tmp) / "w")  # tables made once (default spec), before the race
            out["append_rows_per_s"][writers] = round(_append_throughput(location, catalog, batches, writers))
            progress(f"append with {writers} writer(s): {out['append_rows_per_s'][writers]:,} rows/s")
        base = out["append_rows_per_s"][1]
        out["append_vs_1_writer"] = {w: round(r / base, 2) for w, r in out["append_rows_per_s"].items()}
        out["note"] = ("local: DuckDB over Parquet segments (Bloom filters); s3: Iceberg scan pruned by partition and "
                       "column bounds, read through pyarrow's S3 filesystem, then the same SQL in DuckDB over Arrow; "
                       "median of 3; append: writer processes each on its own sealed-topic partition of one table, "
                       "dedup against the snapshot + optimistic commit with retry, 2,000-row batches")
        return out


def bench_compaction(n: int = 200_000, *, batch: int = 500, meters: int = 1000, trial: bool = False,
                     trial_port: int = 15420, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Query times over an Iceberg table written the way workers write it (many small commits, so several
    small files per day partition), before and after ``streams.store.compact``, in one run."""
    from streams.bench.store import build_reading_store
    from streams.unseal import SEALED_COLUMNS
    from streams.store.compact import compact
    from streams.store.iceberg import DEFAULT_SPEC, IcebergStore
    from streams.store.query import Query, where
    from streams.store.segments import SegmentStore

    with tempfile.TemporaryDirectory(prefix="meterseal-bench-compact-") as tmp, _servers(trial, Path(tmp), trial_port):
        catalog = os.environ.get("METERSEAL_CATALOG")
        if not catalog:
            raise SystemExit("set METERSEAL_CATALOG and AWS_* (or use --trial)")
        progress(f"sealing {n:,} readings ({meters:,} meters)")
        index, _, _ = build_reading_store(Path(tmp) / "local", n, meters=meters)
        data = pa.concat_tables([pq.read_table(p) for p in SegmentStore(Path(tmp) / "local").segments("readings")])
        data = data.cast(pa.schema([f.with_nullable(True) for f in data.schema]))
        store = IcebergStore(f"s3://{_bucket()}/compact", catalog, work_dir=Path(tmp) / "w")
        tbl = store._table("readings")
        progress(f"appending them in {n // batch:,} commits of {batch:,} rows (spec {DEFAULT_SPEC})")
        start = time.perf_counter()
        for offset in range(0, data.num_rows, batch):
            tbl.append(data.slice(offset, batch))
        out: dict[str, Any] = {"readings": n, "commit_rows": batch, "commits": -(-n // batch), "spec": DEFAULT_SPEC,
                               "append_rows_per_s": round(n / (time.perf_counter() - start))}
        cols = ", ".join(SEALED_COLUMNS)

        def queries() -> dict:
            res = {}
            for name, q in QUERIES.items():
                query = Query(**q)
                condition, params = where(query, index)
                first_day, last_day = (query.date, query.date) if query.date else (query.start, query.end)
                dates = [first_day + dt.timedelta(days=i) for i in range((last_day - first_day).days + 1)]

                def run():
                    cand = store.pruned("readings", day_toks=[index.day(d.isoformat()) for d in dates],
                                        month_toks=sorted({index.month(d.year, d.month) for d in dates}),
                                        meter_tok=index.meter(query.meter) if query.meter else None)
                    c = duckdb.connect()
                    c.register("candidates", cand)
                    return c.sql(f"SELECT {cols} FROM candidates WHERE {condition}", params=params).to_arrow_table()
                ms, got = _median_ms(run)
                res[name] = {"ms": round(ms, 1), "hits": got.num_rows}
            return res

        progress("queries before compaction")
        out["before"] = {"files": len(list(store._table("readings").scan().plan_files())), **queries()}
        progress("compacting")
        start = time.perf_counter()
        out["compact"] = compact(store, "readings", min_files=2)
        out["compact"]["seconds"] = round(time.perf_counter() - start, 1)
        progress("queries after compaction")
        out["after"] = {"files": out["compact"]["files_after"], **queries()}
        for name in QUERIES:
            assert out["after"][name]["hits"] == out["before"][name]["hits"], name
            out["after"][name]["vs_before"] = round(out["after"][name]["ms"] / out["before"][name]["ms"], 2)
        out["note"] = ("one Iceberg table (default spec) written in small commits like the workers' seal batches; "
                       "queries as in `bench store --s3` (scan pruned by partition and bounds, then DuckDB), median of "
                       "3, before and after `meterseal store compact` (min 2 files per partition) in the same run")
        return out


def bench_expiry(commits: int = 600, *, keep_s: float = 20.0, every: int = 100, rows: int = 10, trial: bool = False,
                 trial_port: int = 15420, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Commit time as snapshots pile up, with and without ``streams.store.expire``, in one run: two tables on the
    same servers, small commits alternating between them (the same load for both); one expires snapshots older
    than ``keep_s`` every ``every`` commits."""
    from streams.store.expire import expire
    from streams.store.iceberg import IcebergStore

    def batch(first: int) -> list[dict[str, Any]]:
        return [{"format": 1, "dlq_id": f"b{i:09d}", "source_topic": "readings.raw", "source_partition": 0,
                 "source_offset": i, "reason": "bench", "rule": "bench", "key_id": "k", "envelope": b"x",
                 "received_at_ms": 0, "batch_index": None, "topic_partition": 0, "topic_offset": i}
                for i in range(first, first + rows)]

    with tempfile.TemporaryDirectory(prefix="meterseal-bench-expire-") as tmp, _servers(trial, Path(tmp), trial_port):
        catalog = os.environ.get("METERSEAL_CATALOG")
        if not catalog:
            raise SystemExit("set METERSEAL_CATALOG and AWS_* (or use --trial)")
        bucket = _bucket()
        expiring = IcebergStore(f"s3://{bucket}/expiring", catalog, work_dir=Path(tmp) / "a")
        plain = IcebergStore(f"s3://{bucket}/plain", catalog, work_dir=Path(tmp) / "b")
        windows, spent, expiries = [], {"expiring": 0.0, "plain": 0.0}, []
        for k in range(commits):
            for name, store in (("expiring", expiring), ("plain", plain)):
                start = time.perf_counter()
                store.write("dlq", 0, batch(k * rows))
                spent[name] += time.perf_counter() - start
            if k % every == every - 1:
                start = time.perf_counter()
                report = expire(expiring, "dlq", older_than_s=keep_s)
                expiries.append({"after_commit": k + 1, "expired": report["expired"], "kept": report["kept"],
                                 "files_deleted": report["files_deleted"], "ms": round((time.perf_counter() - start) * 1000)})
                windows.append({"commits": f"{k + 1 - every}-{k}",
                                "ms_with_expiry": round(spent["expiring"] * 1000 / every),
                                "ms_without": round(spent["plain"] * 1000 / every),
                                "ratio": round(spent["plain"] / spent["expiring"], 2)})
                progress(f"commits {windows[-1]['commits']}: {windows[-1]['ms_with_expiry']} ms a commit with expiry, "
                         f"{windows[-1]['ms_without']} ms without")
                spent = {"expiring": 0.0, "plain": 0.0}
        snapshots = {name: len(store._table("dlq").refresh().metadata.snapshots)
                     for name, store in (("expiring", expiring), ("plain", plain))}
        return {"commits": commits, "rows_per_commit": rows, "keep_s": keep_s, "windows": windows, "expiries": expiries,
                "snapshots_at_end": snapshots,
                "note": "mean commit time per window of commits, two tables written alternately in one process "
                        "(same servers, same load); ratio = without / with expiry"}
