"""Every reading exactly once through crashes, scale-out and bad input: real worker processes on the
embedded broker, killed with SIGKILL. Marked ``broker``; run in CI (the crash test takes a few minutes).

``METERSEAL_CRASH_READINGS`` shrinks the crash test's ingest for a quick local run (default 100,000).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time

import pytest

from ledger.storage import FileHashStore
from streams.ingest.broker import Producer
from streams.ingest.produce import batch_readings, encode_reading, paced
from streams.keys.keyring import Keyring
from streams.ingest.sources import uci_readings
from streams.validate import utc_ts
from streams.store.segments import SegmentStore
from streams.crypto import envelope
from streams.seal import dlq_aad

from .corpus import BAD, BATCHES, CORPUS
from .rig import running_rig

pytestmark = pytest.mark.broker


def _produce(rig, messages) -> None:
    producer = Producer(rig.broker.bootstrap)
    for key, value in messages:
        producer.send("readings.raw", value, key)
    producer.flush()


def _uci(n: int, meters: int = 20) -> list[dict]:
    """The first ``n`` UCI readings replayed as ``meters`` meters."""
    return list(uci_readings(meters=meters, limit=n))


def _messages(readings: list[dict]) -> list[tuple[bytes, bytes]]:
    return [(r["meter_id"].encode(), encode_reading(r)) for r in readings]


def _expected_ids(rig, readings: list[dict]) -> set[str]:
    return {rig.index.record_id("reading", r["meter_id"], utc_ts(r["ts"])) for r in readings}


def _stored(rig) -> int:
    return rig.query("SELECT count(*) FROM readings")[0][0]


def _assert_exactly_once(rig, want: set[str]) -> None:
    """The store holds each wanted reading once, the ledger one leaf per reading, and verifies."""
    count, distinct = rig.query("SELECT count(*), count(DISTINCT record_id) FROM readings")[0]
    assert (count, distinct) == (len(want), len(want)), "lost or duplicated readings"
    assert {r for (r,) in rig.query("SELECT record_id FROM readings")} == want
    store = SegmentStore(rig.data_dir / "store")
    leaves = sum(FileHashStore(store.hash_path("readings", p)).size() for p in store.partitions("readings"))
    assert leaves == len(want), "the ledger must hold exactly one leaf per reading"
    verify = rig.cli("ledger", "verify")
    assert verify.returncode == 0 and verify.stdout.startswith("ok:"), verify.stdout + verify.stderr
    # every reading's per-meter sequence is 0..n-1 in its partition: no gap, no repeat
    gaps = rig.query("SELECT meter_tok, topic_partition, count(*), max(meter_seq) FROM readings GROUP BY ALL "
                     "HAVING count(*) != max(meter_seq) + 1 OR count(DISTINCT meter_seq) != count(*)")
    assert not gaps, gaps


@pytest.mark.parametrize("batch", [0, 100], ids=["one reading a message", "head-end batches of 100"])
def test_sigkill_during_ingest_keeps_every_reading_exactly_once(tmp_path, batch):
    n = int(os.environ.get("METERSEAL_CRASH_READINGS", 100_000))
    readings = _uci(n)
    rng = random.Random(20261123)
    with running_rig(tmp_path, METERSEAL_CHECKPOINT_S="2") as rig:
        want = _expected_ids(rig, readings)
        assert len(want) == n
        if batch:
            # batches are sealed faster than the kills come: produced over ~150 s so that every kill is mid-stream
            messages = list(batch_readings(readings, batch))
            threading.Thread(target=_produce, args=(rig, paced(messages, len(messages) / 150)), daemon=True).start()
        else:
            _produce(rig, _messages(readings))
        kills = []
        while len(kills) < 5:
            before = _stored(rig)
            # kill while the worker is mid-stream: after it has stored something new since it (re)started
            rig.wait_for(lambda: _stored(rig) > before, "progress after a restart", timeout=120)
            time.sleep(rng.uniform(0.0, 3.0))
            at = _stored(rig)
            assert at < n, f"the ingest finished before kill {len(kills) + 1}: make it longer"
            rig.kill_worker()
            kills.append(at)
            rig.start_worker()
        rig.wait_for(lambda: _stored(rig) >= n, f"all {n} readings after {len(kills)} kills", timeout=900)
        time.sleep(3)  # anything still in flight would show up as a duplicate now
        rig.stop_worker()  # a clean stop signs a checkpoint of every log's last leaves
        print(f"killed at {kills} readings stored")
        _assert_exactly_once(rig, want)
        # redelivery after a kill re-seals readings the worker had already seen: never a dead letter
        assert rig.query("SELECT count(*) FROM dlq")[0][0] == 0


def test_two_workers_share_the_partitions_and_one_takes_over_when_the_other_dies(tmp_path):
    readings = _uci(24_000)
    with running_rig(tmp_path, METERSEAL_CHECKPOINT_S="2") as rig:
        first = rig.worker
        rig.wait_for(lambda: "worker ready" in (tmp_path / "worker.log").read_text(), "the first worker")
        second = rig.start_worker("worker2.log")
        rig.wait_for(lambda: "worker ready" in (tmp_path / "worker2.log").read_text(), "the second worker",
                     log="worker2.log")
        want = _expected_ids(rig, readings)
        _produce(rig, _messages(readings[:12_000]))
        rig.wait_for(lambda: _stored(rig) >= 6_000, "half the first batch")
        # both workers sealed: each wrapped its own DEKs, and the wrapped key says which worker made it
        store = SegmentStore(tmp_path / "store")
        sealers = {store.get_dek(k)["worker"] for (k,) in rig.query("SELECT DISTINCT key_id FROM readings")}
        assert sealers == {f"{os.uname().nodename}:{first.pid}", f"{os.uname().nodename}:{second.pid}"}, sealers
        rig.kill_worker(second)
        rig.worker = first
        _produce(rig, _messages(readings[12_000:]))
        rig.wait_for(lambda: _stored(rig) >= len(readings), "every reading, with one worker left", timeout=300)
        time.sleep(3)
        rig.stop_worker(first)
        _assert_exactly_once(rig, want)


def test_every_malformed_reading_lands_in_dlq_and_the_worker_keeps_going(tmp_path):
    with running_rig(tmp_path) as rig:
        _produce(rig, [(key, value) for _, key, value, _ in CORPUS])
        rows = rig.wait_for(lambda: (r := rig.query("SELECT rule, reason, key_id, dlq_id, envelope FROM dlq"))
                            and len(r) >= len(BAD) and r, f"{len(BAD)} dead letters")
        assert len(rows) == len(BAD)
        # each dead letter opens (owner key) to the original bytes, and has the rule the corpus expects
        ring = Keyring(SegmentStore(tmp_path / "store"), rig.keys.unwrappers(), index_key=rig.keys.index_key)
        rule_of = {value: rule for _, _, value, rule in BAD}
        for rule, reason, _, dlq_id, sealed in rows:
            original = envelope.open_with(ring, sealed, aad=dlq_aad(dlq_id))
            assert rule_of[original] == rule and reason
        # the good reading and its exact redelivery: stored once (the seal agent stores readings itself, up to
        # store_flush_s after sealing; the dead letters come through their own agent: either may be first)
        rig.wait_for(lambda: rig.query("SELECT count(*) FROM readings")[0][0] >= 1, "the good reading")
        assert rig.query("SELECT count(*) FROM readings")[0][0] == 1
        # and the worker still seals what comes next
        _produce(rig, [(b"CORPUS-0002", json.dumps({"meter_id": "CORPUS-0002", "ts": "2025-03-02T00:00:00Z", "kwh": 1,
                                                    "register_kwh": 5, "region": "south", "category": "Domestic"}).encode())])
        rig.wait_for(lambda: rig.query("SELECT count(*) FROM readings")[0][0] >= 2, "a good reading after the corpus")
        assert rig.query("SELECT count(*), count(DISTINCT record_id) FROM readings")[0] == (2, 2)
        assert rig.worker.poll() is None


def test_head_end_batches_through_a_live_worker(tmp_path):
    """JSON-array and Avro batch messages keyed by collector: every good reading sealed once, each bad one its own
    dead letter with its index, and each meter's records in reading order (its per-meter sequence)."""
    from streams.unseal import open_many

    readings = _uci(6_000)
    messages = list(batch_readings(readings[:3_000], 100)) + list(batch_readings(readings[3_000:], 100, fmt="avro"))
    # the corpus's batches (all but the one too large for the broker itself: the unit test has it)
    corpus = [entry for entry in BATCHES if len(entry[2]) < 512 * 1024]
    with running_rig(tmp_path, METERSEAL_CHECKPOINT_S="2") as rig:
        want = _expected_ids(rig, readings)
        _produce(rig, messages + [(key, value) for _, key, value, *_ in corpus])
        sealed_in_corpus = sum(entry[4] for entry in corpus)
        dead = sorted((index if index is not None else -1, rule) for *_, expected, _ in corpus for index, rule in expected)
        rig.wait_for(lambda: _stored(rig) >= len(want) + sealed_in_corpus
                     and rig.query("SELECT count(*) FROM dlq")[0][0] >= len(dead), "every batch's readings")
        time.sleep(3)
        rig.stop_worker()
        assert _stored(rig) == len(want) + sealed_in_corpus
        rows = rig.query("SELECT coalesce(batch_index, -1), rule FROM dlq")
        assert sorted(rows) == dead
        # per-meter order: a meter's sequence numbers follow its readings' times
        ring = Keyring(SegmentStore(tmp_path / "store"), rig.keys.unwrappers(), index_key=rig.keys.index_key)
        records = [dict(zip(("record_id", "kind", "schema_version", "region", "category", "meter_tok", "account_tok",
                             "day_tok", "month_tok", "year_tok", "envelope", "meter_seq"), row))
                   for row in rig.query("SELECT record_id, kind, schema_version, region, category, meter_tok, "
                                        "account_tok, day_tok, month_tok, year_tok, envelope, meter_seq FROM readings")]
        plains = open_many(records, ring)
        by_meter: dict[str, list] = {}
        for record, plain in zip(records, plains):
            by_meter.setdefault(plain["meter_id"], []).append((record["meter_seq"], plain["ts"]))
        for meter, seq in by_meter.items():
            times = [ts for _, ts in sorted(seq)]
            assert times == sorted(times), f"{meter}: records out of reading order"
        assert {rig.index.record_id("reading", p["meter_id"], p["ts"]) for p in plains} >= want


