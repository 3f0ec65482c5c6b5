"""Messages a gateway forwards to readings.raw already judged: the MQTT bridge (``streams.mqtt``) passes on what it
must not lose but may not forward as a reading — a reading published under another meter's topic (rule
``topic``), a payload too large for Kafka (``size``) — with a header naming the rule, and the seal agent makes
each a dead letter under that rule (the original bytes sealed, like every dead letter). Only these rules are
taken from a header, each with its fixed reason: a producer that sets the header can only dead-letter its own
message.

>>> rejection([("meterseal-reject", b"topic")]).rule
'topic'
>>> rejection([("other", b"x")]) is None and rejection(None) is None
True
"""

from __future__ import annotations

from typing import Any

from streams.exceptions import InvalidInput

HEADER = "meterseal-reject"
RULES = {
    "topic": "the reading's meter is not the meter of the MQTT topic it was published on",
    "size": "the MQTT payload was larger than a Kafka message may be (its first bytes are kept)",
}


def header(rule: str) -> list[tuple[str, bytes]]:
    if rule not in RULES:
        raise ValueError(f"unknown forwarded rule {rule!r}")
    return [(HEADER, rule.encode())]


def rejection(headers: Any) -> InvalidInput | None:
    """The dead letter a forwarded message's headers ask for (Kafka headers as pairs or a mapping), or None."""
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, dict) else headers
    for name, value in pairs:
        if (name.decode() if isinstance(name, bytes) else name) == HEADER:
            rule = value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
            return InvalidInput(rule, RULES[rule]) if rule in RULES else None
    return None
