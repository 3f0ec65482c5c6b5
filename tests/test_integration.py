"""End to end on the embedded broker with a real worker process. Marked ``broker``; run in CI."""

from __future__ import annotations

import json
import re
import signal
import os
import subprocess
import sys
import time
import pytest

import schemas
from streams.keys.keyring import Keyring
from streams.sealed_batch import sealed_records
from streams.unseal import open_record
from streams.ingest.sources import read_bills_csv
from streams.store.segments import SegmentStore, connect
from streams.validate import check_bill

from .rig import running_rig

pytestmark = pytest.mark.broker
RAW_TOPICS = {"readings.raw", "bills.raw"}


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    with running_rig(tmp_path_factory.mktemp("meterseal-data"), METERSEAL_DEK_MAX_RECORDS="300") as r:
        yield r


def test_seed_csv_is_sealed_exactly_once(rig, seed_csv):
    result = rig.cli("ingest", "bills", str(seed_csv))
    assert result.returncode == 0, result.stderr
    assert "1000 bill(s) produced" in result.stderr
    want = {rig.index.record_id("bill", check_bill(r)["bill_no"]) for r in read_bills_csv(seed_csv)}
    assert len(want) == 1000
    rig.wait_for(lambda: rig.query("SELECT count(*) FROM bills")[0][0] >= 1000, "1000 sealed bills")
    rows = rig.query("SELECT record_id FROM bills")
    assert len(rows) == 1000 and {r for (r,) in rows} == want
    # DEKs rotated (every 300 records) and every one is kept, wrapped, in the store
    assert len(rig.query("SELECT DISTINCT key_id FROM bills")) >= 4
    assert {k for (k,) in rig.query("SELECT DISTINCT key_id FROM bills")} <= set(SegmentStore(rig.data_dir / "store").dek_ids())

    # every stored bill opens with the owner key and equals its CSV row
    store = SegmentStore(rig.data_dir / "store")
    ring = Keyring(store, rig.keys.unwrappers(), index_key=rig.keys.index_key)
    con = connect(rig.data_dir / "store")
    cols = [d[0] for d in con.execute("SELECT * FROM bills").description]
    by_no = {r["Bill No."]: check_bill(r) for r in read_bills_csv(seed_csv)}
    for row in con.execute("SELECT * FROM bills").fetchall():
        plain = open_record(dict(zip(cols, row)), ring, rig.index)
        assert plain == by_no[plain["bill_no"]]

    # the same file again: redelivered input never becomes a second row
    assert rig.cli("ingest", "bills", str(seed_csv)).returncode == 0
    rig.wait_for(lambda: rig.consumed("bills.raw"), "the second ingest to be sealed")
    rig.wait_for(lambda: rig.consumed("bills.sealed"), "the re-sealed bills to reach the sink")
    sealed = [r for m in rig.scan("bills.sealed") for r in sealed_records(m.value())]
    assert len(sealed) == 2000  # both deliveries were sealed; the sink kept one of each
    # ...and the ledger has exactly one leaf per bill
    verify = rig.cli("ledger", "verify")
    assert verify.returncode == 0 and verify.stdout.startswith("ok:"), verify.stdout + verify.stderr
    from ledger.storage import FileHashStore

    store = SegmentStore(rig.data_dir / "store")
    assert sum(FileHashStore(store.hash_path("bills", p)).size() for p in range(4)) == 1000
    assert rig.query("SELECT count(*), count(DISTINCT record_id) FROM bills")[0] == (1000, 1000)


