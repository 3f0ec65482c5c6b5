"""``meterseal bench``: speed measured beside a baseline in the same run, reported as ratios.

The machines this runs on are shared and noisy, so absolute numbers move between runs; the ratio to a
baseline measured seconds earlier on the same machine is the figure to compare.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from typing import Callable

from streams import capabilities
from streams.crypto import _primitives
from streams.crypto.envelope import DekRing
from streams.seal import Sealed, Sealer, Source
from streams.sealed_batch import sealed_records
from streams.crypto.tokens import BlindIndex
from streams.validate import Policy, utc_ts

from streams.bench.micro import rate


@contextlib.contextmanager
def _bench_worker(workers: int = 1, *, before: Callable | None = None, **env: str):
    """A temporary data dir, a fresh embedded broker and ``workers`` ready worker processes in one group:
    yields (data dir, broker). ``before(broker)`` runs once the topics exist, before any worker starts."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from streams.ingest.broker import EmbeddedBroker, ensure_topics
    from streams.keys.keystore import Keystore

    with tempfile.TemporaryDirectory(prefix="meterseal-bench-") as tmp:
        data = Path(tmp)
        Keystore.init(data, "bench")
        with EmbeddedBroker() as broker:
            ensure_topics(broker.bootstrap, 4)
            if before is not None:
                before(broker)
            environ = {**os.environ, "METERSEAL_DATA_DIR": str(data), "METERSEAL_BROKER": broker.url,
                       "METERSEAL_PASSPHRASE": "bench", **env}
            procs, logs = [], [data / f"worker{i}.log" for i in range(workers)]
            try:
                for path in logs:
                    with open(path, "wb") as log:
                        procs.append(subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=environ,
                                                      stdout=log, stderr=subprocess.STDOUT))
                    # one at a time: each later worker's "ready" comes after the rebalance that includes it
                    deadline = time.monotonic() + 90
                    while "worker ready" not in path.read_text() and time.monotonic() < deadline:
                        time.sleep(0.2)
                if workers > 1:
                    time.sleep(2)  # let the group settle: the first worker's second assignment
                yield data, broker
            finally:
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    proc.wait(30)
                if os.environ.get("METERSEAL_BENCH_LOG"):  # keep the workers' logs for a look afterwards
                    Path(os.environ["METERSEAL_BENCH_LOG"]).write_bytes(b"".join(p.read_bytes() for p in logs))


def _uci_messages(n: int, meters: int = 20) -> list[tuple[bytes, bytes]]:
    from streams.ingest.produce import encode_reading
    from streams.ingest.sources import uci_readings

    return [(r["meter_id"].encode(), encode_reading(r)) for r in uci_readings(meters=meters, limit=n)]


def bench_pipeline(n: int = 20_000, *, workers: int = 1, meters: int = 20, timeout: float = 600.0,
                   messages: list[tuple[bytes, bytes]] | None = None, batch: int = 0, preproduced: bool = False,
                   env: dict[str, str] | None = None) -> dict:
    """End to end on the embedded broker with ``workers`` worker processes: n UCI readings produced as fast as
    possible, timed from the first message produced until the last sealed reading is in the store (the newest
    segment's write time; ``end_to_end_polled_s`` is the older figure, the first 0.5 s poll that counted them
    all). ``batch``: head-end batch messages of that many readings (JSON arrays keyed by collector id) instead
    of one a message. ``preproduced``: every message is on the broker before the worker starts, and the time
    runs from the worker's first sealed reading (how the bare Faust agent is timed by default)."""
    if batch:
        from streams.ingest.produce import batch_readings
        from streams.ingest.sources import uci_readings

        messages = list(batch_readings(uci_readings(meters=meters, limit=n), batch))
    messages = messages or _uci_messages(n, meters)
    if preproduced:
        with _bench_worker(workers, before=lambda broker: _produce(broker, messages), **(env or {})) as (data, broker):
            produced_s = 0.0  # (before the worker started)
            _, stored, last = _wait_stored(data, time.time(), n, timeout)
            first = _first_sealed_at(data, workers)
        elapsed = polled = last - first  # (no poll figure: the start is read from the log)
    else:
        with _bench_worker(workers, **(env or {})) as (data, broker):
            start = time.time()
            produced_s = _produce(broker, messages)
            polled, stored, last = _wait_stored(data, start, n, timeout)
        elapsed = last - start
    key = f"readings_per_s{'_batched' if batch else ''}_{workers}_worker{'s' if workers > 1 else ''}"
    return {"readings": n, "workers": workers, "readings_per_message": batch or 1, "messages": len(messages),
            "stored": stored, "produce_s": round(produced_s, 2), "end_to_end_s": round(elapsed, 2),
            "end_to_end_polled_s": round(polled, 2), "preproduced": preproduced,
            key: round(stored / elapsed), key + "_polled": round(stored / polled),
            "note": f"UCI readings as JSON{f' arrays of {batch} by collector' if batch else ''}, {workers} worker "
                    "process(es) in one group, embedded Tansu broker; "
                    + ("all produced before the worker starts, from its first sealed reading"
                       if preproduced else "from the first message produced (while producing)")
                    + " to the last reading stored (sealed, tokenized, ledgered; the newest segment's write time)"}


