"""Routing an MQTT message to readings.raw, and PUBACKs in receive order once Kafka has each message. Pure."""

from __future__ import annotations

import json
import random

import pytest

import schemas
from streams.devices import signed
from streams.devices.keys import DeviceKey
from streams.exceptions import ConfigError
from streams.ingest import forwarded
from streams.mqtt.acks import InOrderAcks
from streams.mqtt.route import KAFKA_MAX_BYTES, route, sender, sender_level

READING = {"meter_id": "m1", "ts": "2026-12-01T10:00:00Z", "kwh": 0.25, "register_kwh": 1.0, "region": "north",
           "category": "Domestic"}


def test_the_plus_level_names_the_sender():
    level = sender_level("meters/+/readings")
    assert level == 1 and sender("meters/SIM-00001/readings", level) == "SIM-00001"
    for bad in ("meters/#", "meters/readings", "+/+/readings", "meters/a+/x"):
        with pytest.raises(ConfigError, match="exactly one"):
            sender_level(bad)


@pytest.mark.parametrize("payload", [
    json.dumps(READING).encode(),
    schemas.encode("reading", {**READING, "account_id": None, "label": None}),
    signed.sign_reading(READING, DeviceKey.generate("Ed25519"), seq=1),
])
def test_a_reading_from_its_own_topic_is_keyed_by_its_meter(payload):
    r = route("m1", payload)
    assert (r.key, r.value, r.headers, r.rule) == (b"m1", payload, None, None)


@pytest.mark.parametrize("payload", [
    json.dumps({**READING, "meter_id": "m2"}).encode(),
    schemas.encode("reading", {**READING, "meter_id": "m2", "account_id": None, "label": None}),
    signed.sign_reading({**READING, "meter_id": "m2"}, DeviceKey.generate("Ed25519"), seq=1),
    schemas.encode("reading_batch", {"collector_id": "HE-2", "readings": [{**READING, "account_id": None, "label": None}]}),
])
def test_a_reading_naming_another_sender_is_forwarded_as_a_topic_dead_letter(payload):
    r = route("m1", payload)
    assert r.rule == "topic" and forwarded.rejection(r.headers).rule == "topic" and r.value == payload


def test_what_it_cannot_read_goes_on_for_the_seal_agent_to_judge():
    for payload in (b"{not json", b"[1, 2]", b"", b"\xc3\x01garbage"):
        assert route("m1", payload).rule is None  # the worker makes its decode dead letter, same bytes


def test_too_large_for_kafka_is_cut_and_marked():
    r = route("m1", b"x" * (KAFKA_MAX_BYTES + 10))
    assert r.rule == "size" and len(r.value) == KAFKA_MAX_BYTES


def test_acks_leave_in_receive_order_whatever_order_kafka_confirms():
    rng = random.Random(3)
    acks = InOrderAcks(clock=lambda: 0.0)
    tickets = [acks.received(mid) for mid in range(1, 501)]
    released = []
    for ticket in rng.sample(tickets, len(tickets)):
        released += acks.delivered(ticket)
    assert released == list(range(1, 501)) and acks.in_flight == 0


def test_a_reconnect_forgets_the_old_connections_tickets():
    now = [0.0]
    acks = InOrderAcks(clock=lambda: now[0])
    old = acks.received(5)
    now[0] = 2.5
    assert acks.oldest_s() == 2.5 and acks.reset() == 1
    fresh = acks.received(5)  # the broker sends packet 5 again on the new connection
    assert acks.delivered(old) == []  # Kafka's late confirmation of the old copy acknowledges nothing
    assert acks.delivered(fresh) == [5] and acks.oldest_s() == 0.0
