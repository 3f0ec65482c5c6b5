"""The sealed envelope: AES-256-GCM under a rotating data-encryption key (DEK).

Wire format (version 1)::

    0x01 || key_id (16 bytes) || nonce (12 bytes, random) || ciphertext || tag (16 bytes)

The header (version and key id) is always part of the associated data, so a ciphertext
relabelled with another key id fails to open. Callers add what binds the envelope to its
record (see ``seal.record_aad``). Opening fails with one exception, ``InvalidEnvelope``,
whatever went wrong.

>>> dek = DataKey.generate(now=0.0)
>>> box = seal(dek, b"4.2 kWh", aad=b"meter-7|2024-01-01")
>>> open_with({dek.key_id: dek}, box, aad=b"meter-7|2024-01-01")
b'4.2 kWh'
>>> open_with({dek.key_id: dek}, box, aad=b"meter-8|2024-01-01")
Traceback (most recent call last):
...
streams.exceptions.InvalidEnvelope: envelope could not be opened
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

from streams.crypto import _primitives
from streams.exceptions import InvalidEnvelope

VERSION = 1
KEY_ID_LEN = 16
HEADER_LEN = 1 + KEY_ID_LEN
OVERHEAD = HEADER_LEN + _primitives.NONCE_LEN + 16


@dataclass(frozen=True)
class DataKey:
    """A data-encryption key: 16-byte id, 32-byte AES-256 secret, creation time."""

    key_id: bytes
    secret: bytes = field(repr=False)
    created_at: float = 0.0

    def __post_init__(self) -> None:
        if len(self.key_id) != KEY_ID_LEN:
            raise ValueError(f"key id must be {KEY_ID_LEN} bytes, got {len(self.key_id)}")
        if len(self.secret) != _primitives.KEY_LEN:
            raise ValueError(f"DEK must be {_primitives.KEY_LEN} bytes, got {len(self.secret)}")

    @classmethod
    def generate(cls, *, now: float | None = None) -> "DataKey":
        return cls(os.urandom(KEY_ID_LEN), os.urandom(_primitives.KEY_LEN), time.time() if now is None else now)

    @property
    def key_hex(self) -> str:
        return self.key_id.hex()


def seal(dek: DataKey, plaintext: bytes, *, aad: bytes, nonce: bytes | None = None) -> bytes:
    """Encrypt ``plaintext`` under ``dek``; ``nonce`` is only for known-answer tests."""
    if nonce is None:
        nonce = os.urandom(_primitives.NONCE_LEN)
    elif len(nonce) != _primitives.NONCE_LEN:
        raise ValueError("nonce must be 12 bytes")
    header = bytes([VERSION]) + dek.key_id
    return header + nonce + _primitives.aes_gcm_seal(dek.secret, nonce, plaintext, header + aad)


def key_id_of(envelope: bytes) -> bytes:
    """The DEK id an envelope names (not authenticated until it opens)."""
    if len(envelope) < OVERHEAD or envelope[0] != VERSION:
        raise InvalidEnvelope("envelope could not be opened")
    return envelope[1:HEADER_LEN]


def open_with(keys: Mapping[bytes, DataKey] | Callable[[bytes], DataKey], envelope: bytes, *, aad: bytes) -> bytes:
    """Open ``envelope`` with the DEK it names, looked up in ``keys`` (a mapping or a function).

    Raises ``InvalidEnvelope`` for a bad version, an unknown key, a wrong key, changed bytes or
    changed associated data alike.
    """
    key_id = key_id_of(envelope)
    try:
        dek = keys(key_id) if callable(keys) else keys[key_id]
        nonce = envelope[HEADER_LEN:HEADER_LEN + _primitives.NONCE_LEN]
        return _primitives.aes_gcm_open(dek.secret, nonce, envelope[HEADER_LEN + _primitives.NONCE_LEN:],
                                    envelope[:HEADER_LEN] + aad)
    except (KeyError, _primitives.InvalidTag, InvalidEnvelope) as exc:
        raise InvalidEnvelope("envelope could not be opened") from exc


@dataclass
class DekRing:
    """The writer's current DEK, rotated after ``max_records`` seals or ``max_age_s`` seconds.

    ``on_new_key`` is called with every new DEK *before* it seals anything, so the wrapped key
    is published and stored before any record that needs it.

    >>> made = []
    >>> ring = DekRing(max_records=2, max_age_s=3600, on_new_key=made.append, clock=lambda: 0.0)
    >>> ids = {key_id_of(ring.seal(b"x", aad=b"")) for _ in range(5)}
    >>> len(ids), len(made)
    (3, 3)
    """

    max_records: int
    max_age_s: float
    on_new_key: Callable[[DataKey], None]
    clock: Callable[[], float] = time.time
    _current: DataKey | None = field(default=None, init=False, repr=False)
    _used: int = field(default=0, init=False)
    _aead: object = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_age_s <= 0:
            raise ValueError("DEK rotation needs max_records >= 1 and max_age_s > 0")

    def current(self) -> DataKey:
        now = self.clock()
        dek = self._current
        if dek is None or self._used >= self.max_records or now - dek.created_at >= self.max_age_s:
            dek = DataKey.generate(now=now)
            self.on_new_key(dek)
            self._current, self._used, self._aead = dek, 0, _primitives.aead(dek.secret)
        return dek

    def seal(self, plaintext: bytes, *, aad: bytes) -> bytes:
        dek = self.current()
        self._used += 1
        nonce = os.urandom(_primitives.NONCE_LEN)
        header = bytes([VERSION]) + dek.key_id
        return header + nonce + self._aead.encrypt(nonce, plaintext, header + aad)
