"""``meterseal simulate meters``: a simulated fleet publishing its readings over MQTT, one client per meter.

Each meter connects as itself (with ``mqtts://``: its own client certificate, whose common name the broker takes as
the user name, so the ACL lets it write under its own topic only), keeps a persistent session, and publishes each
reading with QoS 1 under the bridge's topic filter with its id in the ``+`` level (``meters/SIM-00007/readings``).
With ``sign``, each reading goes out in the signed envelope under the meter's key (``device keygen --meters N``),
its ``device_seq`` the reading's interval number since 1970 (one more per reading, and a later run goes on
counting where an earlier one stopped).

All clients live in one thread: one ``select`` over their sockets per round (paho's external-loop calls), so two
hundred meters cost one process, not two hundred threads. A client that loses the broker reconnects by itself and
paho sends its unacknowledged messages again (MQTT 5, clean start only on the first connection).
"""

from __future__ import annotations

import datetime as dt
import select
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from streams.devices.keys import DeviceKey
from streams.devices.signed import sign_reading
from streams.exceptions import ConfigError
from streams.ingest.sources import simulate
from streams.mqtt.bridge import Endpoint, connect_properties, mqtt_client
from streams.mqtt.pki import Pki
from streams.settings import Settings


def fleet_meters(n: int) -> list[str]:
    """The meter ids of ``simulate``'s fleet of ``n`` meters (its first round of readings names each once)."""
    return [r["meter_id"] for r in islice(simulate(meters=n, readings=n), n)]


def topic_of(topic_filter: str, meter: str) -> str:
    return topic_filter.replace("+", meter, 1)


