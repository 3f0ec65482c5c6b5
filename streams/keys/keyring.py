"""The reader's keyring: DEKs unwrapped on demand from the store, kept for a while in memory.

Reading never needs the broker: every wrapped DEK is kept in ``<store>/deks`` (the key log's record of its
creation, never rewritten). A DEK re-wrapped later — to a key service's newest key version (``keys rewrap``)
or into a key service (``keys migrate``) — has its newer wrap under ``kms/wraps/`` in the store, which the
keyring reads first. Who unwraps: the owner's private keys in this process (a passphrase keystore), or a key
service that keeps them (``streams.kms``). A key id with no wrapped DEK, or one wrapped for an owner key this
keystore does not hold, fails to open like any other bad envelope.

Unwrapped DEKs are cached for ``ttl_s`` seconds, at most ``max_keys`` of them (least recently used out first):
a key service sees one unwrap per DEK per TTL, not one per query. Subject keys are cached the same way, so an
erased customer's key (destroyed in the store) leaves a long-running reader's memory within one TTL. When the service refuses (the token was
revoked), the whole cache is dropped at once: nothing more opens here until the service agrees again.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Mapping

from streams.crypto.envelope import DataKey, SubjectKey
from streams.exceptions import KeyServiceDenied
from streams.keys.cache import KeyCache
from streams.keys.owner import Unwrapper
from streams.keys.subjects import SubjectKeyTable

WRAPS = "kms/wraps/"  # store blobs: the newest wrap of a DEK re-wrapped after its creation


def current_wrap(store: Any, key_hex: str) -> dict[str, Any] | None:
    """A stored DEK's newest wrapped form: its re-wrap if it has one, else the one it was created with."""
    blobs = getattr(store, "blobs", None)
    data = blobs.get(WRAPS + key_hex + ".json") if blobs is not None and len(key_hex) == 32 else None
    if data:
        doc = json.loads(data)
        return {**doc, "wrapped": bytes.fromhex(doc["wrapped"])}
    return store.get_dek(key_hex)


def put_wrap(store: Any, record: dict[str, Any]) -> None:
    """Keep a DEK's new wrapped form (``WrappedKey`` fields); its creation record and key-log leaf stay as they were."""
    store.blobs.put(WRAPS + record["key_id"] + ".json",
                    json.dumps({**record, "wrapped": record["wrapped"].hex()}, sort_keys=True).encode())


class OwnerUnwrappers:
    """Unwraps a ``WrappedKey`` record with the owner private key it names (a dict of ``Unwrapper`` by fingerprint)."""

    def __init__(self, unwrappers: Mapping[str, Unwrapper]) -> None:
        self._unwrappers = unwrappers

    def unwrap_dek(self, record: dict[str, Any]) -> DataKey:
        unwrapper = self._unwrappers.get(record["owner_fingerprint"])
        if unwrapper is None:
            raise KeyError(record["key_id"])
        return unwrapper.unwrap(bytes.fromhex(record["key_id"]), record["wrapped"], created_at=record["created_at_ms"] / 1000)


class Keyring:
    """``keyring(key_id) -> DataKey``; raises ``KeyError`` for a key it cannot produce.

    ``unwrap``: the owner's ``Unwrapper``s by fingerprint, or anything with ``unwrap_dek(record) -> DataKey`` (a key
    service: ``streams.kms.service.ServiceUnwrap``, whose errors — service down, token refused, a wrapped key that
    does not open — pass through as ``KeyServiceError``s, not as a bad envelope).

    With the index key it also gives subject keys (``subject_key(token, key_id)``, from the store's subject-key
    table), which version-3 records need besides their DEK; without it a v3 record does not open."""

    def __init__(self, store: Any, unwrap: Mapping[str, Unwrapper] | Any, *, index_key: bytes | None = None,
                 ttl_s: float = 300.0, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0 or max_keys < 1:
            raise ValueError("the DEK cache needs ttl_s > 0 and max_keys >= 1")
        self._store = store
        self._unwrap = OwnerUnwrappers(unwrap) if isinstance(unwrap, Mapping) else unwrap
        self.ttl_s, self.max_keys = ttl_s, max_keys
        self._cache = KeyCache(ttl_s, max_keys, clock)  # key id -> DataKey
        self._subject_cache = KeyCache(ttl_s, max_keys, clock)  # (token, subject key id) -> SubjectKey
        self._index_key = index_key
        self._subjects: SubjectKeyTable | None = None

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
            found = table.get(token, key_id)
            self._subject_cache.put((token, key_id), found)
        return found

    def __call__(self, key_id: bytes) -> DataKey:
        dek = self._cache.get(key_id)
        if dek is not None:
            return dek
        wrapped = current_wrap(self._store, key_id.hex())
        if wrapped is None:
            raise KeyError(key_id.hex())
        try:
            dek = self._unwrap.unwrap_dek(wrapped)
        except KeyServiceDenied:
            self.forget()  # the service said no: nothing cached opens anything more here either
            raise
        self._cache.put(key_id, dek)
        return dek

    def forget(self) -> None:
        """Drop every cached DEK and subject key."""
        self._cache.clear()
        self._subject_cache.clear()

    def __len__(self) -> int:
        return len(self._cache)
