"""The reader's keyring: DEKs unwrapped on demand from the store with the owner's private keys.

Reading never needs the broker: every wrapped DEK is kept in ``<store>/deks``. A key id with no
wrapped DEK, or one wrapped for an owner key this keystore does not hold, fails to open like any
other bad envelope.
"""

from __future__ import annotations

from streams.crypto.envelope import DataKey
from streams.keys.owner import Unwrapper
from streams.store.segments import SegmentStore


class Keyring:
    """``keyring(key_id) -> DataKey``; raises ``KeyError`` for a key it cannot produce."""

    def __init__(self, store: SegmentStore, unwrappers: dict[str, Unwrapper]) -> None:
        self._store = store
        self._unwrappers = unwrappers
        self._cache: dict[bytes, DataKey] = {}

    def __call__(self, key_id: bytes) -> DataKey:
        dek = self._cache.get(key_id)
        if dek is None:
            wrapped = self._store.get_dek(key_id.hex())
            if wrapped is None:
                raise KeyError(key_id.hex())
            unwrapper = self._unwrappers.get(wrapped["owner_fingerprint"])
            if unwrapper is None:
                raise KeyError(key_id.hex())
            dek = unwrapper.unwrap(key_id, wrapped["wrapped"], created_at=wrapped["created_at_ms"] / 1000)
            self._cache[key_id] = dek
        return dek
