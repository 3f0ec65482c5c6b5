"""Scale-out on object storage: three worker processes, each with its own working directory (its own copy
of the keystore, nothing shared on disk), ingest into one S3 store (Iceberg on SeaweedFS, catalog on
PostgreSQL) while one of them is SIGKILLed. Every reading is stored once and ``ledger verify`` is clean."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from streams.ingest.broker import EmbeddedBroker, Producer, ensure_topics
from streams.ingest.produce import encode_reading
from streams.ingest.sources import uci_readings
from streams.keys.keystore import Keystore
from streams.crypto.tokens import BlindIndex
from streams.store.base import connect
from streams.validate import utc_ts

pytestmark = [pytest.mark.objectstore, pytest.mark.broker]

PASSPHRASE = "scale-out-passphrase"
READINGS = int(os.environ.get("METERSEAL_SCALE_OUT_READINGS", "12000"))


def _worker(home, env, name):
    log = open(home / f"{name}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def _tails(homes, chars: int = 2500) -> str:
    """The end of every worker's log, for a failure message (what a stalled worker was doing)."""
    return "\n".join(f"--- {home.name}/worker.log:\n{(home / 'worker.log').read_text()[-chars:]}" for home, _ in homes)


def _count(location) -> tuple[int, int]:
    return connect(location).execute("SELECT count(*), count(DISTINCT record_id) FROM readings").fetchone()


def _leaves(location) -> dict[int, tuple[int, int]]:
    """Per sealed-topic partition: (rows, max leaf index + 1). They differ when a group write the ledger has is
    missing from the table (the lost Iceberg append of 2026-12-01) or a leaf is stored twice."""
    rows = connect(location).execute("SELECT topic_partition, count(*), max(leaf_index) + 1 FROM readings "
                                     "GROUP BY topic_partition ORDER BY 1").fetchall()
    return {p: (n, leaves) for p, n, leaves in rows}


def test_three_workers_without_shared_files_one_killed_store_every_reading_once(tmp_path, s3_location):
    keys_home = tmp_path / "keys"
    Keystore.init(keys_home, PASSPHRASE)
    index = BlindIndex(Keystore.load(keys_home).index_key(PASSPHRASE))
    broker = EmbeddedBroker(port=15470, log_path=tmp_path / "broker.log").start()
    workers, homes = [], []
    try:
        ensure_topics(broker.bootstrap, 4)
        for i in range(3):
            home = tmp_path / f"machine{i}"
            home.mkdir()
            shutil.copy(keys_home / "keystore.json", home / "keystore.json")
            env = {**os.environ, "METERSEAL_DATA_DIR": str(home), "METERSEAL_BROKER": broker.url,
                   "METERSEAL_PASSPHRASE": PASSPHRASE, "METERSEAL_STORE": s3_location, "METERSEAL_LOG_LEVEL": "info",
                   "METERSEAL_CHECKPOINT_S": "2", "METERSEAL_SNAPSHOT_KEEP_S": "10"}  # expiry every 5 s
            homes.append((home, env))
            workers.append(_worker(home, env, "worker"))
        for (home, _), w in zip(homes, workers):
            deadline = time.monotonic() + 120
            while "worker ready" not in (home / "worker.log").read_text():
                assert w.poll() is None and time.monotonic() < deadline, (home / "worker.log").read_text()[-3000:]
                time.sleep(0.3)
        readings = list(uci_readings(meters=20, limit=READINGS))
        want = {index.record_id("reading", r["meter_id"], utc_ts(r["ts"])) for r in readings}
        producer = Producer(broker.bootstrap)
        for r in readings:
            producer.send("readings.raw", encode_reading(r), r["meter_id"].encode())
        producer.flush()
        deadline = time.monotonic() + 120
        while _count(s3_location)[0] < READINGS // 4:
            assert time.monotonic() < deadline, f"no progress\n{_tails(homes)}"
            time.sleep(0.5)
        workers[1].kill()  # SIGKILL mid-ingest: nothing flushed, its partitions move to the other two
        workers[1].wait(10)
        deadline = time.monotonic() + 400
        while _count(s3_location)[0] < READINGS:
            assert time.monotonic() < deadline, (f"stored {_count(s3_location)} of {READINGS}; "
                                                 f"(rows, leaves) per partition {_leaves(s3_location)}\n{_tails(homes)}")
            assert workers[0].poll() is None and workers[2].poll() is None, f"a surviving worker died\n{_tails(homes)}"
            time.sleep(1)
        # every row is in the table; the killed worker may have died between storing rows and logging them,
        # and the survivor that took its partition logs them when it takes it (``Pipeline.catch_up``): wait for it
        home, env = homes[0]
        deadline = time.monotonic() + 120
        while (verify := subprocess.run([sys.executable, "-m", "streams.cli", "ledger", "verify"], env=env,
                                        capture_output=True, text=True, timeout=300)).returncode != 0:
            assert time.monotonic() < deadline, f"{verify.stdout[-1500:]}{verify.stderr[-1500:]}\n{_tails(homes)}"
            time.sleep(2)
        for w in (workers[0], workers[2]):
            w.terminate()
            w.wait(60)
        count, distinct = _count(s3_location)
        assert (count, distinct) == (READINGS, READINGS), "lost or duplicated readings"
        assert all(n == leaves for n, leaves in _leaves(s3_location).values()), _leaves(s3_location)
        assert {r for (r,) in connect(s3_location).execute("SELECT record_id FROM readings").fetchall()} == want
        home, env = homes[0]
        verify = subprocess.run([sys.executable, "-m", "streams.cli", "ledger", "verify"], env=env,
                                capture_output=True, text=True, timeout=300)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert verify.stdout.startswith("ok:"), verify.stdout
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait(10)
        broker.stop()
