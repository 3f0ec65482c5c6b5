import json

import pytest

import schemas
from streams.exceptions import InvalidEnvelope
from streams.keys.owner import OwnerKeyPair
from streams.pipeline import BatchState, MeterStates, Pipeline
from streams.seal import Source
from streams.settings import Settings
from streams.store.segments import SegmentStore

OWNER = OwnerKeyPair.generate()
NOW = 1_800_000_000.0


def make(tmp_path, key=bytes(32), **settings):
    s = Settings.from_env({}, data_dir=tmp_path, **settings)
    return Pipeline(s, key, OWNER.public_key, SegmentStore(tmp_path / "store"), clock=lambda: NOW)


def reading(i, kwh=0.4, register=None, meter="m1"):
    return json.dumps({"meter_id": meter, "ts": f"2026-01-{1 + i // 96:02d}T{(i // 4) % 24:02d}:{15 * (i % 4):02d}:00Z",
                       "kwh": kwh, "register_kwh": 100 + 0.4 * i if register is None else register,
                       "region": "north", "category": "Domestic"}).encode()


def feed(p, messages, table, profiles_table, start=0):
    alerts = []
    for i, data in enumerate(messages):
        states = MeterStates(p.states, table)
        profiles = BatchState(p.alerting.profiles, profiles_table)
        out = p.sealer.reading(data, Source("readings.raw", 0, start + i), states.get)
        states.update(out)
        alerts += p.alerting.observe(out, 0, profiles, ingested_ms=1)
        states.flush()
        profiles.flush()
    return alerts


def test_a_rollback_dead_letter_still_raises_an_alert_without_values(tmp_path):
    p = make(tmp_path)
    table, profiles = {}, {}
    assert feed(p, [reading(i) for i in range(10)], table, profiles) == []
    alerts = feed(p, [reading(10, register=50.0)], table, profiles, start=10)
    assert len(alerts) == 1
    key, alert = alerts[0]
    assert alert["kind"] == "rollback" and alert["severity"] == "critical" and alert["kwh"] is None
    assert key == p.index.meter("m1").encode() == alert["meter_tok"].encode()
    encoded = schemas.encode("alert", alert)
    assert schemas.decode("alert", encoded) == alert and b"m1" not in encoded and b"50.0" not in encoded
    # the profile table holds sealed bytes keyed by token, nothing in clear
    assert list(profiles) == [key] and b"m1" not in profiles[key]


def test_values_only_when_configured_and_alert_ids_are_stable(tmp_path):
    p = make(tmp_path / "a", alert_values=True)
    table, profiles = {}, {}
    feed(p, [reading(i) for i in range(10)], table, profiles)
    (_, alert), = feed(p, [reading(10, kwh=-1.0)], table, profiles, start=10)
    assert alert["kind"] == "negative" and alert["kwh"] == -1.0
    q = make(tmp_path / "b")
    (_, again), = feed(q, [reading(i) for i in range(10)] + [reading(10, kwh=-1.0)], {}, {})
    assert again["alert_id"] == alert["alert_id"] and again["kwh"] is None


def test_detector_survives_save_and_load_and_fails_closed_on_another_key(tmp_path):
    p = make(tmp_path)
    table, profiles = {}, {}
    feed(p, [reading(i, kwh=0.4 + 0.01 * (i % 5)) for i in range(300)], table, profiles)
    before = p.alerting.detector(0)
    assert p.alerting.save() == 1 and p.alerting.model_path(0).exists()
    q = make(tmp_path)
    loaded = q.alerting.detector(0)
    assert loaded is not before and loaded._seen == before._seen == 300
    wrong = make(tmp_path, key=bytes([1]) * 32)
    with pytest.raises(InvalidEnvelope):
        wrong.alerting.detector(0)
