"""``meterseal bridge mqtt``: readings from an MQTT broker into readings.raw, each acknowledged only once Kafka has it.

The at-least-once chain, link by link:

- the meter publishes with QoS 1 and the broker keeps the message in the bridge's **persistent session** (clean
  start off, a session expiry), so a bridge that stops or is killed gets, when it returns, everything sent while
  it was away and everything it had received but not acknowledged (MQTT redelivers unacknowledged QoS 1
  messages with their packet ids);
- the bridge (paho-mqtt with ``manual_ack``: its network thread never acknowledges on its own — aiomqtt
  acknowledges before the application sees the message, which is the Kafka-connector bug this avoids) produces
  each message to readings.raw, keyed by its meter, with ``acks=all`` and no delivery timeout: a message waits in
  the producer for as long as Kafka is away;
- only the producer's delivery report (Kafka has it) releases the message's PUBACK, in receive order
  (``InOrderAcks``). Kafka away: no acks, the broker's Receive Maximum stops the flow, nothing is dropped.

It is at-least-once, not exactly-once: a bridge killed after Kafka took a message and before the PUBACK left gets
it again and produces it again. The embedded Tansu broker has no idempotent producer and no transactions
(``enable.idempotence`` stays off: librdkafka cannot get a producer id from it), so duplicates are made safe
where they land instead: a reading's record id is an HMAC of meter and time, so the store keeps it once, and a
signed reading's redelivery is told from a replay by its payload (``streams.devices.counters``).

Several bridges share the load through an MQTT 5 **shared subscription** (``$share/GROUP/meters/+/readings``).
Mosquitto 2.0 deals the group's messages round-robin, also to a member that is offline or whose in-flight
window is full: a killed bridge's share waits in its session until it comes back (restart it: systemd,
Kubernetes), and arrives after newer readings of the same meters — which the seal agent accepts (late readings;
the device window). Past the session expiry the broker drops a session's queue: keep it longer than any outage.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlparse

from streams.exceptions import ConfigError
from streams.mqtt.acks import InOrderAcks, Ticket
from streams.mqtt.route import Route, route, sender, sender_level
from streams.settings import Settings

log = logging.getLogger("meterseal.bridge")
RAW_TOPIC = "readings.raw"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool


def parse_url(url: str | None) -> Endpoint:
    """``mqtt://HOST[:1883]`` or ``mqtts://HOST[:8883]``."""
    parsed = urlparse(url or "")
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise ConfigError(f"MQTT URL {url!r}: give mqtt://HOST:PORT or mqtts://HOST:PORT (METERSEAL_MQTT_URL, --url)")
    tls = parsed.scheme == "mqtts"
    return Endpoint(parsed.hostname, parsed.port or (8883 if tls else 1883), tls)


def mqtt_client(client_id: str, settings: Settings, *, manual_ack: bool = False, endpoint: Endpoint | None = None,
                cert: str | None = None, key: str | None = None) -> Any:
    """A paho-mqtt MQTT 5 client with the TLS settings of ``settings`` (CA, client certificate)."""
    import paho.mqtt.client as mqtt

    endpoint = endpoint or parse_url(settings.mqtt_url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack)
    if endpoint.tls:
        client.tls_set(ca_certs=settings.mqtt_ca, certfile=cert or settings.mqtt_cert, keyfile=key or settings.mqtt_key)
    return client


def connect_properties(*, session_expiry_s: int, receive_maximum: int | None = None) -> Any:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return props