def test_no_personal_data_outside_the_raw_topics(rig, seed_csv):
    rig.wait_for(lambda: rig.query("SELECT count(*) FROM bills")[0][0] >= 1000, "sealed bills")
    rows = list(read_bills_csv(seed_csv))
    needles = set()
    for r in rows:
        needles |= {r["Name"].encode(), r["Phone No."].encode(), r["Phone No."][4:].encode(), r["Address"].encode()}
    # store files
    files = [p for p in (rig.data_dir / "store").rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    for path in files:
        data = path.read_bytes()
        assert not [n for n in needles if n in data], f"personal data in {path}"
    # every topic on the broker other than the raw input topics, changelogs included
    from confluent_kafka.admin import AdminClient

    topics = set(AdminClient({"bootstrap.servers": rig.broker.bootstrap}).list_topics(timeout=10).topics)
    scanned = sorted(t for t in topics - RAW_TOPICS if not t.startswith("__"))
    assert {"bills.sealed", "keys.deks", "dlq"} <= set(scanned)
    blob = b"\n".join(b for t in scanned for b in rig.topic_bytes(t))
    assert blob, "nothing was read from the sealed topics"
    assert not [n for n in needles if n in blob]
    # the raw topic, by contrast, does hold them: the scan can find what it looks for
    raw = b"\n".join(rig.topic_bytes("bills.raw"))
    assert rows[0]["Name"].encode() in raw


def test_json_reading_from_confluent_kafka_is_sealed(rig):
    from confluent_kafka import Producer

    reading = {"meter_id": "CK-0001", "ts": "2025-01-02T03:04:05Z", "kwh": 0.42, "register_kwh": 1234.5,
               "region": "central", "category": "Commercial", "firmware": "v2.1"}
    p = Producer({"bootstrap.servers": rig.broker.bootstrap, "partitioner": "murmur2_random"})
    p.produce("readings.raw", key=b"CK-0001", value=json.dumps(reading).encode())
    assert p.flush(10) == 0
    rid = rig.index.record_id("reading", "CK-0001", "2025-01-02T03:04:05+00:00")
    rig.wait_for(lambda: rig.query("SELECT count(*) FROM readings WHERE record_id = ?", [rid])[0][0] == 1, "the reading")
    (meter_tok, day_tok, region) = rig.query("SELECT meter_tok, day_tok, region FROM readings WHERE record_id = ?", [rid])[0]
    assert (meter_tok, day_tok, region) == (rig.index.meter("CK-0001"), rig.index.day("2025-01-02"), "central")
    # kill -USR2 logs what the worker waits on (agents/diagnose.py): its partitions and positions, its queues
    rig.worker.send_signal(signal.SIGUSR2)
    rig.wait_for(lambda: "worker state (SIGUSR2)" in (rig.data_dir / "worker.log").read_text(), "the state dump", 30)
    state = (rig.data_dir / "worker.log").read_text().split("worker state (SIGUSR2):", 1)[1]
    assert "could not read" not in state
    assert re.search(r"aiokafka positions: .*readings\.raw/\d@\d+", state), state[:2000]
    assert "agent seal_readings: 0 event(s) queued" in state and "store behind: 0 batch(es)" in state, state[:2000]


def test_malformed_input_lands_in_dlq_with_a_reason(rig):
    from confluent_kafka import Producer

    bad = {
        b"\x00\x01garbage": "decode",
        b'{"meter_id": "X1", "ts": "2025-01-01T00:00:00Z", "kwh": -1, "register_kwh": 1, "region": "north", "category": "D"}': "kwh",
        b'{"meter_id": "X2", "ts": "2025-01-01T00:00:00Z", "kwh": 1, "register_kwh": 1, "region": "mars", "category": "D"}': "region",
        b'{"meter_id": "X3", "ts": "2325-01-01T00:00:00Z", "kwh": 1, "register_kwh": 1, "region": "north", "category": "D"}': "future",
        b'{"meter_id": "X4", "kwh": 1}': "schema",
        schemas.MARKER + schemas.get("reading").fingerprint + b"\x99": "decode",
    }
    since = int(time.time() * 1000) - 1000
    p = Producer({"bootstrap.servers": rig.broker.bootstrap})
    for value in bad:
        p.produce("readings.raw", key=(json.loads(value).get("meter_id", "bad") if value[:1] == b"{" else "bad").encode(),
                  value=value)
    p.produce("bills.raw", key=b"bad", value=b'{"Name": "only a name"}')
    assert p.flush(10) == 0
    rows = rig.wait_for(lambda: (r := rig.query("SELECT rule, reason, source_topic FROM dlq WHERE received_at_ms >= ?",
                                                [since])) and len(r) >= 7 and r, "7 dead letters")
    assert sorted(rule for rule, _, t in rows if t == "readings.raw") == sorted(bad.values())
    assert [(rule, t) for rule, reason, t in rows if t == "bills.raw"] == [("schema", "bills.raw")]
    assert all(reason for _, reason, _ in rows)
    # the dlq topic itself carries the same dead letters, decodable with the DeadLetter schema
    letters = [schemas.decode("dead_letter", v) for v in rig.topic_bytes("dlq")[1::2]]
    assert {d["rule"] for d in letters} >= set(bad.values())
    # and the worker is still alive and sealing
    assert rig.worker.poll() is None


def test_demo_runs_end_to_end(tmp_path, seed_csv):
    """The README's first command ends in `meterseal demo`: it must exit 0 and say what it did."""
    env = {**os.environ, "METERSEAL_PASSPHRASE": "demo-test", "METERSEAL_DATA_DIR": str(tmp_path / "data")}
    env.pop("METERSEAL_BROKER", None)
    result = subprocess.run([sys.executable, "-m", "streams.cli", "demo", str(seed_csv), "--uci-limit", "2000"],
                            env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "demo complete" in out and "opened with the owner's private key" in out
    # 3000 record leaves (1000 bills + 2000 readings) plus one leaf per data key and per customer's subject key
    import re

    m = re.search(r"ledger: \d+ Merkle logs, (\d+) leaves, \d+ signed checkpoints — verified", out)
    keys = int(re.search(r"wrapped DEKs in the store: (\d+)", out).group(1))
    subjects = int(re.search(r"customers' subject keys: (\d+)", out).group(1))
    assert m and int(m.group(1)) == 3000 + keys + subjects and subjects >= 1000, out[-2000:]
    assert "│ bills.raw    │     1000 │   1000 │            0 │" in out
    assert "│ readings.raw │     2005 │   2000 │            5 │" in out
    assert not (tmp_path / "data" / "broker.json").exists()  # the demo cleaned up after itself
    # it ends with one grant whose bundle the recipient opens, trusting only the post-quantum checkpoint key
    assert re.search(r"opened by the recipient .* checkpoints checked with meterseal-ledger-mldsa65: (\d+) records verified",
                     out.replace("\n", " ")), out[-2000:]


def snapshot(store):
    """Record ids with their partitions, leaves and meter sequence numbers, per table (either backend)."""
    from streams.store.base import connect as connect_store

    con = connect_store(store)
    try:
        return {t: sorted(con.execute(f"SELECT record_id, topic_partition, leaf_index, meter_seq FROM {t}").fetchall())
                for t in ("bills", "readings")}
    finally:
        con.close()


def test_store_rebuild_from_the_sealed_topics_is_identical(rig, seed_csv, tmp_path):
    """The store is a projection of the log: replaying the sealed topics gives the same records and leaves."""
    rig.wait_for(lambda: rig.query("SELECT count(*) FROM bills")[0][0] >= 1000, "sealed bills")
    rig.wait_for(lambda: rig.consumed("bills.sealed") and rig.consumed("readings.raw"), "the sinks to catch up")
    into = tmp_path / "rebuilt"
    result = rig.cli("store", "rebuild", "--into", str(into))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["bills.sealed"] == 1000

    assert snapshot(into) == snapshot(rig.data_dir / "store")
    from ledger.storage import FileHashStore

    original, rebuilt = SegmentStore(rig.data_dir / "store"), SegmentStore(into)
    for p in range(4):
        assert FileHashStore(rebuilt.hash_path("bills", p)).read() == FileHashStore(original.hash_path("bills", p)).read()


@pytest.mark.objectstore
def test_store_rebuild_into_s3_gives_the_same_records_and_ledger(rig, seed_csv, objectstore, s3_location):
    from streams.store.base import open_store

    rig.wait_for(lambda: rig.query("SELECT count(*) FROM bills")[0][0] >= 1000, "sealed bills")
    rig.wait_for(lambda: rig.consumed("bills.sealed") and rig.consumed("readings.raw"), "the sinks to catch up")
    done = subprocess.run([sys.executable, "-m", "streams.cli", "store", "rebuild", "--into", s3_location],
                          env={**rig.env, **objectstore.env()}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["bills.sealed"] == 1000
    rebuilt, original = open_store(s3_location, create=False, work_dir=rig.data_dir / "r"), SegmentStore(rig.data_dir / "store")
    assert snapshot(rebuilt) == snapshot(rig.data_dir / "store")
    for p in range(4):
        assert rebuilt.hash_store("bills", p).read() == original.hash_store("bills", p).read()
    again = subprocess.run([sys.executable, "-m", "streams.cli", "store", "rebuild", "--into", s3_location],
                           env={**rig.env, **objectstore.env()}, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "already holds records" in again.stderr and "Traceback" not in again.stderr


def test_search_while_the_worker_ingests_sees_a_consistent_store(rig):
    """Readers never see half a segment: while readings stream in, every search result opens and counts only grow."""
    from streams.store.query import Query, Reader

    result = subprocess.Popen([sys.executable, "-m", "streams.cli", "ingest", "simulate", "--meters", "20",
                               "--readings", "6000", "--rate", "2000"], env=rig.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    reader = Reader(rig.data_dir / "store", rig.keys)
    seen, counts = 0, []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (result.poll() is None or not counts or counts[-1] < 6000):
        hits = reader.search(Query(region="north"), kinds=["readings"])
        for hit in hits[-50:]:
            assert reader.open(hit)["region"] == "north"  # whole, authentic records only
        counts.append(len(reader.search(Query(), kinds=["readings"])))
        seen += 1
        time.sleep(0.2)
    assert result.wait(30) == 0
    assert counts == sorted(counts) and seen > 5 and counts[0] < counts[-1]  # monotone: no segment ever half-seen


def test_bench_pipeline_measures_a_real_worker():
    from streams.bench.pipeline import bench_pipeline

    result = bench_pipeline(2000, meters=5)
    assert result["stored"] == 2000 and result["readings_per_s_1_worker"] > 0
