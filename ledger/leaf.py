"""The leaf of a sealed record: a versioned, canonical byte encoding of everything the store keeps.

Version 1 is ``0x01`` followed by each field as a 4-byte big-endian length and its bytes, in the
order of ``FIELDS``. Integers are written as decimal text, absent values as length 0xFFFFFFFF. The
leaf covers the ciphertext, every token, the key id, the meter token, the sealing time, the leaf's
own index and the record's per-meter sequence number (so a missing record leaves a visible gap).

>>> leaf = encode({"record_id": "ab", "leaf_index": 0, "meter_seq": 0, "envelope": b"x"})
>>> leaf[:1], len(leaf)
(b'\\x01', 66)
"""

from __future__ import annotations

import struct
from typing import Any, Mapping

VERSION = 1
FIELDS = ("leaf_index", "record_id", "kind", "schema_version", "key_id", "region", "category", "meter_tok",
          "meter_seq", "account_tok", "day_tok", "month_tok", "year_tok", "sealed_at_ms", "envelope")
_ABSENT = struct.pack(">I", 0xFFFFFFFF)


def _field(value: Any) -> bytes:
    if value is None:
        return _ABSENT
    if isinstance(value, bool):
        raise TypeError("booleans have no leaf encoding")
    if isinstance(value, int):
        data = str(value).encode()
    elif isinstance(value, str):
        data = value.encode()
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    else:
        raise TypeError(f"no leaf encoding for {type(value).__name__}")
    return struct.pack(">I", len(data)) + data


def encode(record: Mapping[str, Any]) -> bytes:
    """Leaf bytes of a stored sealed record (missing fields count as absent).

    The store thread encodes every reading it stores, so the usual field types (str, int, bytes, None) are
    written inline, without a call per field; any other type takes ``_field`` (same bytes, same errors)."""
    parts, get = [_VERSION_BYTE], record.get
    add = parts.append
    for name in FIELDS:
        value = get(name)
        kind = type(value)
        if kind is str:
            data = value.encode()
        elif kind is bytes:
            data = value
        elif value is None:
            add(_ABSENT)
            continue
        elif kind is int:  # (not bool: its type is bool)
            data = str(value).encode()
        else:
            add(_field(value))
            continue
        add(_LENGTH(len(data)))
        add(data)
    return b"".join(parts)


_VERSION_BYTE, _LENGTH = bytes([VERSION]), struct.Struct(">I").pack


# Key events (a data key created — and so the previous one rotated out) are leaves of the key log.
KEY_EVENT_VERSION = 2
KEY_EVENT_FIELDS = ("leaf_index", "key_id", "scheme", "owner_fingerprint", "wrapped", "created_at_ms", "worker")


def encode_key_event(record: Mapping[str, Any]) -> bytes:
    """Leaf bytes of a wrapped-DEK event; the version byte keeps it apart from record leaves."""
    return bytes([KEY_EVENT_VERSION]) + b"".join(_field(record.get(name)) for name in KEY_EVENT_FIELDS)


# Model events (a global model version from a federated round) are leaves of the model log.
MODEL_EVENT_VERSION = 3
MODEL_EVENT_FIELDS = ("leaf_index", "model_sha256", "run_id", "round", "strategy", "metrics", "created_at_ms")


def encode_model_event(record: Mapping[str, Any]) -> bytes:
    """Leaf bytes of a model version (``metrics`` as canonical JSON text); its own version byte."""
    return bytes([MODEL_EVENT_VERSION]) + b"".join(_field(record.get(name)) for name in MODEL_EVENT_FIELDS)


# Consent events (a data-sharing grant made or revoked, ``streams.share.grants``) are leaves of the consent log.
CONSENT_EVENT_VERSION = 4
CONSENT_EVENT_FIELDS = ("leaf_index", "event", "grant_id", "party_fingerprint", "at_ms", "body")


def encode_consent_event(record: Mapping[str, Any]) -> bytes:
    """Leaf bytes of a consent event (``body``: the grant, sealed); its own version byte."""
    return bytes([CONSENT_EVENT_VERSION]) + b"".join(_field(record.get(name)) for name in CONSENT_EVENT_FIELDS)


# Privacy-budget events (a DP release's spend, or a budget set by the owner) are leaves of the privacy log.
PRIVACY_EVENT_VERSION = 5
PRIVACY_EVENT_FIELDS = ("leaf_index", "event", "analyst", "dataset", "rho", "query", "created_at_ms")


def encode_privacy_event(record: Mapping[str, Any]) -> bytes:
    """Leaf bytes of a budget event (``rho`` as its shortest decimal text, ``query`` as canonical JSON)."""
    fields = {**record, "rho": repr(float(record["rho"])) if record.get("rho") is not None else None}
    return bytes([PRIVACY_EVENT_VERSION]) + b"".join(_field(fields.get(name)) for name in PRIVACY_EVENT_FIELDS)


# Device events (a device key registered for a meter, or revoked: ``streams.devices.registry``) are leaves of the
# device log.
DEVICE_EVENT_VERSION = 6
DEVICE_EVENT_FIELDS = ("leaf_index", "event", "kid", "alg", "public_key", "body", "at_ms")


def encode_device_event(record: Mapping[str, Any]) -> bytes:
    """Leaf bytes of a device event (``public_key``: DER SubjectPublicKeyInfo; ``body``: the meter id, sealed)."""
    return bytes([DEVICE_EVENT_VERSION]) + b"".join(_field(record.get(name)) for name in DEVICE_EVENT_FIELDS)


# Subject-key events (a customer's key created, ``streams.keys.subjects``) are leaves of the subject log: a commitment
# to the key, never the key. Erasure deletes the row and leaves its hash, tombstoned.
SUBJECT_EVENT_VERSION = 16
SUBJECT_EVENT_FIELDS = ("leaf_index", "subject_tok", "kind", "key_id", "commitment", "created_at_ms")


def encode_subject_event(record: Mapping[str, Any]) -> bytes:
    """Leaf bytes of a subject key's creation; its own version byte."""
    return bytes([SUBJECT_EVENT_VERSION]) + b"".join(_field(record.get(name)) for name in SUBJECT_EVENT_FIELDS)


# Erasure and retention events (``streams.erasure``) are leaves of the erasure log. They name no person: the subject
# by a hash of its token, what was removed by counts, and the redacted leaves by a digest of their tombstones.
ERASURE_EVENT_VERSION = 17
ERASURE_EVENT_FIELDS = ("leaf_index", "event", "erasure_id", "subject_hash", "reason", "counts", "tombstones_sha256",
                        "at_ms")


def encode_erasure_event(record: Mapping[str, Any]) -> bytes:
    """Leaf bytes of an erasure or retention event (``counts`` as canonical JSON text); its own version byte."""
    return bytes([ERASURE_EVENT_VERSION]) + b"".join(_field(record.get(name)) for name in ERASURE_EVENT_FIELDS)
