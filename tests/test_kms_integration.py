"""A real worker with OpenBao transit and only the worker policy, on the embedded broker: the service stopped
mid-ingest and started again — the worker pauses, resumes, and stores every reading once; nothing in clear on
disk meanwhile. Marked ``broker`` and ``kms`` (a real OpenBao server with Raft storage: it keeps its keys over
the restart, as a production service does)."""

from __future__ import annotations

import threading
import time

import pytest

from streams.ingest.broker import Producer
from streams.ingest.produce import encode_reading, paced
from streams.ingest.sources import simulate
from streams.kms.access import init_kms, open_keys
from streams.kms.migrate import verify_opens
from streams.kms.uri import parse
from streams.settings import Settings
from streams.store.segments import SegmentStore
from streams.validate import utc_ts

from .rig import running_rig

pytestmark = [pytest.mark.broker, pytest.mark.kms]
N = 6000


@pytest.fixture
def bao(tmp_path):
    from streams.kms.devserver import DevOpenBao

    try:
        server = DevOpenBao(tmp_path / "bao", persistent=True)
    except FileNotFoundError as exc:
        pytest.skip(f"OpenBao not installed: {exc}")
    with server:
        server.enable_transit()
        yield server


def test_the_service_stopped_mid_ingest_loses_and_duplicates_nothing(tmp_path, bao):
    data = tmp_path / "data"
    uri = bao.uri()
    init_kms(data, parse(uri), environ={"BAO_TOKEN": bao.root_token})
    worker_token = bao.token(bao.policy("worker"))
    readings = list(simulate(meters=20, readings=N, seed=7))
    with running_rig(data, BAO_TOKEN=worker_token, METERSEAL_DEK_MAX_RECORDS="300", METERSEAL_CHECKPOINT_S="2") as rig:
        log = data / "worker.log"
        rig.wait_for(lambda: "worker ready" in log.read_text(), "the worker to start")
        producer = Producer(rig.broker.bootstrap)

        def produce() -> None:
            for r in paced(readings, 1000):
                producer.send("readings.raw", encode_reading(r), r["meter_id"].encode())
            producer.flush()

        sender = threading.Thread(target=produce, daemon=True)
        sender.start()
        stored = lambda: rig.query("SELECT count(*) FROM readings")[0][0]  # noqa: E731
        rig.wait_for(lambda: stored() > 500, "readings before the outage")
        bao.stop()  # the key service goes away mid-ingest
        rig.wait_for(lambda: "consumption paused" in log.read_text(), "the worker to pause")
        time.sleep(1.5)  # what was sealed before the pause is stored by now
        paused_at = stored()
        time.sleep(3)
        assert stored() == paused_at < N, "the worker went on sealing with no DEK to be had"
        bao.start()  # back, with its keys (Raft storage), unsealed
        rig.wait_for(lambda: stored() >= N, f"all {N} readings after the outage", timeout=180)
        sender.join(30)
        time.sleep(2)
        assert "consumption resumed" in log.read_text()
        count, distinct = rig.query("SELECT count(*), count(DISTINCT record_id) FROM readings")[0]
        assert (count, distinct) == (N, N), "lost or duplicated readings"
        rig.stop_worker()
        verify = rig.cli("ledger", "verify")  # checkpoints deferred during the outage were signed after it
        assert verify.returncode == 0 and verify.stdout.startswith("ok:"), verify.stdout + verify.stderr
    owner = open_keys(Settings.from_env({}, data_dir=data), role="console", environ={"BAO_TOKEN": bao.root_token})
    store = SegmentStore(data / "store")
    assert verify_opens(store, owner.keyring(store), owner.index_key())["readings"] == N
    index = owner.unlocked()
    from streams.crypto.tokens import BlindIndex

    ids = {BlindIndex(index.index_key).record_id("reading", r["meter_id"], utc_ts(r["ts"])) for r in readings}
    assert {r for (r,) in rig.query("SELECT record_id FROM readings")} == ids
    # nothing in clear on disk: no meter id outside the logs (the broker keeps its data in memory)
    meters = {r["meter_id"].encode() for r in readings}
    for path in data.rglob("*"):
        if path.is_file() and path.suffix != ".log":
            blob = path.read_bytes()
            assert not any(m in blob for m in meters), f"a meter id in clear in {path.relative_to(data)}"
