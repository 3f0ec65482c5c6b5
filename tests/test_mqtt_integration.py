"""From the meter to the signed ledger through a real Mosquitto (TLS client certificates, the per-meter ACL), real
bridge processes, the embedded broker and a real worker. Marked ``mqtt`` (Mosquitto: ``apt-get install -y
mosquitto``; skipped without it) and ``broker`` where a worker runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from streams.devices import signed
from streams.devices.keys import DeviceKey
from streams.devices.proof import check_signed_reading
from streams.devices.registry import add_device, revoke_device
from streams.ingest.broker import consume, free_port
from streams.keys.keystore import Keystore
from streams.mqtt.bridge import connect_properties, mqtt_client, parse_url
from streams.mqtt.fleet import Fleet, fleet_meters, topic_of
from streams.settings import Settings
from streams.store.query import Reader
from streams.store.segments import SegmentStore
from streams.validate import utc_ts

from .rig import PASSPHRASE, running_rig

pytestmark = pytest.mark.mqtt


# --- helpers ---------------------------------------------------------------------------------------------------


def _settings(broker) -> Settings:
    return Settings.from_env({}, mqtt_url=broker.url, mqtt_ca=str(broker.pki.ca))


def _fleet(broker, meters: list[str], keys: dict[str, DeviceKey] | None = None) -> Fleet:
    fleet = Fleet(_settings(broker), parse_url(broker.url), meters, pki=broker.pki, keys=keys)
    fleet.connect()
    return fleet


def _publish_all(fleet: Fleet, readings, *, rate: float | None = None, every=None) -> None:
    """Publish each reading from its meter (``every(n)`` after each), then wait for every PUBACK."""
    start = time.monotonic()
    for n, reading in enumerate(readings, 1):
        topic, payload = fleet.message(reading)
        fleet.publish(reading["meter_id"], topic, payload)
        if rate:
            while time.monotonic() < start + n / rate:
                fleet.pump(0.005)
        elif n % 50 == 0:
            fleet.pump(0)
        if every:
            every(n)
    assert fleet.drain(120) == 0, "the broker did not acknowledge every reading"


def _bridge(rig, broker, client_id: str, *, log: str, group: str | None = "bridges", wait: bool = True,
            **env) -> tuple[subprocess.Popen, int]:
    """A `meterseal bridge mqtt` process (the bridge's own certificate) and its metrics port; ``wait``: until it
    is connected."""
    port = free_port()
    cert, key = broker.pki.pair("bridge")
    environ = {**rig.environ, "METERSEAL_MQTT_URL": broker.url, "METERSEAL_MQTT_CA": str(broker.pki.ca),
               "METERSEAL_MQTT_CERT": str(cert), "METERSEAL_MQTT_KEY": str(key), "METERSEAL_MQTT_CLIENT_ID": client_id,
               "METERSEAL_METRICS_PORT": str(port), **env}
    if group:
        environ["METERSEAL_MQTT_SHARE_GROUP"] = group
    with open(rig.data_dir / log, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "bridge", "mqtt"], env=environ, stdout=fh,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while wait and _metric(port, "meterseal_bridge_connected") != 1:
        assert proc.poll() is None, (rig.data_dir / log).read_text()[-2000:]
        assert time.monotonic() < deadline, "the bridge did not connect"
        time.sleep(0.2)
    return proc, port


def _metric(port: int, name: str) -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "_total "):
            return float(line.split()[-1])
    return None


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _register(rig, keys: dict[str, DeviceKey]) -> None:
    signer = Keystore.load(rig.data_dir).ledger_signer(PASSPHRASE)
    for meter, key in keys.items():
        add_device(rig.data_dir / "store", signer=signer, index_key=rig.keys.index_key, meter_id=meter,
                   public_key=key.public_key)


def _readings(meters: list[str], per_meter: int) -> list[dict]:
    from streams.ingest.sources import simulate

    return list(simulate(meters=len(meters), readings=len(meters) * per_meter))


def _stored(rig) -> int:
    return rig.query("SELECT count(*) FROM readings")[0][0] if (rig.data_dir / "store" / "readings").exists() else 0


def _dead(rig) -> dict[str, int]:
    if not (rig.data_dir / "store" / "dlq").exists():
        return {}
    return dict(rig.query("SELECT rule, count(*) FROM dlq GROUP BY rule"))


# --- the broker's ACL --------------------------------------------------------------------------------------------


def test_a_meter_cannot_publish_under_another_meters_topic(mosquitto):
    """The ACL (``pattern write meters/%u/#``, user = certificate CN): M-A's message on M-B's topic never reaches a
    subscriber, and the broker says so in the MQTT 5 PUBACK; M-A's own topic works."""
    got = []
    cert, key = mosquitto.pki.pair("bridge")
    sub = mqtt_client("acl-test", _settings(mosquitto), cert=str(cert), key=str(key))
    sub.on_message = lambda c, u, m: got.append(m.topic)
    sub.connect("127.0.0.1", mosquitto.port, properties=connect_properties(session_expiry_s=0))
    sub.subscribe("meters/+/readings", qos=1)
    sub.loop_start()
    try:
        fleet = _fleet(mosquitto, ["M-A"])
        fleet.publish("M-A", topic_of("meters/+/readings", "M-B"), b'{"meter_id": "M-B"}')
        fleet.publish("M-A", topic_of("meters/+/readings", "M-A"), b'{"meter_id": "M-A"}')
        assert fleet.drain(10) == 0
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert got == ["meters/M-A/readings"]
        assert fleet.refused == 1  # PUBACK reason "not authorized"
        fleet.close()
    finally:
        sub.loop_stop()
        sub.disconnect()


# --- two bridges in one shared subscription, one killed twice -------------------------------------------------


@pytest.mark.broker
def test_signed_readings_through_two_bridges_while_one_is_killed_twice(tmp_path, mosquitto):
    """20,000 signed readings (half ES256, half Ed25519) from 200 meters, each with its own client certificate,
    through two bridges in one MQTT 5 shared subscription while bridge A is SIGKILLed twice mid-stream and restarted
    (its share waits in its persistent session meanwhile, then arrives late): every reading stored exactly once,
    every one verifiable from its device, no dead letter, `ledger verify` clean."""
    from .test_reliability import _assert_exactly_once

    meters = fleet_meters(200)
    keys = {m: DeviceKey.generate("ES256" if i % 2 else "Ed25519") for i, m in enumerate(meters)}
    readings = _readings(meters, 100)
    assert len(readings) == 20_000
    with running_rig(tmp_path / "data", METERSEAL_CHECKPOINT_S="2") as rig:
        _register(rig, keys)
        a, port_a = _bridge(rig, mosquitto, "bridge-a", log="bridge-a.log")
        b, port_b = _bridge(rig, mosquitto, "bridge-b", log="bridge-b.log")
        fleet = _fleet(mosquitto, meters, keys)
        kills: list[tuple[int, float | None]] = []

        def kill_a(n: int) -> None:
            nonlocal a, port_a
            if n in (5_000, 12_000):
                kills.append((n, _metric(port_a, "meterseal_bridge_received"), _metric(port_a, "meterseal_bridge_in_flight")))
                a.kill()  # SIGKILL: nothing flushed, nothing acknowledged on the way out
                a.wait()
                # the same client id (its persistent session) comes back while the fleet goes on publishing
                a, port_a = _bridge(rig, mosquitto, "bridge-a", log="bridge-a.log", wait=False)

        try:
            _publish_all(fleet, readings, rate=2_000, every=kill_a)
            fleet.close()
            rig.wait_for(lambda: _stored(rig) >= 20_000, "20,000 readings stored", timeout=300)
            time.sleep(5)  # a checkpoint of the last leaves (METERSEAL_CHECKPOINT_S=2)
            assert a.poll() is None and b.poll() is None
            redelivered = [_metric(port, "meterseal_bridge_redelivered") for port in (port_a, port_b)]
        finally:
            _stop(a)
            _stop(b)
        assert all(received and received > 0 for _, received, _ in kills), kills  # killed mid-stream
        # what a killed bridge held unacknowledged comes back from its persistent session (DUP) or, in a shared
        # subscription, may go to the other member (Mosquitto decides): either way the readings below are all stored
        print(f"killed holding {[k[2] for k in kills]} unacknowledged; redelivered (DUP) to A, B: {redelivered}")
        assert _dead(rig) == {}  # redeliveries are not dead letters
        raw = sum(1 for _ in consume(rig.broker.bootstrap, "readings.raw", idle=2.0))
        assert raw >= 20_000
        print(f"readings.raw holds {raw} messages for 20,000 readings: {raw - 20_000} produced twice by a killed bridge")
        _assert_exactly_once(rig, {rig.index.record_id("reading", r["meter_id"], utc_ts(r["ts"])) for r in readings})
        _assert_every_reading_verifies_from_its_device(rig, keys)


def _assert_every_reading_verifies_from_its_device(rig, keys: dict[str, DeviceKey]) -> None:
    from streams.store.segments import connect

    reader = Reader(SegmentStore(rig.data_dir / "store"), rig.keys)
    con = connect(rig.data_dir / "store")
    try:
        cur = con.execute("SELECT * FROM readings")
        columns = [d[0] for d in cur.description]
        rows = [dict(zip(columns, r)) for r in cur.fetchall()]
    finally:
        con.close()
    plains = reader.open_many(rows)
    assert {r["schema_version"] for r in rows} == {3}
    for plain in plains:
        check_signed_reading(plain, keys[plain["meter_id"]].public_key)  # raises on the first that does not hold


# --- bad input over MQTT, and the MQTT broker restarted ----------------------------------------------------


def _at(minute: int, **fields) -> dict:
    return {"meter_id": "M-A", "ts": f"2026-12-01T{minute // 60:02d}:{minute % 60:02d}:00Z", "kwh": 0.25,
            "register_kwh": 100.0 + minute, "region": "north", "category": "Domestic", **fields}


@pytest.mark.broker
def test_bad_input_over_mqtt_is_dead_lettered_and_a_broker_restart_loses_nothing(tmp_path, mosquitto):
    """Each bad message a meter can send, through the bridge, becomes a dead letter with its rule; a redelivered
    signed reading is stored once; then Mosquitto restarts (persistent sessions) and the readings after it arrive."""
    import json

    a_key, b_key = DeviceKey.generate("ES256"), DeviceKey.generate("Ed25519")
    with running_rig(tmp_path / "data", METERSEAL_DEVICE_REFRESH_S="1", METERSEAL_CHECKPOINT_S="2") as rig:
        _register(rig, {"M-A": a_key, "M-B": b_key})
        bridge, port = _bridge(rig, mosquitto, "bridge-bad", log="bridge.log", group=None)
        fleet = _fleet(mosquitto, ["M-A", "M-B"])
        topic_a, topic_b = (topic_of("meters/+/readings", m) for m in ("M-A", "M-B"))
        good = signed.sign_reading(_at(0), a_key, seq=10)
        envelope = signed.parse(good)
        sends = [
            (topic_a, b'{"meter_id": "M-A", "kwh": '),                                             # decode
            (topic_a, json.dumps({**_at(1), "pad": "x" * 70_000}).encode()),                        # size
            (topic_a, signed.encode(envelope._replace(payload=envelope.payload.replace(b"0.25", b"2.5")))),  # signature
            (topic_a, signed.sign_reading(_at(2), b_key, seq=1)),                                   # device: M-B's key
            (topic_a, json.dumps(_at(3, meter_id="M-B")).encode()),                                 # topic
            (topic_a, good), (topic_a, good),                                                       # stored once
            (topic_a, signed.sign_reading(_at(4), a_key, seq=500)),
            (topic_a, good),                                                                        # replay: too old
            (topic_a, signed.sign_reading(_at(5), a_key, seq=5)),                                   # replay: backwards
            (topic_a, json.dumps(_at(6)).encode()),                                                 # unsigned: kept
        ]
        try:
            for topic, payload in sends:
                fleet.publish(topic.split("/")[1], topic, payload)
            assert fleet.drain(30) == 0
            rig.wait_for(lambda: sum(_dead(rig).values()) >= 7 and _stored(rig) >= 3, "the first dead letters")
            revoke_device(rig.data_dir / "store", b_key.public_key.kid, index_key=rig.keys.index_key,
                          signer=Keystore.load(rig.data_dir).ledger_signer(PASSPHRASE))
            time.sleep(2.5)  # METERSEAL_DEVICE_REFRESH_S=1: the worker has seen the revocation
            fleet.publish("M-B", topic_b, signed.sign_reading({**_at(7), "meter_id": "M-B"}, b_key, seq=2))
            assert fleet.drain(30) == 0
            rig.wait_for(lambda: sum(_dead(rig).values()) >= 8, "the revoked device's dead letter")
            assert _dead(rig) == {"decode": 1, "size": 1, "signature": 1, "device": 2, "topic": 1, "replay": 2}

            mosquitto.restart()  # SIGTERM: sessions and queued messages saved, then back on the same port
            after = [signed.sign_reading(_at(10 + i), a_key, seq=600 + i) for i in range(20)]
            for payload in after:
                fleet.publish("M-A", topic_a, payload)
            assert fleet.drain(60) == 0  # the meters' clients reconnected and resent what was not acknowledged
            rig.wait_for(lambda: _stored(rig) >= 3 + 20, "the readings sent after the broker restart")
            assert _metric(port, "meterseal_bridge_connects") >= 2 and bridge.poll() is None
        finally:
            fleet.close()
            _stop(bridge)
        rows = rig.query("SELECT schema_version, count(*) FROM readings GROUP BY 1 ORDER BY 1")
        assert rows == [(2, 1), (3, 22)]  # the unsigned one is marked as such: v2, no device fields


@pytest.mark.broker
def test_kafka_unreachable_the_bridge_holds_its_acks_then_delivers_everything(tmp_path, mosquitto):
    """Kafka is not there yet: the bridge receives, forwards nothing, acknowledges nothing; when Kafka comes up on
    the port it was given, the same bridge delivers every reading, then acknowledges."""
    from streams.keys.keystore import Keystore as _Keystore

    data = tmp_path / "data"
    _Keystore.init(data, PASSPHRASE)
    kafka_port = free_port()
    cert, key = mosquitto.pki.pair("bridge")
    metrics = free_port()
    environ = {**os.environ, "METERSEAL_DATA_DIR": str(data), "METERSEAL_BROKER": f"kafka://127.0.0.1:{kafka_port}",
               "METERSEAL_MQTT_URL": mosquitto.url, "METERSEAL_MQTT_CA": str(mosquitto.pki.ca),
               "METERSEAL_MQTT_CERT": str(cert), "METERSEAL_MQTT_KEY": str(key),
               "METERSEAL_MQTT_CLIENT_ID": "bridge-k", "METERSEAL_METRICS_PORT": str(metrics)}
    with open(tmp_path / "bridge.log", "ab") as fh:
        bridge = subprocess.Popen([sys.executable, "-m", "streams.cli", "bridge", "mqtt"], env=environ, stdout=fh,
                                  stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while _metric(metrics, "meterseal_bridge_connected") != 1:
            assert bridge.poll() is None and time.monotonic() < deadline, (tmp_path / "bridge.log").read_text()[-2000:]
            time.sleep(0.2)
        fleet = _fleet(mosquitto, ["M-A"])
        import json

        for i in range(50):
            fleet.publish("M-A", "meters/M-A/readings", json.dumps(_at(i)).encode())
        assert fleet.drain(30) == 0
        time.sleep(3)
        assert _metric(metrics, "meterseal_bridge_received") == 50
        assert _metric(metrics, "meterseal_bridge_forwarded") == 0 and _metric(metrics, "meterseal_bridge_in_flight") == 50
        with running_rig(data, broker_port=kafka_port) as rig:  # Kafka (and a worker) come up on that port
            rig.wait_for(lambda: _stored(rig) >= 50, "the 50 readings held while Kafka was away", timeout=120)
            deadline = time.monotonic() + 30
            while _metric(metrics, "meterseal_bridge_in_flight") != 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _metric(metrics, "meterseal_bridge_forwarded") == 50 and _metric(metrics, "meterseal_bridge_in_flight") == 0
            assert rig.query("SELECT count(*), count(DISTINCT record_id) FROM readings")[0] == (50, 50)
        fleet.close()
    finally:
        _stop(bridge)
