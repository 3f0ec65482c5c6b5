"""Per-record keys (envelope version 2): each record has its own AES-256 key, derived from its DEK.

::

    record_key = HMAC-SHA256(key = DEK secret, msg = b"meterseal record key v2\\x00" || record_id)
    commitment = HMAC-SHA256(key = record_key, msg = b"meterseal key commitment v2")      (32 bytes)

Sharing one record means handing over its record key, never the DEK: a record key opens only the
envelope whose commitment it matches (HMAC is a PRF, so one record key says nothing about the DEK or any
other record's key). The commitment makes the envelope key-committing, which AES-GCM alone is not: a
recipient given a key checks it against the commitment before decrypting, so no one can craft an
envelope that opens to different plaintexts under two keys.

Pure: stdlib ``hmac`` only (OpenSSL's one-shot HMAC), no I/O.

>>> rk = record_key(bytes(32), "r1")
>>> len(rk), rk.hex()[:16]
(32, 'bd402d51052fba3a')
"""

from __future__ import annotations

import hmac

RECORD_KEY_LABEL = b"meterseal record key v2\x00"
COMMITMENT_LABEL = b"meterseal key commitment v2"
KEY_LEN = 32
COMMITMENT_LEN = 32


def record_key(dek_secret: bytes, record_id: str) -> bytes:
    """The 32-byte AES-256 key of record ``record_id`` under the DEK whose secret is ``dek_secret``."""
    if len(dek_secret) != KEY_LEN:
        raise ValueError(f"DEK secret must be {KEY_LEN} bytes, got {len(dek_secret)}")
    return hmac.digest(dek_secret, RECORD_KEY_LABEL + record_id.encode(), "sha256")


def commitment(key: bytes) -> bytes:
    """The 32-byte commitment to a record key that a version-2 envelope carries in its header."""
    if len(key) != KEY_LEN:
        raise ValueError(f"record key must be {KEY_LEN} bytes, got {len(key)}")
    return hmac.digest(key, COMMITMENT_LABEL, "sha256")


def commits_to(key: bytes, expected: bytes) -> bool:
    """Whether ``key`` is the key ``expected`` commits to (constant-time comparison)."""
    return len(key) == KEY_LEN and hmac.compare_digest(commitment(key), expected)
