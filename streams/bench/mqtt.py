"""``meterseal bench mqtt``: the MQTT bridge beside a bare MQTT subscriber on the same broker, in the same run;
publish -> sealed latency at 80 % of what the path sustains; the cost of checking a device signature per reading.

Throughput is measured on a **backlog**: the fleet publishes N signed readings while the consumer's persistent
session is disconnected, then the consumer connects and drains them — so neither the fleet's publishing speed nor a
rate limit is measured, only how fast each consumer takes QoS 1 messages off the broker. The bare subscriber
(paho-mqtt, acknowledging each message as it arrives, same Receive Maximum) is the ceiling of a Python MQTT
consumer here; the bridge in addition produces each message to Kafka with acks=all and acknowledges only after.
The worker is not running meanwhile (on two cores it would take CPU from both). Then one worker seals that backlog,
and, as the worker's own A/B, backlogs of unsigned and of signed readings produced straight to readings.raw in
turn (``worker_unsigned_per_s``, ``worker_signed_per_s``: the best of the rounds; from its first new row to the
last). Latency: the fleet publishes at 80 % of the slower of the bridge and the worker (on one machine the worker
is the narrower: above its rate the latency only measures a growing queue) through the bridge into the running
worker; a reading's latency is its sealed record's ``sealed_at_ms`` minus the moment it was published (one clock:
one machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from streams.bench.micro import rate

PASSPHRASE = "bench"


def _metric(port: int, name: str) -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.split(" ")[0] in (name, name + "_total"):
            return float(line.split()[-1])
    return None


@contextlib.contextmanager
def _setup(meters: int):
    """A data dir with a keystore and ``meters`` registered ES256 device keys, the embedded broker, Mosquitto with
    TLS client certificates: yields (data dir, Kafka broker, Mosquitto, {meter: DeviceKey})."""
    from streams.devices.keys import DeviceKey
    from streams.devices.registry import add_device
    from streams.ingest.broker import EmbeddedBroker, ensure_topics
    from streams.keys.keystore import Keystore
    from streams.mqtt.fleet import fleet_meters
    from streams.mqtt.mosquitto import Mosquitto
    from streams.mqtt.pki import make_pki
    from streams.store.segments import SegmentStore

    with tempfile.TemporaryDirectory(prefix="meterseal-bench-mqtt-") as tmp:
        data = Path(tmp)
        keystore = Keystore.init(data, PASSPHRASE)
        ids = fleet_meters(meters)
        keys = {m: DeviceKey.generate("ES256") for m in ids}
        store, signer = SegmentStore(data / "store"), keystore.ledger_signer(PASSPHRASE)
        index_key = keystore.index_key(PASSPHRASE)
        for meter, key in keys.items():
            add_device(store, signer=signer, index_key=index_key, meter_id=meter, public_key=key.public_key)
        with EmbeddedBroker(log_path=data / "broker.log") as broker, \
                Mosquitto(data / "mosquitto", pki=make_pki(data / "pki", ids)) as mosquitto:
            ensure_topics(broker.bootstrap, 4)
            yield data, broker, mosquitto, keys


def _env(data: Path, broker: Any, mosquitto: Any, metrics: int) -> dict[str, str]:
    cert, key = mosquitto.pki.pair("bridge")
    return {**os.environ, "METERSEAL_DATA_DIR": str(data), "METERSEAL_BROKER": broker.url,
            "METERSEAL_PASSPHRASE": PASSPHRASE, "METERSEAL_MQTT_URL": mosquitto.url,
            "METERSEAL_MQTT_CA": str(mosquitto.pki.ca), "METERSEAL_MQTT_CERT": str(cert),
            "METERSEAL_MQTT_KEY": str(key), "METERSEAL_MQTT_CLIENT_ID": "bench-bridge",
            "METERSEAL_METRICS_PORT": str(metrics)}


def _start_bridge(data: Path, environ: dict[str, str], metrics: int, *, wait: bool = True) -> subprocess.Popen:
    with open(data / "bridge.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "bridge", "mqtt"], env=environ, stdout=log,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while wait and _metric(metrics, "meterseal_bridge_connected") != 1:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the bridge did not start: " + (data / "bridge.log").read_text()[-1500:])
        time.sleep(0.02)
    return proc


def _start_worker(data: Path, environ: dict[str, str]) -> subprocess.Popen:
    with open(data / "worker.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], stdout=log, stderr=subprocess.STDOUT,
                                env={k: v for k, v in environ.items() if k != "METERSEAL_METRICS_PORT"})


def _produce(broker: Any, messages: list[tuple[bytes, bytes]]) -> None:
    """Messages straight to readings.raw (as `meterseal ingest` or a gateway would), keyed by meter."""
    from streams.ingest.broker import Producer

    producer = Producer(broker.bootstrap)
    for key, value in messages:
        producer.send("readings.raw", value, key)
    producer.close()


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _publish(fleet: Any, readings: list[dict[str, Any]], *, per_s: float | None = None,
             sent_at: dict[tuple[str, str], float] | None = None, bare: bool = False) -> None:
    """Publish ``readings`` (signed) from their meters; ``bare``: under ``meters/<id>/bare``, which only the bare
    subscriber reads (the bridge's session would queue them too)."""
    from streams.mqtt.fleet import paced

    for reading in paced(readings, per_s, fleet.pump):
        topic, payload = fleet.message(reading)
        if bare:
            topic = topic.rsplit("/", 1)[0] + "/bare"
        fleet.publish(reading["meter_id"], topic, payload)
        if sent_at is not None:
            sent_at[(reading["meter_id"], reading["ts"])] = time.time()
    if fleet.drain(300):
        raise RuntimeError("the broker did not acknowledge every reading")


def _history(meters: int, n: int) -> list[dict[str, Any]]:
    """One fleet history of ``n`` readings in time order: each phase takes the next slice, so every meter's time,
    register and device_seq go on rising from phase to phase."""
    from streams.ingest.sources import simulate

    return list(simulate(meters=meters, readings=n))


def _bare_drain(mosquitto: Any, fleet: Any, readings: list[dict[str, Any]], settings: Any) -> float:
    """Readings/s a bare paho subscriber (auto-acknowledging QoS 1) takes a backlog of ``readings`` off the broker."""
    from streams.mqtt.bridge import connect_properties, mqtt_client

    cert, key = (str(p) for p in mosquitto.pki.pair("bridge"))
    got = [0, 0.0]

    def on_message(client, userdata, message) -> None:
        got[0] += 1
        got[1] = time.perf_counter()

    def client(clean: bool):
        c = mqtt_client("bench-bare", settings, cert=cert, key=key)
        c.on_message = on_message
        c.connect("127.0.0.1", mosquitto.port, clean_start=clean,
                  properties=connect_properties(session_expiry_s=3600, receive_maximum=settings.mqtt_in_flight))
        return c

    c = client(True)  # the persistent session and its subscription, then away
    subscribed = []
    c.on_subscribe = lambda *args: subscribed.append(True)
    c.subscribe(settings.mqtt_topic.replace("/readings", "/bare"), qos=1)
    deadline = time.monotonic() + 30
    while not subscribed and time.monotonic() < deadline:
        c.loop(0.1)
    c.disconnect()
    c.loop(0.1)
    _publish(fleet, readings, bare=True)
    c = client(False)
    started = time.perf_counter()
    c.loop_start()
    deadline = time.monotonic() + 300
    while got[0] < len(readings) and time.monotonic() < deadline:
        time.sleep(0.01)  # (not pumping the fleet: its Python would take the GIL from the subscriber's thread)
    c.loop_stop()
    c.disconnect()
    return len(readings) / (got[1] - started)


def _bridge_drain(data: Path, environ: dict[str, str], metrics: int, fleet: Any,
                  readings: list[dict[str, Any]]) -> float:
    """Readings/s the bridge takes a backlog off the broker into Kafka (forwarded = Kafka confirmed, then acked):
    from the last moment its metrics showed nothing received to the moment they show the backlog forwarded."""
    _publish(fleet, readings)
    proc = _start_bridge(data, environ, metrics, wait=False)  # its metrics are served before it connects
    try:
        started = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            received, forwarded = (_metric(metrics, f"meterseal_bridge_{m}") for m in ("received", "forwarded"))
            now = time.perf_counter()
            if not received:
                started = now
            elif (forwarded or 0) >= len(readings):
                break
            if proc.poll() is not None:
                raise RuntimeError("the bridge stopped: " + (data / "bridge.log").read_text()[-1500:])
            fleet.pump(0.005)
        if started is None:
            raise RuntimeError("the bridge's metrics never showed it before its first message")
        seconds = now - started
    finally:
        _stop(proc)
    return len(readings) / seconds


def bench_verify(n: int = 2_000) -> dict[str, Any]:
    """µs per reading: a device signature verified (ES256, Ed25519), the whole device check (envelope, registry,
    signature, window) and, for scale, sealing one reading a batch at a time, all in this run."""
    import tempfile

    from ledger.note import Signer

    from streams.crypto.envelope import DekRing
    from streams.crypto.tokens import BlindIndex
    from streams.devices import signed
    from streams.devices.keys import DeviceKey
    from streams.devices.registry import Directory, add_device
    from streams.devices.verify import DeviceCheck
    from streams.pipeline import BatchState
    from streams.seal import Sealer, Source, StateCodec
    from streams.store.segments import SegmentStore
    from streams.devices import counters
    from streams.validate import Policy

    out: dict[str, Any] = {}
    reading = {"meter_id": "m1", "region": "north", "category": "Domestic", "kwh": 0.25}
    raw = [json.dumps({**reading, "ts": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z", "register_kwh": i}).encode()
           for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        for alg in ("ES256", "Ed25519"):
            key = DeviceKey.generate(alg)
            messages = [signed.sign_reading(json.loads(r), key, seq=i) for i, r in enumerate(raw)]
            envelopes = [signed.parse(m) for m in messages]
            public = key.public_key
            verify = max(rate(n, lambda: [public.verify(e.payload, e.sig) for e in envelopes])[0] for _ in range(3))
            store = SegmentStore(Path(tmp) / alg)
            add_device(store, signer=Signer.generate("bench"), index_key=bytes(32), meter_id="m1", public_key=public)
            directory = Directory(store, bytes(32))
            directory.refresh()
            check = DeviceCheck(directory.get, BlindIndex(bytes(32)))
            codec = StateCodec(bytes(32), key_id=b"meterseal-devseq", pack=counters.pack, unpack=counters.unpack)

            def check_all() -> None:
                for i in range(0, n, 500):
                    check.check_all(messages[i:i + 500], BatchState(codec, {}))

            whole = max(rate(n, check_all)[0] for _ in range(3))
            out[alg] = {"verify_us": round(1e6 / verify, 1), "device_check_us": round(1e6 / whole, 1)}
    sealer = Sealer(BlindIndex(bytes(32)), DekRing(100_000, 3600, lambda k: None), Policy(frozenset({"north"})),
                    clock=lambda: 1.8e9)
    sources = [Source("readings.raw", 0, 0)] * 500
    seal = max(rate(n, lambda: [sealer.readings(raw[i:i + 500], sources) for i in range(0, n, 500)])[0]
               for _ in range(3))
    out["seal_us"] = round(1e6 / seal, 1)
    return out


def bench_mqtt(readings: int = 20_000, meters: int = 200, *, rounds: int = 2, latency_s: float = 20.0,
               progress: Callable[[str], None] = lambda step: None) -> dict[str, Any]:
    import numpy as np

    from streams.crypto.tokens import BlindIndex
    from streams.ingest.broker import free_port
    from streams.ingest.produce import encode_reading
    from streams.keys.keystore import Keystore
    from streams.mqtt.bridge import parse_url
    from streams.mqtt.fleet import Fleet
    from streams.settings import Settings
    from streams.store.segments import connect
    from streams.validate import utc_ts

    progress("setting up: keystore, device keys, Mosquitto with client certificates, the embedded broker")
    with _setup(meters) as (data, broker, mosquitto, keys):
        settings = Settings.from_env({}, mqtt_url=mosquitto.url, mqtt_ca=str(mosquitto.pki.ca))
        fleet = Fleet(settings, parse_url(mosquitto.url), list(keys), pki=mosquitto.pki, keys=keys)
        fleet.connect()
        metrics = free_port()
        environ = _env(data, broker, mosquitto, metrics)
        _stop(_start_bridge(data, environ, metrics))  # its persistent session and subscription, then away
        history = _history(meters, (4 * rounds + 2) * readings)
        chunks = iter([history[i:i + readings] for i in range(0, 4 * rounds * readings, readings)])

        def stored() -> int:
            if not (data / "store" / "readings").exists():
                return 0
            con = connect(data / "store")
            try:
                return con.execute("SELECT count(*) FROM readings").fetchone()[0]
            finally:
                con.close()

        def drained(before: int, total: int) -> float:
            """Readings/s the worker stores from ``before`` to ``total`` rows, from its first new row."""
            deadline = time.monotonic() + 900
            while (now := stored()) <= before and time.monotonic() < deadline:
                fleet.pump(0.1)
            first, start_rows = time.monotonic(), now
            while stored() < total and time.monotonic() < deadline:
                fleet.pump(0.2)
            return (total - start_rows) / (time.monotonic() - first)

        bare, bridge = [], []
        for r in range(rounds):  # alternating, so a noisy neighbour hurts both alike; the best round counts
            progress(f"round {r + 1}: a backlog of {readings} signed readings drained by a bare subscriber")
            bare.append(_bare_drain(mosquitto, fleet, next(chunks), settings))
            progress(f"round {r + 1}: a backlog of {readings} signed readings drained by the bridge into Kafka")
            bridge.append(_bridge_drain(data, environ, metrics, fleet, next(chunks)))
        bridge_rate = max(bridge)
        progress("a worker seals the bridge's backlog of signed readings")
        worker = _start_worker(data, environ)
        try:
            queued = rounds * readings
            drained(0, queued)  # (also its warm-up)
            unsigned, signed = [], []
            for r in range(rounds):  # the worker on unsigned and signed backlogs, alternating, produced to Kafka
                progress(f"round {r + 1}: the worker on {readings} unsigned, then {readings} signed readings")
                _produce(broker, [(x["meter_id"].encode(), encode_reading(x)) for x in next(chunks)])
                unsigned.append(drained(queued, queued + readings))
                queued += readings
                _produce(broker, [(x["meter_id"].encode(), fleet.message(x)[1]) for x in next(chunks)])
                signed.append(drained(queued, queued + readings))
                queued += readings
            unsigned_rate, worker_rate = max(unsigned), max(signed)
            # 80 % of what the whole path can sustain: the slower of the bridge and the worker (above it, the
            # latency measures a growing queue)
            target = 0.8 * min(bridge_rate, worker_rate)
            n = min(int(target * latency_s), 2 * readings)
            progress(f"latency: {n} signed readings at {target:.0f}/s (80 % of min(bridge, worker)) publish -> sealed")
            proc = _start_bridge(data, environ, metrics)
            sent_at: dict[tuple[str, str], float] = {}
            batch = history[4 * rounds * readings:][:n]
            started = time.perf_counter()
            try:
                _publish(fleet, batch, per_s=target, sent_at=sent_at)
                achieved = n / (time.perf_counter() - started)
                deadline = time.monotonic() + 600
                while stored() < queued + n and time.monotonic() < deadline:
                    fleet.pump(0.2)
            finally:
                _stop(proc)
        finally:
            _stop(worker)
        fleet.close()
        index = BlindIndex(Keystore.load(data).index_key(PASSPHRASE))
        published = {index.record_id("reading", m, utc_ts(ts)): at for (m, ts), at in sent_at.items()}
        con = connect(data / "store")
        try:
            rows = con.execute("SELECT record_id, sealed_at_ms FROM readings").fetchall()
        finally:
            con.close()
        latencies = [ms - published[rid] * 1000 for rid, ms in rows if rid in published]
    progress("signature verification per reading (ES256, Ed25519) beside sealing, in this process")
    verify = bench_verify()

    def pct(q: float) -> float:
        return round(float(np.percentile(latencies, q)), 1) if latencies else float("nan")

    return {"readings": readings, "meters": meters, "rounds": rounds,
            "bare_subscriber_per_s": round(max(bare)), "bridge_per_s": round(bridge_rate),
            "bridge_vs_bare": round(bridge_rate / max(bare), 2),
            "bare_rounds": [round(x) for x in bare], "bridge_rounds": [round(x) for x in bridge],
            "worker_signed_per_s": round(worker_rate), "worker_unsigned_per_s": round(unsigned_rate),
            "worker_signed_vs_unsigned": round(worker_rate / unsigned_rate, 2),
            "worker_rounds": [[round(u), round(x)] for u, x in zip(unsigned, signed)],
            "latency_target_per_s": round(target), "latency_achieved_per_s": round(achieved),
            "latency_readings": n, "latency_sealed": len(latencies),
            "publish_to_sealed_ms_p50": pct(50), "publish_to_sealed_ms_p99": pct(99),
            "verify_us_es256": verify["ES256"]["verify_us"], "verify_us_ed25519": verify["Ed25519"]["verify_us"],
            "device_check_us_es256": verify["ES256"]["device_check_us"],
            "device_check_us_ed25519": verify["Ed25519"]["device_check_us"], "seal_us_unsigned": verify["seal_us"],
            "note": "signed readings (ES256) from per-meter TLS clients on one Mosquitto; throughput = a backlog "
                    "drained (bare: paho auto-ack; bridge: Kafka acks=all, then PUBACK); worker_signed/unsigned_per_s = one "
                    "worker sealing backlogs of signed and unsigned readings in turn (best round); "
                    "latency = sealed_at_ms - publish time at 80 % of the slower of bridge and worker; *_us = CPU µs "
                    "a reading in this process (device_check: envelope, registry, signature, window)"}