class Bridge:
    """One bridge process: ``run(stop)`` blocks until ``stop`` is set, then drains what Kafka still has to confirm
    and leaves its session to the broker."""

    def __init__(self, settings: Settings, *, bootstrap: str, producer_config: dict[str, Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.bootstrap = settings, bootstrap
        self.endpoint = parse_url(settings.mqtt_url)
        self.level = sender_level(settings.mqtt_topic)
        self.subscription = (f"$share/{settings.mqtt_share_group}/{settings.mqtt_topic}" if settings.mqtt_share_group
                             else settings.mqtt_topic)
        self.client_id = settings.mqtt_client_id or f"meterseal-bridge-{socket.gethostname()}"
        self.counts: Counter = Counter()
        self.acks = InOrderAcks(clock=clock)
        self.connected = False
        self._clock = clock
        self._retry: list[tuple[float, Route, Ticket | None]] = []
        self._retry_lock = threading.Lock()
        self._stopping = threading.Event()
        self._last_error_log = -float("inf")
        from confluent_kafka import Producer

        self.producer = Producer({
            "bootstrap.servers": bootstrap, "partitioner": "murmur2_random",  # the Java client's (and Faust's)
            "acks": "all", "enable.idempotence": False,  # Tansu has no idempotent producer: see the module doc
            "message.timeout.ms": 0,  # no delivery timeout: a message waits for Kafka as long as it takes
            "linger.ms": 5, "queue.buffering.max.messages": max(10_000, 4 * settings.mqtt_in_flight),
            "reconnect.backoff.max.ms": 2000, "error_cb": self._kafka_error, **(producer_config or {})})
        self.client = mqtt_client(self.client_id, settings, manual_ack=True, endpoint=self.endpoint)
        self.client.on_connect, self.client.on_disconnect = self._on_connect, self._on_disconnect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)

    # -- MQTT side (paho's network thread) ------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT broker %s:%d refused the bridge: %s", self.endpoint.host, self.endpoint.port, reason_code)
            return
        self.acks.reset()  # a new connection: the broker resends what was not acknowledged
        self.connected = True
        self.counts["connects"] += 1
        from paho.mqtt.subscribeoptions import SubscribeOptions

        client.subscribe(self.subscription, options=SubscribeOptions(qos=1))
        log.warning("bridge %s connected to %s:%d (session %s), subscribed to %s", self.client_id, self.endpoint.host,
                    self.endpoint.port, "resumed" if flags.session_present else "new", self.subscription)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected = False
        dropped = self.acks.reset()
        if not self._stopping.is_set():
            log.error("bridge %s lost the MQTT broker (%s); %d unacknowledged message(s) will come again; "
                      "reconnecting", self.client_id, reason_code, dropped)

    def _on_message(self, client, userdata, message) -> None:
        if self._stopping.is_set():
            return  # not acknowledged: the broker keeps it in the session for the next run
        self.counts["received"] += 1
        if message.dup:
            self.counts["redelivered"] += 1
        ticket = self.acks.received(message.mid) if message.qos > 0 else None
        who = sender(message.topic, self.level) or message.topic
        self._produce(route(who, message.payload), ticket)

    # -- Kafka side (the delivery thread) -------------------------------------------------------------
    def _produce(self, r: Route, ticket: Ticket | None) -> None:
        while True:
            try:
                self.producer.produce(RAW_TOPIC, value=r.value, key=r.key, headers=r.headers,
                                      on_delivery=lambda err, msg: self._delivered(r, ticket, err))
                return
            except BufferError:  # the producer's queue is full: wait for deliveries (the poll thread drains it)
                time.sleep(0.05)

    def _delivered(self, r: Route, ticket: Ticket | None, err: Any) -> None:
        if err is not None:
            self.counts["kafka errors"] += 1
            self._log_kafka(f"delivery to {RAW_TOPIC} failed ({err}); retrying in 1 s")
            with self._retry_lock:
                self._retry.append((self._clock() + 1.0, r, ticket))
            return
        self.counts["forwarded"] += 1
        if r.rule:
            self.counts["dead letters:" + r.rule] += 1
        if ticket is not None:
            for mid in self.acks.delivered(ticket):
                self.client.ack(mid, 1)

    def _kafka_error(self, err: Any) -> None:
        self.counts["kafka errors"] += 1
        self._log_kafka(f"Kafka at {self.bootstrap}: {err}; holding acknowledgements until it answers")

    def _log_kafka(self, text: str) -> None:
        if self._clock() - self._last_error_log >= 10:
            self._last_error_log = self._clock()
            log.error(text)

    def _poll(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.producer.poll(0.05)
            if self._retry:
                now = self._clock()
                with self._retry_lock:
                    due = [x for x in self._retry if x[0] <= now]
                    self._retry = [x for x in self._retry if x[0] > now]
                for _, r, ticket in due:
                    self._produce(r, ticket)

    # -- running ------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        polling = threading.Event()
        poller = threading.Thread(target=self._poll, args=(polling,), name="bridge-kafka", daemon=True)
        poller.start()
        props = connect_properties(session_expiry_s=self.settings.mqtt_session_expiry_s,
                                   receive_maximum=self.settings.mqtt_in_flight)
        self.client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=30, clean_start=False,
                                  properties=props)
        self.client.loop_start()  # paho's network thread (reconnects by itself); acks come from the poll thread
        try:
            stop.wait()
        finally:
            self._stopping.set()
            left = self.producer.flush(10)  # what Kafka still has to confirm is acknowledged as it does
            if left:
                log.error("bridge stopping with %d message(s) Kafka did not confirm: not acknowledged, the MQTT "
                          "broker sends them again to the next run", left)
            polling.set()
            poller.join(5)
            self.client.disconnect()  # a normal DISCONNECT keeps the session (its expiry is not 0)
            self.client.loop_stop()

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "in_flight": self.acks.in_flight, "oldest_unacked_s": round(self.acks.oldest_s(), 3),
                "connected": self.connected}


class BridgeCollector:
    """The bridge's Prometheus metrics, read at scrape time from its counts and in-flight messages."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = self.bridge.counts
        for name, key, text in (("received", "received", "MQTT messages received"),
                                ("forwarded", "forwarded", "Messages Kafka confirmed (then acknowledged to MQTT)"),
                                ("redelivered", "redelivered", "MQTT messages received again (DUP flag)"),
                                ("kafka_errors", "kafka errors", "Kafka errors and failed deliveries (retried)"),
                                ("connects", "connects", "Connections to the MQTT broker")):
            metric = CounterMetricFamily(f"meterseal_bridge_{name}", text)
            metric.add_metric([], c.get(key, 0))
            yield metric
        dead = CounterMetricFamily("meterseal_bridge_dead_letters", "Messages forwarded as dead letters, by rule",
                                   labels=["rule"])
        for key, n in sorted(c.items()):
            if key.startswith("dead letters:"):
                dead.add_metric([key.split(":", 1)[1]], n)
        yield dead
        in_flight = GaugeMetricFamily("meterseal_bridge_in_flight", "Received, not yet confirmed by Kafka")
        in_flight.add_metric([], self.bridge.acks.in_flight)
        yield in_flight
        lag = GaugeMetricFamily("meterseal_bridge_lag_seconds", "How long the oldest unacknowledged message has waited")
        lag.add_metric([], self.bridge.acks.oldest_s())
        yield lag
        up = GaugeMetricFamily("meterseal_bridge_connected", "1 while connected to the MQTT broker")
        up.add_metric([], 1 if self.bridge.connected else 0)
        yield up


def serve_metrics(port: int, bridge: Bridge) -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(BridgeCollector(bridge))
    start_http_server(port, addr="127.0.0.1", registry=registry)
