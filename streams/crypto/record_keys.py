"""Per-record keys: each record has its own AES-256 key, derived from its DEK (envelope version 2) or from its
DEK *and* its subject's key (version 3).

::

    v2: record_key = HMAC-SHA256(key = DEK secret, msg = b"meterseal record key v2\\x00" || record_id)
        commitment = HMAC-SHA256(key = record_key, msg = b"meterseal key commitment v2")      (32 bytes)
    v3: record_key = HKDF-SHA256(IKM = DEK secret || subject key, salt = none,
                                 info = b"meterseal record key v3\\x00" || record_id, L = 32)
        commitment = HMAC-SHA256(key = record_key, msg = b"meterseal key commitment v3")

A subject key (``streams.keys.subjects``) belongs to one customer; neither it nor the DEK alone yields any v3
record key, so destroying a subject key makes every copy of that customer's records unreadable while other
customers' records under the same DEK still open (crypto-shredding). HKDF's extract step
(``subject_prk``) depends only on the pair (DEK, subject key): the writer computes it once per pair and each
record costs one HMAC, as in v2.

Sharing one record means handing over its record key, never the DEK: a record key opens only the
envelope whose commitment it matches (HMAC is a PRF, so one record key says nothing about the DEK or any
other record's key). The commitment makes the envelope key-committing, which AES-GCM alone is not: a
recipient given a key checks it against the commitment before decrypting, so no one can craft an
envelope that opens to different plaintexts under two keys.

Pure: stdlib ``hmac`` only (OpenSSL's one-shot HMAC), no I/O.

>>> rk = record_key(bytes(32), "r1")
>>> len(rk), rk.hex()[:16]
(32, 'bd402d51052fba3a')
>>> record_key_v3(bytes(32), bytes(range(32)), "r1").hex()[:16]
'9a60bb46b99381dc'
"""

from __future__ import annotations

import hmac

RECORD_KEY_LABEL = b"meterseal record key v2\x00"
COMMITMENT_LABEL = b"meterseal key commitment v2"
RECORD_KEY_LABEL_3 = b"meterseal record key v3\x00"
COMMITMENT_LABEL_3 = b"meterseal key commitment v3"
_NO_SALT = bytes(32)  # HKDF with no salt: HashLen zero bytes (RFC 5869 2.2)
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


def subject_prk(dek_secret: bytes, subject_key: bytes) -> bytes:
    """HKDF-Extract of ``DEK secret || subject key``: the pseudorandom key every v3 record key of the pair expands
    from."""
    if len(dek_secret) != KEY_LEN or len(subject_key) != KEY_LEN:
        raise ValueError(f"DEK secret and subject key must be {KEY_LEN} bytes each")
    return hmac.digest(_NO_SALT, dek_secret + subject_key, "sha256")


def record_key_v3(dek_secret: bytes, subject_key: bytes, record_id: str) -> bytes:
    """The 32-byte AES-256 key of record ``record_id`` under a DEK and a subject key (HKDF-SHA256, one block)."""
    return hmac.digest(subject_prk(dek_secret, subject_key), RECORD_KEY_LABEL_3 + record_id.encode() + b"\x01", "sha256")


def commitment_v3(key: bytes) -> bytes:
    """The commitment to a v3 record key that a version-3 envelope carries in its header."""
    if len(key) != KEY_LEN:
        raise ValueError(f"record key must be {KEY_LEN} bytes, got {len(key)}")
    return hmac.digest(key, COMMITMENT_LABEL_3, "sha256")


def commits_to_v3(key: bytes, expected: bytes) -> bool:
    return len(key) == KEY_LEN and hmac.compare_digest(commitment_v3(key), expected)
