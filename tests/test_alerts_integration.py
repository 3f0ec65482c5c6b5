"""Anomaly alerts end to end: raw readings on the embedded broker, a real worker, the alerts topic."""

from __future__ import annotations

import datetime as dt
import json

import pytest

import schemas
from streams.ingest import sources
from streams.ingest.broker import Producer
from streams.ingest.produce import encode_reading

from .rig import running_rig

pytestmark = pytest.mark.broker
END = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0) - dt.timedelta(hours=3)


def produce(rig, readings) -> None:
    producer = Producer(rig.broker.bootstrap)
    for r in readings:
        producer.send("readings.raw", encode_reading(r), r["meter_id"].encode())
    producer.flush()


def alerts(rig) -> list[dict]:
    return [schemas.decode("alert", m.value()) for m in rig.scan("alerts")]


def after(last: dict, minutes: int, kwh: float) -> dict:
    """The next reading of ``last``'s meter, ``minutes`` later, with a consistent register."""
    ts = dt.datetime.fromisoformat(last["ts"]) + dt.timedelta(minutes=minutes)
    return {**last, "ts": ts.isoformat(), "kwh": kwh, "register_kwh": round(last["register_kwh"] + kwh, 6)}


def test_spike_alerts_and_a_restarted_worker_keeps_its_detector(tmp_path):
    # 8 meters x 600 quarter-hours: every partition's model and every meter's profile are warm
    fleet = list(sources.simulate(meters=8, readings=4800, end=END, seed=11))
    last = {r["meter_id"]: r for r in fleet}
    with running_rig(tmp_path, METERSEAL_CHECKPOINT_S="2") as rig:
        produce(rig, fleet)
        rig.wait_for(lambda: rig.consumed("readings.raw"), "the fleet to be sealed", timeout=120)
        warm = alerts(rig)
        assert len(warm) < 0.02 * len(fleet), "normal data should raise few alerts"

        meter = "SIM-00000"
        spike = after(last[meter], 15, round(last[meter]["kwh"] * 30 + 2, 6))
        produce(rig, [spike])
        tok = rig.index.meter(meter)
        found = rig.wait_for(lambda: [a for a in alerts(rig) if a["meter_tok"] == tok and a["ts"].startswith(spike["ts"][:16])],
                             "an alert for the spike")
        assert found[0]["kind"] == "spike" and found[0]["kwh"] is None
        assert all(meter not in json.dumps(a) for a in alerts(rig))  # meter ids never appear on alerts

        # restart: profiles come back from the changelog, models from the store; old events are not re-alerted
        before = alerts(rig)
        rig.stop_worker()
        rig.start_worker()
        ids = {a["alert_id"] for a in before}
        normal = after(spike, 15, last[meter]["kwh"])
        second = after(normal, 75, round(last[meter]["kwh"] * 30 + 2, 6))  # over an hour later: a new alert
        rollback = {**after(second, 15, 0.1), "meter_id": "SIM-00001", "register_kwh": 1.0,
                    "region": last["SIM-00001"]["region"], "category": last["SIM-00001"]["category"]}
        rollback["ts"] = after(last["SIM-00001"], 15, 0.1)["ts"]
        produce(rig, [normal, second, rollback])
        rig.wait_for(lambda: any(a["ts"] == dt.datetime.fromisoformat(second["ts"]).isoformat() for a in alerts(rig)),
                     "an alert for the spike after the restart", timeout=120)
        now = alerts(rig)
        assert {a["alert_id"] for a in before} <= {a["alert_id"] for a in now}
        assert len(now) == len({a["alert_id"] for a in now}), "an old event was alerted twice"
        new = [a for a in now if a["alert_id"] not in ids]
        assert {a["kind"] for a in new} >= {"spike"}
        # the rollback is a dead letter *and* a critical alert
        rig.wait_for(lambda: any(a["kind"] == "rollback" for a in alerts(rig)), "the rollback alert")
