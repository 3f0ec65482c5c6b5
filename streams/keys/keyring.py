"""The reader's keyring: DEKs unwrapped on demand from the store with the owner's private keys.

Reading never needs the broker: every wrapped DEK is kept in ``<store>/deks``. A key id with no
wrapped DEK, or one wrapped for an owner key this keystore does not hold, fails to open like any
other bad envelope.
"""

from __future__ import annotations

from streams.crypto.envelope import DataKey, SubjectKey
from streams.keys.owner import Unwrapper
from streams.keys.subjects import SubjectKeyTable
from streams.store.segments import SegmentStore


class Keyring:
    """``keyring(key_id) -> DataKey``; raises ``KeyError`` for a key it cannot produce.

    With the index key it also gives subject keys (``subject_key(token, key_id)``, from the store's subject-key
    table), which version-3 records need besides their DEK; without it a v3 record does not open."""

    def __init__(self, store: SegmentStore, unwrappers: dict[str, Unwrapper], *, index_key: bytes | None = None) -> None:
        self._store = store
        self._unwrappers = unwrappers
        self._cache: dict[bytes, DataKey] = {}
        self._index_key = index_key
        self._subjects: SubjectKeyTable | None = None
        self._subject_cache: dict[tuple[str, bytes], SubjectKey] = {}

    def subject_table(self) -> SubjectKeyTable | None:
        """The store's subject-key table under this keyring's index key (None without one)."""
        if self._subjects is None and self._index_key is not None:
            self._subjects = SubjectKeyTable(self._store, self._index_key)
        return self._subjects

    def subject_key(self, token: str, key_id: bytes) -> SubjectKey:
        """The subject key a v3 envelope names; ``KeyError`` if the table lacks it (erased: ``SubjectErased``)."""
        found = self._subject_cache.get((token, key_id))
        if found is None:
            table = self.subject_table()
            if table is None:
                raise KeyError("no index key: subject keys need it")
            found = self._subject_cache[(token, key_id)] = table.get(token, key_id)
        return found

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
