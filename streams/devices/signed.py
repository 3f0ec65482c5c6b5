"""The signed envelope: one JSON object a meter sends instead of a bare reading, on MQTT and on readings.raw alike.

::

    {"payload": BASE64(the reading's JSON bytes), "alg": "ES256" | "Ed25519",
     "kid": KEY_ID, "sig": BASE64(signature over exactly those payload bytes)}

The payload is an ordinary JSON reading plus ``device_seq``, the device's own counter (an integer, one more for
every reading it signs). The signature covers the payload *bytes*, so they are kept as they came (a re-encoded
JSON would no longer verify). ES256 signatures are ASN.1 DER (ECDSA P-256 over SHA-256); Ed25519's are 64 bytes.

>>> from streams.devices.keys import DeviceKey
>>> key = DeviceKey.generate("Ed25519")
>>> data = sign_reading({"meter_id": "m1", "ts": "2025-01-01T00:00:00Z", "kwh": 0.1}, key, seq=7)
>>> signed = parse(data)
>>> signed.kid == key.public_key.kid, key.public_key.verify(signed.payload, signed.sig)
(True, True)
>>> parse(b'{"meter_id": "m1"}') is None   # an unsigned reading
True
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, NamedTuple

import orjson

from streams.devices.keys import ALGS, DeviceKey
from streams.exceptions import InvalidInput

FIELDS = frozenset({"payload", "alg", "kid", "sig"})
_KID = re.compile(r"[0-9a-f]{64}")


class Signed(NamedTuple):
    payload: bytes  # the signed bytes: a JSON reading with device_seq
    alg: str
    kid: str
    sig: bytes


def maybe_signed(data: bytes) -> bool:
    """A cheap test a worker runs on every raw message: could it be a signed envelope (``parse`` decides)?"""
    return b'"sig"' in data


def parse(data: bytes) -> Signed | None:
    """The signed envelope in ``data``; None if it is not one (a JSON object without ``payload`` and ``sig``, or
    not JSON: the sealer judges it as an unsigned message); ``InvalidInput`` (rule ``signature``) for an envelope
    that is malformed."""
    if not maybe_signed(data):
        return None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or "sig" not in doc or "payload" not in doc:
        return None
    if doc.keys() != FIELDS:
        raise InvalidInput("signature", "a signed envelope has exactly the members payload, alg, kid and sig")
    alg, kid, payload, sig = doc["alg"], doc["kid"], doc["payload"], doc["sig"]
    if alg not in ALGS:
        raise InvalidInput("signature", f"alg must be {' or '.join(ALGS)}")
    if type(kid) is not str or not _KID.fullmatch(kid):
        raise InvalidInput("signature", "kid must be the lowercase hex SHA-256 of the device's public key (64 digits)")
    if type(payload) is not str or type(sig) is not str:
        raise InvalidInput("signature", "payload and sig must be base64 strings")
    try:
        return Signed(base64.b64decode(payload, validate=True), alg, kid, base64.b64decode(sig, validate=True))
    except (binascii.Error, ValueError):
        raise InvalidInput("signature", "payload or sig is not valid base64") from None


def payload_reading(signed: Signed) -> dict[str, Any]:
    """The reading a signed envelope carries (``InvalidInput`` rule ``decode`` if the payload is not one JSON
    object: a signed payload holds one reading, never a batch)."""
    try:
        reading = orjson.loads(signed.payload)
    except orjson.JSONDecodeError:
        raise InvalidInput("decode", "the signed payload is not JSON") from None
    if type(reading) is not dict:
        raise InvalidInput("decode", "a signed payload must be one JSON reading (an object), not a batch")
    return reading


def encode(signed: Signed) -> bytes:
    return json.dumps({"payload": base64.b64encode(signed.payload).decode(), "alg": signed.alg, "kid": signed.kid,
                       "sig": base64.b64encode(signed.sig).decode()}, separators=(",", ":")).encode()


def sign_reading(reading: dict[str, Any], key: DeviceKey, *, seq: int) -> bytes:
    """What a meter sends: ``reading`` with ``device_seq`` = ``seq``, as JSON bytes, signed with ``key``."""
    payload = json.dumps({**reading, "device_seq": seq}, separators=(",", ":")).encode()
    return encode(Signed(payload, key.alg, key.public_key.kid, key.sign(payload)))