def device_seq(ts: str, interval_min: int) -> int:
    return int(dt.datetime.fromisoformat(ts).timestamp() // (interval_min * 60))


@dataclass
class Meter:
    meter_id: str
    client: Any
    key: DeviceKey | None = None
    connected: bool = False
    next_try: float = 0.0
    acked: int = 0
    failed: int = 0  # PUBACKs with an error reason (the broker's ACL refused the topic)


@dataclass
class Fleet:
    """``meters`` connected to ``endpoint`` (``pki``: per-meter client certificates for TLS; else the meter id as
    the user name). ``keys``: meter id -> ``DeviceKey`` to sign with."""

    settings: Settings
    endpoint: Endpoint
    meter_ids: list[str]
    pki: Pki | None = None
    keys: dict[str, DeviceKey] | None = None
    interval_min: int = 15
    meters: dict[str, Meter] = field(default_factory=dict)
    published: int = 0

    def connect(self, timeout: float = 60.0) -> None:
        for meter_id in self.meter_ids:
            cert = key = None
            if self.pki is not None:
                cert, key = (str(p) for p in self.pki.pair(meter_id))
                if not Path(cert).exists():
                    raise ConfigError(f"no client certificate for meter {meter_id} in {self.pki.directory}: "
                                      f"`meterseal mqtt pki --out {self.pki.directory} --meters {len(self.meter_ids)}`")
            client = mqtt_client(f"meter-{meter_id}", self.settings.replace(mqtt_ca=str(self.pki.ca) if self.pki else
                                                                            self.settings.mqtt_ca),
                                 endpoint=self.endpoint, cert=cert, key=key)
            if not self.endpoint.tls:
                client.username_pw_set(meter_id)
            client.max_inflight_messages_set(100)
            meter = self.meters[meter_id] = Meter(meter_id, client, (self.keys or {}).get(meter_id))
            client.on_connect = lambda c, u, f, rc, p, m=meter: setattr(m, "connected", not rc.is_failure)
            client.on_disconnect = lambda c, u, f, rc, p, m=meter: setattr(m, "connected", False)
            client.on_publish = lambda c, u, mid, rc, p, m=meter: self._acked(m, rc)
            if self.keys is not None and meter.key is None:
                raise ConfigError(f"no signing key for meter {meter_id}: `meterseal device keygen --meters N --out DIR`")
            client.connect(self.endpoint.host, self.endpoint.port, keepalive=30,
                           properties=connect_properties(session_expiry_s=3600))
        deadline = time.monotonic() + timeout
        while not all(m.connected for m in self.meters.values()):
            if time.monotonic() > deadline:
                down = [m.meter_id for m in self.meters.values() if not m.connected]
                raise ConfigError(f"{len(down)} meter(s) could not connect to {self.endpoint.host}:{self.endpoint.port} "
                                  f"(first: {down[0]}): is the broker up, are the certificates its CA's?")
            self.pump(0.05)

    @staticmethod
    def _acked(meter: Meter, rc: Any) -> None:
        if rc.is_failure:
            meter.failed += 1
        else:
            meter.acked += 1

    def message(self, reading: dict[str, Any]) -> tuple[str, bytes]:
        """(topic, payload) of a reading: JSON, or the signed envelope of the meter's key."""
        import json

        meter = self.meters[reading["meter_id"]]
        reading = {k: v for k, v in reading.items() if v is not None}
        if meter.key is not None:
            data = sign_reading(reading, meter.key, seq=device_seq(reading["ts"], self.interval_min))
        else:
            data = json.dumps(reading, separators=(",", ":")).encode()
        return topic_of(self.settings.mqtt_topic, meter.meter_id), data

    def publish(self, meter_id: str, topic: str, payload: bytes) -> None:
        self.meters[meter_id].client.publish(topic, payload, qos=1)
        self.published += 1

    def pump(self, timeout: float = 0.0) -> None:
        """One round of network I/O for every client: reads, writes, keepalives, reconnects."""
        now = time.monotonic()
        socks: dict[Any, Meter] = {}
        for m in self.meters.values():
            sock = m.client.socket()
            if sock is None:
                if now >= m.next_try:  # lost the broker: try again every second
                    m.next_try = now + 1.0
                    try:
                        m.client.reconnect()
                    except OSError:
                        continue
                    sock = m.client.socket()
                if sock is None:
                    continue
            socks[sock] = m
        if not socks:
            time.sleep(timeout)
            return
        pending = [s for s in socks if hasattr(s, "pending") and s.pending()]
        readable, writable, _ = select.select(list(socks), [s for s, m in socks.items() if m.client.want_write()], [],
                                              0 if pending else timeout)
        for sock in set(readable) | set(pending):
            socks[sock].client.loop_read(100)
        for sock in writable:
            socks[sock].client.loop_write()
        for m in socks.values():
            m.client.loop_misc()

    @property
    def acked(self) -> int:
        return sum(m.acked + m.failed for m in self.meters.values())

    @property
    def refused(self) -> int:
        return sum(m.failed for m in self.meters.values())

    def drain(self, timeout: float = 60.0) -> int:
        """Pump until every published message is acknowledged by the broker; returns how many are not."""
        deadline = time.monotonic() + timeout
        while self.acked < self.published and time.monotonic() < deadline:
            self.pump(0.05)
        return self.published - self.acked

    def close(self) -> None:
        for m in self.meters.values():
            m.client.disconnect()
        for _ in range(5):
            self.pump(0.01)


def paced(items: Iterable[Any], rate: float | None, pump: Callable[[float], None]) -> Iterator[Any]:
    """``items`` at ``rate`` per second (None: as fast as possible), pumping the network while waiting."""
    start = time.monotonic()
    for i, item in enumerate(items):
        if rate:
            while (delay := start + i / rate - time.monotonic()) > 0:
                pump(min(delay, 0.02))
        elif i % 50 == 0:
            pump(0)
        yield item


def load_keys(directory: Path | str, meters: Iterable[str]) -> dict[str, DeviceKey]:
    """Each meter's signing key, ``DIR/<meter>.key`` (``meterseal device keygen --meters N --out DIR``)."""
    keys = {}
    for meter in meters:
        path = Path(directory) / f"{meter}.key"
        if not path.exists():
            raise ConfigError(f"no key for meter {meter} in {directory}: `meterseal device keygen --meters N --out "
                              f"{directory}` (and `meterseal device add --keys {directory}`)")
        keys[meter] = DeviceKey.read(path)
    return keys


def run_fleet(settings: Settings, *, meters: int, readings: int, rate: float | None, sign_keys: Path | None = None,
              pki: Pki | None = None, anomaly_rate: float = 0.0, interval_min: int = 15, seed: int = 7,
              on_sent: Callable[[dict[str, Any], float], None] | None = None,
              progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Publish ``readings`` readings of a fleet of ``meters`` at ``rate`` per second; returns a summary once the
    broker acknowledged every one (``on_sent(reading, time.time())`` after each publish, for latency)."""
    from streams.mqtt.bridge import parse_url

    endpoint = parse_url(settings.mqtt_url)
    if endpoint.tls and pki is None:
        raise ConfigError("mqtts:// needs the meters' client certificates: --certs DIR (`meterseal mqtt pki`)")
    ids = fleet_meters(meters)
    fleet = Fleet(settings, endpoint, ids, pki=pki, keys=load_keys(sign_keys, ids) if sign_keys else None,
                  interval_min=interval_min)
    started = time.monotonic()
    fleet.connect()
    connected_s = time.monotonic() - started
    stream = simulate(meters=meters, readings=readings, regions=settings.regions, interval_min=interval_min,
                      anomaly_rate=anomaly_rate, seed=seed)
    began = time.monotonic()
    try:
        for reading in paced(stream, rate, fleet.pump):
            topic, payload = fleet.message(reading)
            fleet.publish(reading["meter_id"], topic, payload)
            if on_sent is not None:
                on_sent(reading, time.time())
            if progress is not None and fleet.published % 1000 == 0:
                progress(fleet.published)
        sent_s = time.monotonic() - began
        unacked = fleet.drain()
    finally:
        fleet.close()
    return {"meters": meters, "published": fleet.published, "acknowledged": fleet.acked - fleet.refused,
            "refused_by_broker": fleet.refused, "unacknowledged": unacked, "signed": sign_keys is not None,
            "connect_s": round(connected_s, 2), "publish_s": round(sent_s, 2),
            "rate_per_s": round(fleet.published / sent_s, 1) if sent_s else None}
