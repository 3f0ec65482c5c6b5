"""Erasure against a live worker on the embedded broker: ingest for other meters goes on meanwhile and loses
nothing, the worker drops the erased meter's state, and the meter's next reading starts a new token epoch."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time

import pytest

from streams.ingest.broker import Producer

from .rig import running_rig

pytestmark = pytest.mark.broker
METERS = [f"E-{i}" for i in range(5)]


def _reading(meter: str, at: dt.datetime, n: int) -> tuple[bytes, bytes]:
    doc = {"meter_id": meter, "ts": at.isoformat().replace("+00:00", "Z"), "kwh": 0.2 + (n % 7) / 10,
           "register_kwh": 1000 + n, "region": "north", "category": "Domestic", "account_id": f"ACC-{meter}"}
    return meter.encode(), json.dumps(doc).encode()


def _send(bootstrap: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(bootstrap)
    for key, value in messages:
        producer.send("readings.raw", value, key)
    producer.flush()


def test_erasure_while_other_meters_stream_in(tmp_path):
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(days=2)
    first = [_reading(m, start + dt.timedelta(minutes=i), i) for i in range(150) for m in METERS]
    later = [_reading(m, start + dt.timedelta(minutes=150 + i), 150 + i) for i in range(150) for m in METERS[1:]]
    with running_rig(tmp_path / "data", METERSEAL_ERASURE_GRACE_S="3") as rig:
        _send(rig.broker.bootstrap, first)
        rig.wait_for(lambda: rig.query("SELECT count(*) FROM readings")[0][0] >= 750, "the first 750 readings")
        streaming = threading.Thread(target=_send, args=(rig.broker.bootstrap, later))
        streaming.start()  # the other meters keep streaming while E-0 is erased
        done = rig.cli("subject", "erase", "--meter", "E-0", "--yes", "--reason", "gdpr-art17", "--format", "json")
        streaming.join()
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["records"]["readings"] == 150 and report["reach"] == {"meters": 1, "accounts": 1}
        want = 600 + len(later)
        rig.wait_for(lambda: rig.query("SELECT count(*) FROM readings")[0][0] >= want, f"{want} readings")
        time.sleep(1)
        index = rig.index
        assert rig.query("SELECT count(*), count(DISTINCT record_id) FROM readings") == [(want, want)]
        for meter in METERS[1:]:
            assert rig.query("SELECT count(*) FROM readings WHERE meter_tok = ?", [index.meter(meter)]) == [(300,)]
        assert rig.query("SELECT count(*) FROM readings WHERE meter_tok = ?", [index.meter("E-0")]) == [(0,)]
        log = (rig.data_dir / "worker.log").read_text()
        dropped = re.search(r"2 subject\(s\) erased: their keys forgotten, (\d+) per-meter state", log)
        assert dropped and int(dropped.group(1)) >= 2, log[-2000:]  # the meter's validator state and its profile
        # a new occupant's reading (after the erasure) and a redelivered one of the old occupant's
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        _send(rig.broker.bootstrap, [_reading("E-0", now, 5000), _reading("E-0", start + dt.timedelta(minutes=3), 3)])
        new_token = index.meter("E-0", 1)
        rig.wait_for(lambda: rig.query("SELECT count(*) FROM readings WHERE meter_tok = ?", [new_token])[0][0] == 1,
                     "the new occupant's reading under the next epoch's token")
        rig.wait_for(lambda: rig.query("SELECT count(*) FROM dlq WHERE rule = 'erased'")[0][0] == 1,
                     "the old occupant's reading refused")
        time.sleep(12)  # a checkpoint of the last leaves (METERSEAL_CHECKPOINT_S)
        verify = rig.cli("ledger", "verify")
        assert verify.returncode == 0, verify.stderr
        assert "leaves redacted by 1 erasure" in verify.stdout
