"""Each device's ``device_seq`` window: what tells a replay from a redelivery and from a late reading.

A device counts up, one per reading it signs. On the way to the seal agent readings are **re-ordered** (an MQTT 5
shared subscription deals a meter's messages to several bridges, and a bridge killed mid-stream gets its share
back only when it returns) and **delivered more than once** (QoS 1, and a producer retry: neither the bridge nor
the worker is exactly-once). So, as IPsec and DTLS do for packets (RFC 4303 §3.4.3), the seal agent keeps a
sliding window per device: the highest ``device_seq`` it accepted and which of the ``WINDOW`` numbers below it it
has seen, each with a 2-byte fingerprint of the payload accepted under it.

- above the highest: accepted (the window slides);
- inside the window, not seen yet: accepted (a late reading, re-ordered on the way);
- inside the window, seen, same payload: accepted again (a redelivery: it seals to the same record id, which the
  store keeps once);
- inside the window, seen, another payload: ``replay`` (the counter was used twice: a cloned device or a bug);
- below the window: ``replay`` (too old to tell from a replay; the dead letter keeps it, sealed).

A replayed message is thus either refused or — when it is a copy of one already accepted — stored once, never
twice: its record id is an HMAC of meter and time, both inside the signed payload. The window lives in the
worker's ``device-seq`` table (a changelog topic, sealed like the validator's state, co-partitioned with
readings.raw: a signed reading is keyed by its meter, so one partition owns a device's window), so it survives
restarts and moves with the partition.

>>> w = advance(None, 5, b"a")
>>> w = advance(w, 7, b"b"); w.high
7
>>> advance(w, 6, b"c").high, advance(w, 5, b"a") == w   # late; a redelivery
(7, True)
>>> advance(w, 5, b"x")
Traceback (most recent call last):
...
streams.exceptions.InvalidInput: replay: device_seq 5 was already used for another reading
"""

from __future__ import annotations

import hashlib
import struct
from typing import NamedTuple

from streams.exceptions import InvalidInput

WINDOW = 128  # readings a device's message may arrive late by (a bridge's outage, at the meter's rate)
_MARK = 2  # bytes of payload fingerprint per slot
_MASK = (1 << WINDOW) - 1
_HIGH = struct.Struct("<Q")
PACKED_LEN = _HIGH.size + WINDOW // 8 + WINDOW * _MARK
MAX_SEQ = 2**63 - 1


class Window(NamedTuple):
    high: int  # the highest device_seq accepted
    seen: int  # bit i: high - i was accepted
    marks: bytes  # _MARK bytes per slot i: fingerprint of the payload accepted as high - i


def fingerprint(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()[:_MARK]


def advance(window: Window | None, seq: int, payload: bytes) -> Window:
    """The window after accepting ``seq`` (signed ``payload``); ``InvalidInput`` rule ``replay`` if it may not be
    accepted. Returns ``window`` itself for a redelivery."""
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise InvalidInput("schema", "device_seq: a signed reading needs an integer counter >= 0")
    mark = fingerprint(payload)
    if window is None:
        return Window(seq, 1, mark + bytes(_MARK * (WINDOW - 1)))
    high, seen, marks = window
    if seq > high:
        shift = seq - high
        if shift >= WINDOW:
            return Window(seq, 1, mark + bytes(_MARK * (WINDOW - 1)))
        kept = marks[: _MARK * (WINDOW - shift)]
        return Window(seq, ((seen << shift) | 1) & _MASK, mark + bytes(_MARK * (shift - 1)) + kept)
    slot = high - seq
    if slot >= WINDOW:
        raise InvalidInput("replay", f"device_seq went back more than {WINDOW} below the device's newest: "
                                     "too old to tell from a replay")
    at = _MARK * slot
    if seen >> slot & 1:
        if marks[at:at + _MARK] == mark:
            return window  # the same reading again: a redelivery, stored once
        raise InvalidInput("replay", f"device_seq {seq} was already used for another reading")
    return Window(high, seen | 1 << slot, marks[:at] + mark + marks[at + _MARK:])


def pack(window: Window) -> bytes:
    return _HIGH.pack(window.high) + window.seen.to_bytes(WINDOW // 8, "little") + window.marks


def unpack(data: bytes) -> Window:
    if len(data) != PACKED_LEN:
        raise ValueError(f"a device window is {PACKED_LEN} bytes, got {len(data)}")
    n = _HIGH.size + WINDOW // 8
    return Window(_HIGH.unpack_from(data)[0], int.from_bytes(data[_HIGH.size:n], "little"), data[n:])