def test_broker_outage_and_broker_restart(tmp_path):
    """A broker that stops answering (SIGSTOP) and comes back: the worker says so and resumes. An in-memory
    broker that restarts (its data gone): the worker exits with code 75, a restarted worker carries on,
    and the store still holds every reading once."""
    import signal

    from streams.ingest.broker import ensure_topics

    readings = _uci(8_000)
    with running_rig(tmp_path, METERSEAL_CHECKPOINT_S="2") as rig:
        log = tmp_path / "worker.log"
        want = _expected_ids(rig, readings)
        _produce(rig, _messages(readings[:3_000]))
        rig.wait_for(lambda: _stored(rig) >= 3_000, "the first readings")

        os.kill(rig.broker.pid, signal.SIGSTOP)  # the broker hangs: no answers, connections stay open
        try:
            rig.wait_for(lambda: "unreachable" in log.read_text(), "the worker to notice", timeout=60)
            time.sleep(3)
            assert rig.worker.poll() is None
        finally:
            os.kill(rig.broker.pid, signal.SIGCONT)
        rig.wait_for(lambda: "reachable again" in log.read_text(), "the worker to see the broker back", timeout=60)
        _produce(rig, _messages(readings[3_000:6_000]))
        rig.wait_for(lambda: _stored(rig) >= 6_000, "readings after the outage", timeout=120)

        rig.broker.stop()  # the in-memory broker restarts: every topic is gone
        rig.wait_for(lambda: log.read_text().count("unreachable (") >= 2, "the worker to notice the second outage")
        rig.broker.start()
        ensure_topics(rig.broker.bootstrap, 4)
        deadline = time.monotonic() + 60
        while rig.worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert rig.worker.returncode == 75, log.read_text()[-3000:]
        assert "came back without its data" in log.read_text()
        rig.start_worker()  # what systemd or Kubernetes would do
        _produce(rig, _messages(readings[6_000:]))
        rig.wait_for(lambda: _stored(rig) >= len(readings), "readings after the broker restart", timeout=120)
        time.sleep(3)
        rig.stop_worker()
        _assert_exactly_once(rig, want)