def _produce(broker, messages: list[tuple[bytes, bytes]]) -> float:
    """Produce ``messages`` to readings.raw as fast as possible; returns the seconds it took."""
    from streams.ingest.broker import Producer

    producer = Producer(broker.bootstrap)
    start = time.perf_counter()
    for key, value in messages:
        producer.send("readings.raw", value, key)
    producer.close()
    return time.perf_counter() - start


class _RowCounter:
    """Readings in the store, counted from the Parquet footers of segments not seen before (cheap enough to
    poll while the workers run: a DuckDB count re-reads every footer each time), and the newest one's mtime."""

    def __init__(self, store) -> None:
        self.root, self.rows, self.newest, self._seen = store / "readings", 0, 0.0, set()

    def poll(self) -> int:
        import pyarrow.parquet as pq

        for path in self.root.glob("p*/*.parquet") if self.root.exists() else ():
            if path not in self._seen:
                self._seen.add(path)
                self.rows += pq.read_metadata(path).num_rows
                self.newest = max(self.newest, path.stat().st_mtime)
        return self.rows


def _wait_stored(data, start: float, expected: int, timeout: float,
                 progress: Callable[[int], None] | None = None) -> tuple[float, int, float]:
    """Wait until the store holds ``expected`` readings (polled every 0.5 s): returns (seconds from ``start``, a
    wall time, to the poll that saw them all; readings stored; wall time the newest segment was written)."""
    counter, stored = _RowCounter(data / "store"), 0
    while stored < expected and time.time() - start < timeout:
        time.sleep(0.5)
        now = counter.poll()
        if progress:
            progress(now - stored)
        stored = now
    return time.time() - start, stored, counter.newest


def _first_sealed_at(data, workers: int) -> float:
    """The wall time of the first sealed reading, from the workers' logs (``agents.app`` logs it)."""
    found = [float(m[1]) for i in range(workers)
             for m in re.finditer(r"first record sealed .*\(at ([\d.]+)\)", (data / f"worker{i}.log").read_text())]
    if not found:
        raise RuntimeError("no worker logged its first sealed record")
    return min(found)


def _drive(data, broker, messages: list[tuple[bytes, bytes]], timeout: float,
           progress: Callable[[int], None] | None = None, expected: int | None = None) -> tuple[float, float, int]:
    """Produce ``messages`` to readings.raw as fast as possible and wait until the store holds them all:
    returns (seconds producing, seconds until all stored, readings stored)."""
    start = time.time()
    produced_s = _produce(broker, messages)
    _, stored, last = _wait_stored(data, start, len(messages) if expected is None else expected, timeout, progress)
    return produced_s, last - start, stored


