"""Where an MQTT message goes on readings.raw: its key, its value, or a forwarded dead letter. Pure.

The topic filter has one single-level wildcard (``meters/+/readings``); the topic level it matches names the
sender: a meter (one reading, JSON or Avro, or a signed envelope) or a head-end collector (a JSON array or an
Avro ``ReadingBatch``). That name becomes the Kafka key — a meter's messages land in its partition — and a
reading that names another meter than its topic is forwarded as a dead letter, rule ``topic`` (the broker's ACL
lets a meter publish only under its own topic, so the topic is the authenticated sender; the payload is only a
claim). What the route cannot read (not JSON, not Avro) is forwarded as it is: the seal agent makes its
``decode`` dead letter, with the same bytes.

>>> r = route("m1", b'{"meter_id": "m2", "kwh": 1}')
>>> r.key, r.rule
(b'm1', 'topic')
>>> route("m1", b'{"meter_id": "m1", "kwh": 1}').rule is None
True
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

import schemas
from streams.devices import signed
from streams.exceptions import ConfigError, InvalidInput
from streams.ingest import forwarded

KAFKA_MAX_BYTES = 900_000  # below the Kafka default message.max.bytes (1,000,000) with room for key and headers
_BATCH_FINGERPRINT = schemas.get("reading_batch").fingerprint


class Route(NamedTuple):
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] | None = None
    rule: str | None = None  # the dead letter the seal agent is asked to make (``forwarded``), if any


def sender_level(topic_filter: str) -> int:
    """The level of ``topic_filter`` whose ``+`` names the sender (``ConfigError`` unless there is exactly one
    ``+`` and no ``#``)."""
    levels = topic_filter.split("/")
    plus = [i for i, level in enumerate(levels) if level == "+"]
    if len(plus) != 1 or "#" in topic_filter or any("+" in level and level != "+" for level in levels):
        raise ConfigError(f"topic filter {topic_filter!r}: give exactly one '+' level naming the meter, "
                          "e.g. meters/+/readings (and no '#')")
    return plus[0]


def sender(topic: str, level: int) -> str | None:
    levels = topic.split("/")
    return levels[level] if level < len(levels) and levels[level] else None


def claimed_sender(payload: bytes) -> str | None:
    """The meter (or collector) the payload says it is from; None when it cannot tell (not decodable, a JSON
    array whose items the seal agent checks against the key one by one)."""
    try:
        if payload[:2] == schemas.MARKER:
            if payload[2:10] == _BATCH_FINGERPRINT:
                return _text(schemas.decode("reading_batch", payload).get("collector_id"))
            return _text(schemas.decode("reading", payload).get("meter_id"))
        envelope = signed.parse(payload)
        doc: Any = signed.payload_reading(envelope) if envelope is not None else orjson.loads(payload)
    except (schemas.SchemaError, orjson.JSONDecodeError, InvalidInput):
        return None
    return _text(doc.get("meter_id")) if isinstance(doc, dict) else None


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value).strip()


def route(topic_sender: str, payload: bytes) -> Route:
    """The readings.raw message for ``payload`` published under ``topic_sender``'s topic."""
    key = topic_sender.encode()
    if len(payload) > KAFKA_MAX_BYTES:
        return Route(key, payload[:KAFKA_MAX_BYTES], forwarded.header("size"), "size")
    claimed = claimed_sender(payload)
    if claimed is not None and claimed != topic_sender:
        return Route(key, payload, forwarded.header("topic"), "topic")
    return Route(key, payload)
