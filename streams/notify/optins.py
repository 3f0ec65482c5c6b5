"""Customers' opt-ins to email alerts on their own meter: ``notify/optins/<meter token>.json`` in the store.

The address is personal data: it is sealed (AES-256-GCM) under a key derived from the index key — the worker, which
sends the mail, holds it; the store operator does not — with the meter token as associated data, so an opt-in
cannot be moved to another meter. The console writes one only for a meter of the logged-in customer's own account
(its scope comes from the session), so a customer only ever receives alerts of its own meters.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from streams.crypto import _primitives
from streams.crypto.envelope import DataKey, FixedKey
from streams.exceptions import InvalidEnvelope, MeterSealError

PREFIX = "notify/optins/"
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_TOKEN = re.compile(r"^[0-9a-f]{16,64}$")


def _key(index_key: bytes) -> FixedKey:
    return FixedKey(DataKey(b"meterseal-optin!", _primitives.hkdf_sha256(index_key, info=b"meterseal/alert-optin/v1")))


def opt_in(blobs: Any, index_key: bytes, meter_tok: str, email: str, *, now: float | None = None) -> None:
    email = email.strip()
    if not _EMAIL.match(email) or len(email) > 254:
        raise MeterSealError("not an email address")
    if not _TOKEN.match(meter_tok):
        raise MeterSealError("not a meter token")
    sealed = _key(index_key).seal(email.encode(), aad=meter_tok.encode())
    blobs.put(PREFIX + meter_tok + ".json", json.dumps({"meter_tok": meter_tok, "email": sealed.hex(),
                                                        "at": time.time() if now is None else now}).encode())


def opt_out(blobs: Any, meter_tok: str) -> None:
    """Remove the opt-in (a blob store without deletes gets an empty marker)."""
    blobs.put(PREFIX + meter_tok + ".json", b"{}")


def email_for(blobs: Any, index_key: bytes, meter_tok: str) -> str | None:
    if not _TOKEN.match(meter_tok):
        return None
    data = blobs.get(PREFIX + meter_tok + ".json")
    if not data:
        return None
    doc = json.loads(data)
    if not doc.get("email"):
        return None
    try:
        return _key(index_key).open(bytes.fromhex(doc["email"]), aad=meter_tok.encode()).decode()
    except (InvalidEnvelope, ValueError):
        return None


def opted_in_tokens(blobs: Any) -> set[str]:
    out = set()
    for key in blobs.list(PREFIX):
        data = blobs.get(key)
        if data and json.loads(data).get("email"):
            out.add(key[len(PREFIX):-len(".json")])
    return out


def erase(blobs: Any, meter_toks: tuple[str, ...]) -> int:
    n = 0
    for tok in meter_toks:
        data = blobs.get(PREFIX + tok + ".json")
        if data and json.loads(data).get("email"):
            opt_out(blobs, tok)
            n += 1
    return n