def bench_replay(*, workers: int = 2, limit: int | None = None, timeout: float = 7200.0,
                 progress: Callable[[int], None] | None = None) -> dict:
    """The whole UCI data set (2,075,259 readings, 20 meters) through ``workers`` workers on the embedded broker;
    then the store's size and a full ``ledger verify`` (every record re-hashed, every checkpoint checked)."""
    from streams.keys.keystore import Keystore
    from streams.store.segments import connect
    from streams.store.audit import audit_store

    messages = _uci_messages(limit or 10**9)
    with _bench_worker(workers) as (data, broker):
        produced_s, elapsed, stored = _drive(data, broker, messages, timeout, progress)
        time.sleep(3)  # (measured with the workers idle: the data dir is gone after the with block)
        store_bytes = sum(p.stat().st_size for p in (data / "store").rglob("*") if p.is_file())
        parquet_bytes = sum(p.stat().st_size for p in (data / "store").rglob("*.parquet"))
        segments = len(list((data / "store" / "readings").rglob("*.parquet")))
        con = connect(data / "store")
        rows, distinct = con.execute("SELECT count(*), count(DISTINCT record_id) FROM readings").fetchone()
        con.close()
        start = time.perf_counter()
        results = audit_store(data / "store", Keystore.load(data).ledger_verifier, registry=capabilities.registry())
        verify_s = time.perf_counter() - start
        problems = sum(len(f) for _, f in results)
        leaves = sum(s.leaves for s, _ in results)
    return {"readings": len(messages), "workers": workers, "stored": stored, "rows": rows, "distinct_records": distinct,
            "produce_s": round(produced_s, 1), "wall_s": round(elapsed, 1), "readings_per_s": round(stored / elapsed),
            "store_mb": round(store_bytes / 2**20, 1), "parquet_mb": round(parquet_bytes / 2**20, 1),
            "segments": segments, "ledger_leaves": leaves, "ledger_problems": problems,
            "ledger_verify_s": round(verify_s, 1),
            "note": "UCI household power as 20 meters, JSON, produced up front; wall = first produced to last stored"}


