"""Subject keys: one random 32-byte key per customer — the account where a record has one, else the meter — and
token epoch, in a deletable key table of the store; and the erasure fence that keeps a destroyed key destroyed.

A version-3 record key is derived from its DEK *and* its subject key (``streams.crypto.record_keys``), so
destroying a subject key makes every copy of that customer's records unreadable — in the store, on the sealed
topics, in backups and with share recipients — while every other customer's records under the same DEKs still
open. Layout (store blobs: files under the store, or objects on S3)::

    subjects/keys/<subject token>.json          the key, wrapped (AES-256-GCM under the subject KEK)
    subjects/leaves/<leaf index>.json           the subject log's row at that leaf (written before its hash)
    subjects/marks/<subject token>.json         the same row, found by token (erasure deletes both)
    subjects/grants/<token>/<region>.json       the key wrapped for a region's key (federated learning)
    subjects/fence/<sha256 of token>.json       written by erasure *before* the key is destroyed

The subject KEK is HKDF-SHA256 of the index key (info ``meterseal/subject-kek/v1``): whoever holds the index key
— the owner, a worker (it must seal under existing customers' keys) — can unwrap subject keys; none of them
opens a record without the record's DEK too, which only the owner (or a region, for its region) can unwrap.
The subject key never enters a Kafka topic or a ledger leaf: the subject log (``subjects/p000``) gets a
commitment (HMAC of the key) and the time of creation.

**The fence.** Erasure writes ``subjects/fence/<hash>.json`` (the subject's token hashed, the erased key ids, the
time) before it destroys anything. A key whose id is fenced is never loaded again — a copy of the key table
restored from a backup is refused — and a token whose hash is fenced is never given a key again: the customer's
next reading gets the next token **epoch** (``BlindIndex.meter(id, epoch)``), a new token and a new key, so a new
occupant of a meter is not linked to the old one. Readings of a fenced subject timed before its erasure are not
sealed again (dead letters with rule ``erased``, holding no content).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from streams.crypto import _primitives
from streams.crypto.envelope import DataKey, SubjectKey, open_with, seal
from streams.crypto.tokens import BlindIndex
from streams.exceptions import InvalidEnvelope, KeystoreError, SubjectErased
from streams.keys.owner import RSA, OwnerPublicKey
from streams.store.objects import json_objects

KEYS, MARKS, GRANTS, FENCE = "subjects/keys/", "subjects/marks/", "subjects/grants/", "subjects/fence/"
LEAVES = "subjects/leaves/"
LOG_TABLE, LOG_PARTITION = "subjects", 0
KINDS = ("meter", "account")
_KEK_ID = b"meterseal-subjkek"[:16]  # 16 bytes: the envelope's key id slot
MAX_EPOCHS = 1000  # a meter erased this often is a bug, not a tenant


def subject_hash(token: str) -> str:
    """What logs, fences and receipts name a subject by: SHA-256 of its token (hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def subject_kek(index_key: bytes) -> bytes:
    return _primitives.hkdf_sha256(index_key, info=b"meterseal/subject-kek/v1")


def commitment(key: SubjectKey) -> str:
    """A commitment to a subject key (the subject log's leaf carries it, never the key)."""
    return _primitives.hmac_sha256(key.secret, b"meterseal subject key commitment v1").hex()


def _aad(kind: str, token: str, key_id: bytes) -> bytes:
    return f"meterseal/subject-key/v1|{kind}|{token}|{key_id.hex()}".encode()


def _grant_context(region: str, token: str, key_id: bytes) -> bytes:
    return f"meterseal/subject-grant/v1|{region}|{token}|".encode() + key_id


@dataclass(frozen=True)
class FenceEntry:
    subject_hash: str
    key_ids: tuple[str, ...]
    erased_at_ms: int
    erasure_id: str


class Fence:
    """The erased subjects, by token hash (``subjects/fence/``). ``load`` reads them all; ``refresh`` only new ones."""

    def __init__(self, blobs: Any) -> None:
        self._blobs = blobs
        self._entries: dict[str, FenceEntry] = {}
        self._key_ids: set[str] = set()
        self._checked: dict[str, bool] = {}  # token -> fenced (``fenced_tokens``), cleared by each new entry
        self._lock = threading.Lock()

    @classmethod
    def load(cls, blobs: Any) -> "Fence":
        fence = cls(blobs)
        fence.refresh()
        return fence

    def refresh(self) -> list[FenceEntry]:
        """Read fence entries written since the last call; returns the new ones."""
        new = []
        for key in self._blobs.list(FENCE):
            hashed = key[len(FENCE):].removesuffix(".json")
            if hashed in self._entries or not key.endswith(".json"):
                continue
            raw = self._blobs.get(key)
            if raw is None:
                continue
            doc = json.loads(raw)
            entry = FenceEntry(doc["subject_hash"], tuple(doc["key_ids"]), int(doc["erased_at_ms"]), doc["erasure_id"])
            with self._lock:
                self._entries[hashed] = entry
                self._key_ids.update(entry.key_ids)
                self._checked = {}
            new.append(entry)
        return new

    def add(self, token: str, key_ids: Iterable[str], *, erasure_id: str, at: float) -> FenceEntry:
        """Fence a subject (erasure, before anything is destroyed); an existing entry is kept (a rerun)."""
        hashed = subject_hash(token)
        doc = {"subject_hash": hashed, "key_ids": sorted(set(key_ids)), "erased_at_ms": int(at * 1000),
               "erasure_id": erasure_id}
        self._blobs.create(f"{FENCE}{hashed}.json", json.dumps(doc, sort_keys=True).encode())
        self.refresh()
        return self._entries[hashed]

    def entry(self, token: str) -> FenceEntry | None:
        return self._entries.get(subject_hash(token))

    def __len__(self) -> int:
        return len(self._entries)

    def fenced_tokens(self, tokens: Iterable[str | None]) -> set[str]:
        """Those of ``tokens`` whose subject was erased (a sink checks each batch's tokens: answers are cached until
        the next new entry)."""
        checked, entries = self._checked, self._entries
        if len(checked) >= 200_000:
            checked.clear()
        out = set()
        for token in tokens:
            if token is None:
                continue
            hit = checked.get(token)
            if hit is None:
                hit = checked[token] = subject_hash(token) in entries
            if hit:
                out.add(token)
        return out

    def fenced_key(self, key_id: bytes | str) -> bool:
        return (key_id.hex() if isinstance(key_id, bytes) else key_id) in self._key_ids

    @property
    def entries(self) -> list[FenceEntry]:
        return list(self._entries.values())


@dataclass(frozen=True)
class Epoch:
    """A subject's current token and epoch, and until when (epoch seconds) earlier epochs were erased."""

    token: str
    epoch: int
    erased_until: float = float("-inf")


def current_epoch(index: BlindIndex, fence: Fence, kind: str, subject_id: str) -> Epoch:
    """The first epoch of ``subject_id`` whose token is not fenced (0 for a subject never erased)."""
    make = index.meter if kind == "meter" else index.account
    erased_until = float("-inf")
    for epoch in range(MAX_EPOCHS):
        token = make(subject_id, epoch)
        entry = fence.entry(token)
        if entry is None:
            return Epoch(token, epoch, erased_until)
        erased_until = max(erased_until, entry.erased_at_ms / 1000)
    raise KeystoreError(f"{kind} erased {MAX_EPOCHS} times: refusing to go on")


def all_tokens(index: BlindIndex, fence: Fence, kind: str, subject_id: str) -> list[str]:
    """Every token the subject has had, oldest first, up to its current one (search reads them all)."""
    current = current_epoch(index, fence, kind, subject_id)
    make = index.meter if kind == "meter" else index.account
    return [make(subject_id, e) for e in range(current.epoch + 1)]


class SubjectKeyTable:
    """The subject-key table of one store, for a holder of the index key."""

    def __init__(self, store: Any, index_key: bytes, *, fence: Fence | None = None) -> None:
        self.store, self.blobs = store, store.blobs
        self._kek = DataKey(_KEK_ID, subject_kek(index_key))
        self.fence = fence if fence is not None else Fence.load(self.blobs)

    def _unwrap(self, token: str, doc: dict[str, Any]) -> SubjectKey:
        key_id = bytes.fromhex(doc["key_id"])
        try:
            secret = open_with({_KEK_ID: self._kek}, bytes.fromhex(doc["wrapped"]), aad=_aad(doc["kind"], token, key_id))
        except InvalidEnvelope as exc:
            raise KeystoreError(f"subject key {doc['key_id']} does not open with this index key "
                                "(another keystore's store, or altered: run `meterseal ledger verify`)") from exc
        return SubjectKey(key_id, secret, doc["created_at_ms"] / 1000)

    def load(self, token: str) -> SubjectKey | None:
        """The subject's key, or None if it has none; ``SubjectErased`` if it was erased (a restored copy)."""
        raw = self.blobs.get(f"{KEYS}{token}.json")
        if raw is None:
            if self.fence.entry(token) is not None:
                raise SubjectErased(subject_hash(token))
            return None
        doc = json.loads(raw)
        if self.fence.fenced_key(doc["key_id"]) or self.fence.entry(token) is not None:
            raise SubjectErased(subject_hash(token))
        return self._unwrap(token, doc)

    def get(self, token: str, key_id: bytes) -> SubjectKey:
        """The key a v3 envelope names: ``KeyError`` (``SubjectErased``) unless the table holds exactly that key."""
        if self.fence.fenced_key(key_id):
            raise SubjectErased(key_id.hex())
        key = self.load(token)
        if key is None or key.key_id != key_id:
            raise KeyError(key_id.hex())
        return key

    def create(self, token: str, kind: str, *, now: float | None = None) -> tuple[SubjectKey, bool]:
        """The subject's key, made now if it has none: ``(key, made)``. Two writers racing for one subject both get
        the one that was stored first. A fenced token is refused (``SubjectErased``): its epoch is over."""
        if kind not in KINDS:
            raise ValueError(f"subject kind must be one of {KINDS}, got {kind!r}")
        if self.fence.entry(token) is not None:
            raise SubjectErased(subject_hash(token))
        found = self.load(token)
        if found is not None:
            return found, False
        if self.blobs.exists(f"{FENCE}{subject_hash(token)}.json"):  # fenced since this table last read the fence
            raise SubjectErased(subject_hash(token))
        made = SubjectKey.generate(now=now)
        key = SubjectKey(made.key_id, made.secret, int(made.created_at * 1000) / 1000)  # as stored: milliseconds
        doc = {"kind": kind, "key_id": key.key_id.hex(), "created_at_ms": int(key.created_at * 1000),
               "wrapped": seal(self._kek, key.secret, aad=_aad(kind, token, key.key_id)).hex(),
               "commitment": commitment(key)}
        if self.blobs.create(f"{KEYS}{token}.json", json.dumps(doc, sort_keys=True).encode()):
            return key, True
        return self.load(token), False  # another writer made it first: theirs is the key

    def leaf_row(self, leaf_index: int) -> dict[str, Any] | None:
        raw = self.blobs.get(f"{LEAVES}{leaf_index:010d}.json")
        return None if raw is None else json.loads(raw)

    def mark(self, token: str, leaf_index: int) -> dict[str, Any] | None:
        """Record the subject's row at ``leaf_index`` of the subject log, by index and by token (write-once; the
        caller holds the log's lock and appends the row's hash next). None — and nothing written — if the key is gone
        (erased meanwhile) or already has a leaf (another writer logged it)."""
        raw = self.blobs.get(f"{KEYS}{token}.json")
        if raw is None or self.blobs.exists(f"{MARKS}{token}.json"):
            return None
        doc = json.loads(raw)
        row = {"leaf_index": leaf_index, "subject_tok": token, "kind": doc["kind"], "key_id": doc["key_id"],
               "commitment": doc["commitment"], "created_at_ms": doc["created_at_ms"]}
        data = json.dumps(row, sort_keys=True).encode()
        if not self.blobs.create(f"{LEAVES}{leaf_index:010d}.json", data):
            raise KeystoreError(f"subject log leaf {leaf_index} is taken: another writer appended without the lock")
        self.blobs.create(f"{MARKS}{token}.json", data)
        return row

    def repair(self, leaf_index: int) -> dict[str, Any] | None:
        """The row a writer stopped between writing a leaf's row and appending its hash left at ``leaf_index`` (its
        mark made if missing), or None: the caller appends its hash before anything else."""
        row = self.leaf_row(leaf_index)
        if row is not None:
            self.blobs.create(f"{MARKS}{row['subject_tok']}.json", json.dumps(row, sort_keys=True).encode())
        return row

    def unmarked(self) -> list[str]:
        """Tokens with a key but no leaf yet (made by a writer stopped before it appended the leaf)."""
        marked = {k[len(MARKS):].removesuffix(".json") for k in self.blobs.list(MARKS)}
        return [t for t in self.tokens() if t not in marked]

    def tokens(self) -> list[str]:
        return [k[len(KEYS):].removesuffix(".json") for k in self.blobs.list(KEYS) if k.endswith(".json")]

    def grant_region(self, token: str, key: SubjectKey, region: str, public: OwnerPublicKey) -> bool:
        """Wrap the subject key for a region's key (a region opens its region's records of this subject)."""
        context = _grant_context(region, token, key.key_id)
        wrapped = (_primitives.rsa_wrap(public.public, key.secret, context) if public.scheme == RSA
                   else _primitives.hpke_wrap(public.public, key.secret, context))
        doc = {"key_id": key.key_id.hex(), "region": region, "scheme": public.scheme,
               "region_fingerprint": public.fingerprint, "wrapped": wrapped.hex(),
               "created_at_ms": int(key.created_at * 1000)}
        return self.blobs.create(f"{GRANTS}{token}/{region}.json", json.dumps(doc, sort_keys=True).encode())

    def destroy(self, token: str) -> int:
        """Delete every copy of the subject's key this store holds (the key, its region grants, its mark); returns
        how many objects were removed. The caller fences the subject first."""
        removed = int(self.blobs.delete(f"{KEYS}{token}.json"))
        for key in self.blobs.list(f"{GRANTS}{token}/"):  # (a customer's grants under its token: no full listing)
            removed += int(self.blobs.delete(key))
        raw = self.blobs.get(f"{MARKS}{token}.json")
        if raw is not None:
            removed += int(self.blobs.delete(f"{LEAVES}{json.loads(raw)['leaf_index']:010d}.json"))
        removed += int(self.blobs.delete(f"{MARKS}{token}.json"))
        return removed


def subject_rows(store: Any) -> list[dict[str, Any]]:
    """The subject log's rows, by leaf index: what ``ledger verify`` audits."""
    return sorted((doc for _, doc in json_objects(store.blobs, LEAVES)), key=lambda r: r["leaf_index"])


def region_subject_key(store: Any, region: str, token: str, key_id: bytes, unwrap: Callable[[bytes, bytes], bytes],
                       fingerprint: str) -> SubjectKey:
    """A subject key from its region grant (``unwrap(wrapped, context)`` with the region's private key)."""
    raw = store.blobs.get(f"{GRANTS}{token}/{region}.json")
    if raw is None:
        raise KeyError(key_id.hex())
    doc = json.loads(raw)
    if doc["region_fingerprint"] != fingerprint or doc["key_id"] != key_id.hex():
        raise KeyError(key_id.hex())
    secret = unwrap(bytes.fromhex(doc["wrapped"]), _grant_context(region, token, key_id))
    return SubjectKey(key_id, secret, doc["created_at_ms"] / 1000)


@dataclass
class SubjectRing:
    """The worker's subject keys: a cache in front of the table. ``key(token, kind)`` gives the subject's key, made
    on first use; new ones wait in ``take_new`` for their leaf; ``forget`` drops erased subjects from the cache."""

    table: SubjectKeyTable
    clock: Callable[[], float] = time.time
    on_new: Callable[[str, SubjectKey], None] | None = None  # (token, key): region grants
    _cache: dict[str, SubjectKey] = field(default_factory=dict, init=False, repr=False)
    _new: list[str] = field(default_factory=list, init=False, repr=False)

    def key(self, token: str, kind: str) -> SubjectKey:
        found = self._cache.get(token)
        if found is None:
            if len(self._cache) >= 200_000:
                self._cache.clear()
            found, made = self.table.create(token, kind, now=self.clock())
            if made:
                self._new.append(token)
                if self.on_new is not None:
                    self.on_new(token, found)
            self._cache[token] = found
        return found

    def cached(self, token: str) -> SubjectKey | None:
        return self._cache.get(token)

    def take_new(self) -> list[str]:
        out, self._new = self._new, []
        return out

    def forget(self, hashes: set[str]) -> int:
        """Drop cached keys of subjects whose token hash is in ``hashes`` (fenced by an erasure); returns how many."""
        gone = [t for t in self._cache if subject_hash(t) in hashes]
        for token in gone:
            del self._cache[token]
        return len(gone)