def bench_bare_faust(n: int = 20_000, *, forward: bool = False, messages: list[tuple[bytes, bytes]] | None = None,
                     concurrent: bool = False) -> dict:
    """The ceiling: a bare Faust agent (``agents.bare``) reading the same messages on a fresh embedded broker,
    produced before it starts and timed from its first batch to its last (the default), or (``concurrent``)
    produced as fast as possible once it is ready and timed from the first message produced to its last batch:
    the conditions ``bench_pipeline`` times the worker under."""
    import subprocess
    import sys
    import tempfile

    from streams.ingest.broker import EmbeddedBroker, ensure_topics

    messages = messages or _uci_messages(n)
    with EmbeddedBroker() as broker, tempfile.TemporaryFile("w+") as out:
        ensure_topics(broker.bootstrap, 4, ["readings.raw", "bench.forward"])
        if not concurrent:
            _produce(broker, messages)
        cmd = [sys.executable, "-m", "agents.bare", "--broker", broker.url, "--count", str(len(messages))]
        proc = subprocess.Popen(cmd + (["--forward"] if forward else []), stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            start = None
            if concurrent:
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline and proc.poll() is None:
                    out.seek(0)
                    if "bare ready" in out.read():
                        break
                    time.sleep(0.2)
                start = time.time()
                _produce(broker, messages)
            proc.wait(600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        text = out.read()
    found = re.search(r"bare: (\d+) messages in ([\d.]+) s, first at ([\d.]+), last at ([\d.]+)", text)
    if found is None:
        raise RuntimeError(f"the bare Faust agent did not finish: {text[-4000:]}")
    count = int(found[1])
    seconds = float(found[4]) - start if concurrent else float(found[2])
    return {"messages": count, "seconds": round(seconds, 2), "per_s": round(count / seconds), "concurrent": concurrent}


def bench_seed_style(messages: list[tuple[bytes, bytes]], baseline_n: int = 1_000) -> dict:
    """The earlier prototype's per-record approach on the same readings (AES-CFB + RSA-2048-OAEP wrap per
    record, then unwrap to read) beside meterseal's seal and open of the same readings, in-process."""
    from streams.unseal import open_many

    sample = [v for _, v in messages[:baseline_n]]
    private, public = _primitives.rsa_keypair(2048)
    boxes = []
    seal_rate, seal_s = rate(len(sample), lambda: boxes.extend(_primitives.prototype_seal(public, v) for v in sample))
    open_rate, open_s = rate(len(sample), lambda: [_primitives.prototype_open(private, *b) for b in boxes])
    made = []
    ring = DekRing(max_records=1_000_000, max_age_s=1e9, on_new_key=made.append)
    sealer = Sealer(BlindIndex(os.urandom(32)), ring, Policy(frozenset({"north", "south", "east", "west", "central"})))
    src = Source("readings.raw", 0, 0)
    ours = []
    values = [v for _, v in messages]
    our_seal, our_seal_s = rate(len(values), lambda: ours.extend(sealer.reading(v, src) for v in values))
    keys = {k.key_id: k for k in made}
    records = [o.record for o in ours if isinstance(o, Sealed)]
    our_open, our_open_s = rate(len(records), lambda: open_many(records, keys.__getitem__))
    return {"seed_style_per_s": round(len(sample) / (seal_s + open_s)), "seed_style_seal_per_s": round(seal_rate),
            "seed_style_open_per_s": round(open_rate), "meterseal_per_s": round(len(values) / (our_seal_s + our_open_s)),
            "meterseal_seal_per_s": round(our_seal), "meterseal_open_per_s": round(our_open)}


def bench_latency(n: int = 20_000, *, rate: float = 1000.0, meters: int = 20, anomaly_rate: float = 0.002,
                  workers: int = 1) -> dict:
    """Ingest->sealed and ingest->alert latency through ``workers`` workers: UCI readings with injected anomalies
    produced at ``rate``/s; a latency is the time a message is read off ``readings.sealed`` (or ``alerts``)
    minus the time its raw reading was produced."""
    import threading

    import numpy as np

    import schemas
    from streams.ingest.broker import Producer, consume
    from streams.ingest.produce import encode_reading, paced
    from streams.keys.keystore import Keystore
    from streams.ingest.sources import inject_anomalies, uci_readings

    readings = list(inject_anomalies(uci_readings(meters=meters, limit=n), rate=anomaly_rate, seed=9))
    messages = [(r["meter_id"].encode(), encode_reading({k: v for k, v in r.items() if k != "event"})) for r in readings]
    sealed: list[float] = []
    alerted: list[float] = []
    with _bench_worker(workers) as (data, broker):
        index = BlindIndex(Keystore.load(data).index_key("bench"))
        produced_at: dict[str, float] = {}
        done = threading.Event()

        def read_sealed() -> None:
            for msg in consume(broker.bootstrap, "readings.sealed", idle=None, stop=done.is_set):
                now = time.time() * 1000
                for record in sealed_records(msg.value()):
                    if record["record_id"] in produced_at:
                        sealed.append(now - produced_at[record["record_id"]])

        def read_alerts() -> None:
            for msg in consume(broker.bootstrap, "alerts", idle=None, stop=done.is_set):
                alert = schemas.decode("alert", msg.value())
                if alert["ingested_at_ms"]:
                    alerted.append(time.time() * 1000 - alert["ingested_at_ms"])

        readers = [threading.Thread(target=f, daemon=True) for f in (read_sealed, read_alerts)]
        for t in readers:
            t.start()
        ids = [index.record_id("reading", r["meter_id"], utc_ts(r["ts"])) for r in readings]
        producer = Producer(broker.bootstrap, **{"linger.ms": 1})
        start = time.perf_counter()
        for (key, value), record_id in paced(list(zip(messages, ids)), rate):
            produced_at[record_id] = time.time() * 1000
            producer.send("readings.raw", value, key)
        producer.close()  # (released before the broker stops: else librdkafka logs a refused connection)
        produced_s = time.perf_counter() - start
        deadline = time.monotonic() + 120
        while len(sealed) < n * 0.99 and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)  # the last alerts
        done.set()
        for t in readers:
            t.join(10)

    def pct(values: list[float], q: float) -> float:
        return round(float(np.percentile(values, q)), 1) if values else float("nan")

    return {"readings": n, "workers": workers, "target_rate": rate, "achieved_rate": round(n / produced_s),
            "sealed_seen": len(sealed),
            "latency_ms_p50": pct(sealed, 50), "latency_ms_p99": pct(sealed, 99), "alerts": len(alerted),
            "alert_latency_ms_p50": pct(alerted, 50), "alert_latency_ms_p99": pct(alerted, 99),
            "note": f"{workers} worker(s) in one group, embedded broker; latency = message read off readings.sealed (alerts) - its raw reading "
                    "produced (alerts: the raw reading's broker timestamp)"}



def bench_all(*, quick: bool = False, progress: Callable[[str], None] = lambda step: None) -> dict:
    """``meterseal bench``: every end-to-end figure in one run, on the same machine and broker build, with ratios."""
    n = 20_000 if quick else 100_000
    messages = _uci_messages(n)
    progress(f"bare Faust agent, {n} messages")
    bare = bench_bare_faust(n, messages=messages)
    progress(f"bare Faust agent forwarding each message, {n} messages")
    bare_fwd = bench_bare_faust(n, forward=True, messages=messages)
    progress(f"bare Faust agent reading {n} messages while they are produced")
    bare_conc = bench_bare_faust(n, messages=messages, concurrent=True)
    progress(f"meterseal, 1 worker, {n} readings")
    one = bench_pipeline(n, workers=1, messages=messages)
    progress(f"meterseal, 1 worker, {n} readings produced before it starts")
    one_pre = bench_pipeline(n, workers=1, messages=messages, preproduced=True)
    progress(f"meterseal, 1 worker, {n} readings in head-end batches of 100")
    batched = bench_pipeline(n, workers=1, batch=100)
    progress(f"meterseal, 2 workers, {n} readings")
    two = bench_pipeline(n, workers=2, messages=messages)
    progress("the prototype's per-record RSA + AES-CFB on the same readings")
    seed = bench_seed_style(messages, 500 if quick else 2_000)
    r1, r2 = one["readings_per_s_1_worker"], two["readings_per_s_2_workers"]
    # latency at 80 % of the capacity one worker showed above, then at 5,000/s with one and two workers
    rate = round(0.8 * r1)
    lat_n = 10_000 if quick else 50_000
    progress(f"latency at {rate} readings/s (80 % of one worker's {r1}/s)")
    lat = bench_latency(lat_n, rate=rate)
    progress("latency at 5,000 readings/s, 1 worker")
    lat5k = bench_latency(lat_n, rate=5000.0)
    progress("latency at 5,000 readings/s, 2 workers")
    lat5k2 = bench_latency(lat_n, rate=5000.0, workers=2)
    return {
        "quick": quick, "readings": n,
        "readings_per_s_1_worker": r1, "readings_per_s_2_workers": r2,
        "readings_per_s_batched_1_worker": batched["readings_per_s_batched_1_worker"],
        "faust_bare_per_s": bare["per_s"], "faust_bare_forward_per_s": bare_fwd["per_s"],
        "faust_bare_concurrent_per_s": bare_conc["per_s"],
        "readings_per_s_1_worker_polled": one["readings_per_s_1_worker_polled"],
        "readings_per_s_1_worker_preproduced": one_pre["readings_per_s_1_worker"],
        "seed_style_per_s": seed["seed_style_per_s"], "seed_style_seal_per_s": seed["seed_style_seal_per_s"],
        "seed_style_open_per_s": seed["seed_style_open_per_s"], "meterseal_seal_open_per_s": seed["meterseal_per_s"],
        "latency_rate_per_s": rate, "latency_achieved_rate": lat["achieved_rate"],
        "latency_ms_p50": lat["latency_ms_p50"], "latency_ms_p99": lat["latency_ms_p99"],
        "alert_latency_ms_p50": lat["alert_latency_ms_p50"], "alert_latency_ms_p99": lat["alert_latency_ms_p99"],
        "latency_ms_p99_5000_1_worker": lat5k["latency_ms_p99"],
        "alert_latency_ms_p99_5000_1_worker": lat5k["alert_latency_ms_p99"],
        "latency_ms_p99_5000_2_workers": lat5k2["latency_ms_p99"],
        "alert_latency_ms_p99_5000_2_workers": lat5k2["alert_latency_ms_p99"],
        "ratio_1_worker_vs_faust_bare": round(r1 / bare["per_s"], 3),
        # like for like: both read while the messages are produced, or both from messages produced beforehand
        "ratio_concurrent_1_worker_vs_faust_bare": round(r1 / bare_conc["per_s"], 3),
        "ratio_preproduced_1_worker_vs_faust_bare": round(one_pre["readings_per_s_1_worker"] / bare["per_s"], 3),
        "ratio_polled_1_worker_vs_faust_bare": round(one["readings_per_s_1_worker_polled"] / bare["per_s"], 3),
        "ratio_1_worker_vs_faust_bare_forward": round(r1 / bare_fwd["per_s"], 3),
        "ratio_2_workers_vs_1": round(r2 / r1, 2),
        "ratio_meterseal_vs_seed_style": round(seed["meterseal_per_s"] / seed["seed_style_per_s"], 1),
        "note": "throughput: UCI readings as JSON produced as fast as possible while the worker reads, from the first "
                "produced to the newest segment written (polled: to the 0.5 s poll that counted them all, the figure "
                "before session 8; preproduced: all produced before the worker starts, from its first sealed reading); "
                "bare = a Faust agent that only reads, timed from its first batch to its last with the messages produced "
                "before it starts (concurrent: from the first produced, while producing; forward: sends each message on); seed style = the prototype's "
                "per-record RSA-2048-OAEP wrap + AES-CFB, then unwrap, in-process (meterseal_seal_open: seal + open "
                "in-process on the same readings); batched: JSON arrays of 100 readings keyed by collector id; latency: "
                "one worker, readings produced at latency_rate (80 % of readings_per_s_1_worker), then at 5,000/s with "
                "one and two workers",
    }
