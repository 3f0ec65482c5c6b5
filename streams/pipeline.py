"""What the worker does to each message, as plain methods a unit test can call without a broker.

``agents.app`` wires these to Faust: each agent is ``async for event in stream: pipeline.<step>(...)``
plus the sends. The worker holds the index key (tokens) and a way to make wrapped DEKs — the owner's
*public* key, or a key service it may ask for new DEKs only (``streams.kms``); it never holds the owner's
private key nor may unwrap a stored DEK, so a compromised worker cannot read the store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import schemas
from ledger import leaf
from ledger.hashing import leaf_hash
from ledger.log import Log
from ledger.note import Signer
from ledger.tiles import Fenced

from streams.anomaly.alerting import Alerting
from streams.crypto.envelope import DataKey, DekRing
from streams.exceptions import InvalidInput, KeyServiceError, MeterSealError
from streams.rollups.keeper import RollupKeeper
from streams.keys.owner import OwnerPublicKey
from streams.keys.regions import wrap_for_region
from streams.seal import Rejected, Sealed, Sealer, Source, StateCodec, derive_state_key
from streams.sealed_batch import sealed_records
from streams.settings import Settings
from streams.crypto.envelope import record_key_for
from streams.keys.subjects import LOG_TABLE as SUBJECT_LOG, Fence, SubjectKeyTable, SubjectRing, current_epoch, subject_hash
from streams.unseal import subject_token
from streams.share.continuous import ShareTap
from streams.store.base import Store
from streams.store.segments import LEDGERED, log_origin
from streams.crypto.tokens import BlindIndex
from streams.devices import counters as device_counters
from streams.devices.registry import Directory
from streams.devices.signed import parse as parse_signed, payload_reading
from streams.devices.verify import DeviceCheck, Verified
from streams.validate import Policy

def tune_gc(*, gen0: int = 10_000) -> None:
    """Collect cyclic garbage less often on the hot path: what is loaded at start (modules, River's trees,
    the app) is moved out of the collector's sight (``gc.freeze``) and a young-generation collection waits for
    ``gen0`` new objects instead of 700. A seal batch allocates tens of thousands of short-lived objects that
    die by reference counting; with the defaults the collector walked the long-lived heap again and again
    (in-process detection 28-29 -> 18-22 µs CPU a reading, same run). Cycles are still collected."""
    import gc

    gc.freeze()
    gc.set_threshold(gen0, 20, 20)


_log = logging.getLogger("meterseal.worker")
SIGN_RETRY_S = 5.0  # after a key service failed to sign, checkpoints wait this long before the next try
KMS_WAIT_S = 600.0  # the store thread waits this long for a key service to give a DEK (rollups), then gives up

SINKS = {"readings.sealed": ("readings", "sealed"), "bills.sealed": ("bills", "sealed"), "dlq": ("dlq", "dead_letter")}


@dataclass
class Pipeline:
    settings: Settings
    index_key: bytes = field(repr=False)
    # makes each new DEK and its wrapped form, ``new_dek(now) -> (DataKey, WrappedKey fields)``: the owner's public
    # key (a passphrase keystore) or a key service (``streams.kms.service.ServiceDeks``)
    owner: OwnerPublicKey | Any
    store: Store  # streams.store.base: local segments or Iceberg on S3
    signer: Signer | Any | None = field(default=None, repr=False)  # signs ledger checkpoints (here, or in a key service)
    clock: Callable[[], float] = time.time
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # region -> region public key (``Keystore.region_publics``), asked again whenever a DEK is made, so a
    # region key added while the worker runs gets grants of the region's next DEKs
    region_keys: Callable[[], dict[str, OwnerPublicKey]] = lambda: {}

    def __post_init__(self) -> None:
        self.index = BlindIndex(self.index_key)
        self.pending_keys: list[dict[str, Any]] = []  # wrapped DEKs to publish on keys.deks
        self._keys_lock = threading.Lock()
        self._wraps: dict[bytes, dict[str, Any]] = {}  # new DEK id -> its wrapped form, until ``_on_new_key`` keeps it
        self.ring = DekRing(self.settings.dek_max_records, self.settings.dek_max_age_s, self._on_new_key, self.clock,
                            self._new_dek)
        self._region_rings: dict[str, DekRing] = {}
        # customers' subject keys (envelope v3) and the erasure fence, read again every ``refresh_erasures``
        self.fence = Fence.load(self.store.blobs)
        self.subjects = SubjectRing(SubjectKeyTable(self.store, self.index_key, fence=self.fence), self.clock,
                                    on_new=self._on_new_subject)
        self._region_publics: dict[str, OwnerPublicKey] = self.region_keys()
        self._subjects_caught_up = False
        self.sealer = Sealer(self.index, self.ring, Policy.from_settings(self.settings),
                             max_message_bytes=self.settings.max_message_bytes, clock=self.clock,
                             region_ring=self.region_ring, subjects=self.subjects.key,
                             epochs=lambda kind, subject_id: current_epoch(self.index, self.fence, kind, subject_id))
        self.states = StateCodec(derive_state_key(self.index_key))
        self.unreadable_dead_letters = 0
        self.unreadable_keys = 0
        self.erased_dropped = 0  # sealed records of erased subjects the sink refused (a redelivery, a rebuild)
        self._logs: dict[tuple[str, int], Log] = {}
        self.pending_checkpoints: list[dict[str, Any]] = []  # Checkpoint records for ledger.checkpoints
        self._checkpoints_lock = threading.Lock()  # the seal agent stores readings in a thread (agents.batches)
        self._thread_locks: dict[tuple[str, int], threading.Lock] = {}
        self._thread_locks_guard = threading.Lock()
        self.alerting = Alerting(self.settings, self.index, self.index_key, self.store.root / "detector", self.clock)
        self.share_tap: ShareTap | None = ShareTap(self.store, self.index_key, clock=self.clock)
        self._sign_after = 0.0  # no checkpoint is signed before this time (the key service failed just before)
        # signed readings (streams.devices): the registry, the check before the Sealer, each device's window codec
        self.directory = Directory(self.store, self.index_key, on_error=self._registry_unreadable)
        self.devices = DeviceCheck(self.directory.get, self.index, require_signed=self.settings.require_signed,
                                   max_message_bytes=self.settings.max_message_bytes)
        self.windows = StateCodec(derive_state_key(self.index_key), key_id=b"meterseal-devseq",
                                  aad_prefix=b"device-seq|", pack=device_counters.pack, unpack=device_counters.unpack)
        self.registry_errors = 0
        # rollups (streams.rollups): sealed by a Sealer of their own with DEK rings of their own, since they are
        # sealed in the store thread while the seal agent seals readings on the event loop (a ring is one thread's)
        self._rollup_rings: dict[str, DekRing] = {}
        self.rollups: RollupKeeper | None = None
        if self.settings.rollups:
            rollup_sealer = Sealer(self.index, DekRing(self.settings.dek_max_records, self.settings.dek_max_age_s,
                                                       self._on_new_key, self.clock, self._new_dek_waiting),
                                   Policy.from_settings(self.settings), clock=self.clock, region_ring=self._rollup_ring,
                                   subjects=self.subjects.key,  # the meter's (account's) subject key, as its readings
                                   epochs=lambda kind, subject_id: current_epoch(self.index, self.fence, kind, subject_id))
            self.rollups = RollupKeeper(self.store, self.index_key, rollup_sealer, grace_s=self.settings.rollup_grace_s,
                                        idle_s=self.settings.rollup_idle_s, clock=self.clock)

    def _rollup_ring(self, region: str) -> DekRing:
        ring = self._rollup_rings.get(region)
        if ring is None:
            ring = self._rollup_rings[region] = DekRing(self.settings.dek_max_records, self.settings.dek_max_age_s,
                                                        lambda dek: self._on_new_key(dek, region), self.clock,
                                                        self._new_dek_waiting)
        return ring

    def _registry_unreadable(self, exc: Exception) -> None:
        self.registry_errors += 1

    def region_ring(self, region: str) -> DekRing:
        """The DEK ring of one region: records of different regions never share a DEK (``streams.keys.regions``)."""
        ring = self._region_rings.get(region)
        if ring is None:
            ring = self._region_rings[region] = DekRing(self.settings.dek_max_records, self.settings.dek_max_age_s,
                                                        lambda dek: self._on_new_key(dek, region), self.clock,
                                                        self._new_dek)
        return ring

    def _new_dek(self, now: float) -> DataKey:
        """A new DEK and its wrap for the owner, from ``owner`` (a key service that is down raises
        ``KeyServiceUnavailable`` here, before anything is sealed: the worker pauses and seals the batch again)."""
        dek, wrapped = self.owner.new_dek(now)
        self._wraps[dek.key_id] = wrapped
        return dek

    def _new_dek_waiting(self, now: float) -> DataKey:
        """``_new_dek`` for the rings of the store thread (rollups): while the key service cannot give a DEK, the
        store thread waits here, trying every second — the seal agent's queue fills and the worker stops consuming,
        as the seal agent does (``agents.app: until_keys``); after ``KMS_WAIT_S`` it gives up (the worker exits 70
        and is read again from its last commit)."""
        started = time.monotonic()
        while True:
            try:
                return self._new_dek(now)
            except KeyServiceError as exc:
                waited = time.monotonic() - started
                if waited >= KMS_WAIT_S:
                    raise
                if int(waited) % 30 == 0:
                    _log.error("key service: %s; the store thread waits for a DEK (rollups)", exc)
                time.sleep(1.0)

    def _on_new_key(self, dek: DataKey, region: str | None = None) -> None:
        """Keep a new DEK's wrap for the owner (and wrap it for its region's key, if the region has one) in the
        store now, queue it for keys.deks."""
        wrapped = {"key_id": dek.key_hex, **self._wraps.pop(dek.key_id), "created_at_ms": int(dek.created_at * 1000),
                   "worker": self.worker}
        self.store.put_dek(wrapped)
        if region:
            self._region_publics = self.region_keys()
            public = self._region_publics.get(region)
            if public is not None:
                self.store.put_grant(wrap_for_region(public, region, dek))
        with self._keys_lock:  # (rollups make DEKs in the store thread)
            self.pending_keys.append(wrapped)

    # -- continuous shares (streams.share.continuous) ----------------------------------------------
    def tap(self, outcome: Sealed | Rejected) -> int:
        """Queue a just-sealed reading for every active grant that covers it (its record key derived from the
        DEK that sealed it, which the region's ring still holds); returns how many grants took it."""
        if self.share_tap is None or not isinstance(outcome, Sealed):
            return 0
        return self.share_tap.observe(outcome, self._record_key)

    def _on_new_subject(self, token: str, key: Any) -> None:
        """Wrap a new subject key for every region's key: a region still opens only its own region's records (it
        holds only its region's DEKs), whichever regions the customer's meters are in."""
        for region, public in self._region_publics.items():
            self.subjects.table.grant_region(token, key, region, public)

    def _record_key(self, record: dict[str, Any]) -> bytes:
        ring = self.region_ring(record["region"] or "")
        dek = ring.key(bytes.fromhex(record["key_id"]))
        return record_key_for(record["envelope"], dek, record["record_id"], self.subjects.cached(subject_token(record)))

    # -- subject keys and erasure ------------------------------------------------------------------
    def log_new_subjects(self) -> int:
        """Append the subject log's leaves of subject keys made since the last call (and, the first time, of keys a
        stopped writer made but did not log); returns how many. Before any record sealed under a new key is
        stored: ``store_sealed`` calls it."""
        tokens = self.subjects.take_new()
        if not self._subjects_caught_up:
            self._subjects_caught_up = True
            tokens = list(dict.fromkeys([*self.subjects.table.unmarked(), *tokens]))
        if not tokens:
            return 0
        table = self.subjects.table
        with self.locked(SUBJECT_LOG, 0):
            log = self._open_log(SUBJECT_LOG, 0)
            while (left := table.repair(log.size)) is not None:  # a writer stopped between a row and its hash
                log.append([leaf_hash(leaf.encode_subject_event(left))])
            rows = []
            for token in tokens:
                if self.fence.entry(token) is not None:
                    continue  # erased meanwhile: no leaf for a key that is gone
                row = table.mark(token, log.size + len(rows))  # (its row is written before its hash)
                if row is not None:
                    rows.append(row)
            log.append([leaf_hash(leaf.encode_subject_event(row)) for row in rows])
            self.checkpoint_due(only=(SUBJECT_LOG, 0))
        return len(rows)

    def read_fence(self) -> list:
        """New erasure fence entries since the last call (store I/O: the worker calls it in a thread)."""
        return self.fence.refresh()

    def forget_erased(self, hashes: set[str]) -> None:
        """Forget the erased subjects' cached keys and tokens: their next reading gets the next token epoch."""
        if hashes:
            self.subjects.forget(hashes)
            for sealer in (self.sealer, self.rollups.sealer if self.rollups is not None else None):
                if sealer is not None:  # (the rollups' Sealer caches tokens too)
                    sealer.forget(lambda token: subject_hash(token) in hashes)

    def erased_token(self, token: str) -> bool:
        """Whether a meter or account token is one an erasure fenced (this worker's view of the fence)."""
        return self.fence.entry(token) is not None

    def refresh_erasures(self) -> set[str]:
        """``read_fence`` then ``forget_erased``; returns the new entries' subject hashes."""
        new = {entry.subject_hash for entry in self.read_fence()}
        self.forget_erased(new)
        return new

    def take_shares(self) -> list[tuple[str, bytes, bytes]]:
        """(topic, key, value) messages for the ``shares.<grant_id>`` topics, once each."""
        return self.share_tap.take() if self.share_tap is not None else []

    def take_new_keys(self) -> list[tuple[bytes, dict[str, Any]]]:
        """(key, WrappedKey record) messages for keys.deks, once each."""
        with self._keys_lock:
            out = [(w["key_id"].encode(), w) for w in self.pending_keys]
            self.pending_keys.clear()
        return out

    # -- seal agents ---------------------------------------------------------------------------
    def seal_reading(self, data: bytes, source: Source, states: dict[bytes, bytes] | Any) -> Sealed | Rejected:
        """Seal one raw reading. ``states`` maps meter token -> sealed ``MeterState`` (a Faust table)."""
        batch = MeterStates(self.states, states)
        outcome = self.sealer.reading(data, source, batch.get)
        batch.update(outcome)
        batch.flush()
        return outcome

    def seal_messages(self, messages: list[bytes], sources: list[Source], state_of: Callable[[str], Any], *,
                      windows: "BatchState", keys: list[bytes | None] | None = None, contexts: list[Any] | None = None,
                      rejects: list[InvalidInput | None] | None = None) -> list[list[Sealed | Rejected]]:
        """A seal batch's raw messages, each to its outcomes (``Sealer.messages``), after the device check:
        signed envelopes verified (``streams.devices.verify``; ``windows`` holds each device's ``device_seq``
        window) and sealed with their device fields, dead letters for what fails it, and for ``rejects`` (what a
        gateway forwarded already judged: ``streams.ingest.forwarded``). A signed reading's dead letter keeps the
        whole envelope it came in."""
        verdicts = self.devices.check_all(messages, windows, contexts)
        if verdicts is None and not any(rejects or ()):
            return self.sealer.messages(messages, sources, state_of, keys=keys)
        verdicts = verdicts or [None] * len(messages)
        for i, reject in enumerate(rejects or ()):
            if reject is not None:
                verdicts[i] = reject
        todo = [i for i, v in enumerate(verdicts) if not isinstance(v, InvalidInput)]
        signed = [verdicts[i] if isinstance(verdicts[i], Verified) else None for i in todo]
        sealed = self.sealer.messages([s.payload if s else messages[i] for i, s in zip(todo, signed)],
                                      [sources[i] for i in todo], state_of,
                                      keys=None if keys is None else [keys[i] for i in todo],
                                      devices=[s.device if s else None for s in signed])
        out: list[list[Sealed | Rejected]] = [[] for _ in messages]
        for i, s, outcomes in zip(todo, signed, sealed):
            if s is not None:  # a signed reading the Sealer refused: its dead letter keeps the whole envelope
                outcomes = [o if isinstance(o, Sealed) else self.sealer.reject(
                    messages[i], sources[i], InvalidInput(o.record["rule"], o.record["reason"]), decoded=o.decoded)
                    for o in outcomes]
            out[i] = outcomes
        for i, verdict in enumerate(verdicts):
            if isinstance(verdict, InvalidInput):
                out[i] = [self.sealer.reject(messages[i], sources[i], self._erased_envelope(messages[i]) or verdict)]
        return out

    def _erased_envelope(self, data: bytes) -> InvalidInput | None:
        """``erased`` for a refused signed envelope whose reading (verified or not) is an erased subject's, timed
        before the erasure: its dead letter then keeps nothing of it (``Sealer.erased_rejection``)."""
        try:
            envelope = parse_signed(data)
            return None if envelope is None else self.sealer.erased_rejection(payload_reading(envelope))
        except InvalidInput:
            return None

    def seal_bill(self, data: bytes, source: Source) -> Sealed | Rejected:
        return self.sealer.bill(data, source)

    # -- sink agents ---------------------------------------------------------------------------
    def store_batch(self, topic: str, messages: Iterable[tuple[int, int, bytes]]) -> tuple[int, list[Rejected]]:
        """Store ``(partition, offset, value)`` messages of a sealed topic; returns (rows written, dead letters).

        A message of readings.sealed or bills.sealed holds a batch of sealed records (``sealed_batch.batch_messages``;
        a single record is read too); its records are stored with the message's offset. A message that is
        not a valid record of the topic's schema becomes a dead letter instead of a crash or a silent drop.
        """
        table, schema = SINKS[topic]
        by_partition: dict[int, list[tuple[int, dict]]] = {}
        rejected = []
        for partition, offset, value in messages:
            try:
                records = [schemas.decode(schema, value)] if topic == "dlq" else sealed_records(value)
            except schemas.SchemaError as exc:
                if topic == "dlq":  # garbage on dlq itself: counted and logged, not looped back into dlq
                    self.unreadable_dead_letters += 1
                    continue
                rejected.append(self.sealer.reject(value, Source(topic, partition, offset),
                                                   InvalidInput("sink", f"not a {schema} record: {exc}")))
                continue
            by_partition.setdefault(partition, []).extend((offset, record) for record in records)
        return sum(self.store_sealed(table, p, rows) for p, rows in by_partition.items()), rejected

    def store_sealed(self, table: str, partition: int, rows: list[tuple[int, dict[str, Any]]]) -> int:
        """Store decoded records of one partition of a sealed topic, given as ``(offset, record)``; returns rows
        written (deduplicated; ledgered for readings and bills)."""
        self.log_new_subjects()  # subject keys get their leaves before records sealed under them are stored
        if table not in LEDGERED:
            return self.store.append(table, partition, rows)
        return self._store_ledgered(table, partition, self._not_erased(rows))

    def _not_erased(self, rows: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
        """The rows whose subject was not erased: a sealed topic keeps an erased customer's records (re-read after a
        restart, a rebalance or by ``store rebuild``, or sealed by a worker that had not seen the fence yet), and
        the store must not take them back. Dropped ones are counted in ``erased_dropped``."""
        if not self.fence:
            return rows
        fenced = self.fence.fenced_tokens([r[t] for _, r in rows for t in ("meter_tok", "account_tok")])
        if not fenced:
            return rows
        kept = [(o, r) for o, r in rows if r["meter_tok"] not in fenced and r["account_tok"] not in fenced]
        self.erased_dropped += len(rows) - len(kept)
        return kept

    # -- the ledger ------------------------------------------------------------------------------
    def origin(self, table: str, partition: int) -> str:
        """The log's name in its checkpoints: per ledger key, table and partition."""
        return log_origin(self.signer.verifier.key_hash.hex() if self.signer else "unsigned", table, partition)

    def log(self, table: str, partition: int) -> Log:
        """The partition's log, reloaded if another process appended, caught up if a crash cut an append short."""
        log = self._open_log(table, partition)
        self._log_stored_rows(log, table, partition)
        return log

    def catch_up(self, table: str, partition: int) -> int:
        """Append the hashes of rows a stopped writer stored but did not log (killed between the two); returns how
        many. A worker runs it for the partitions it is given, so the log does not wait for the next record."""
        with self.locked(table, partition):
            return self._log_stored_rows(self._open_log(table, partition), table, partition)

    def _log_stored_rows(self, log: Log, table: str, partition: int) -> int:
        if self.store.max_leaf(table, partition) < log.size:
            return 0
        behind = self.store.rows(table, partition, min_leaf=log.size)  # rows were written, their hashes were not
        if [r["leaf_index"] for r in behind] != list(range(log.size, log.size + len(behind))):
            raise MeterSealError(f"{table}/p{partition}: stored leaf indexes do not follow the ledger; "
                                 "run `meterseal ledger verify`")
        log.append([leaf_hash(leaf.encode(r)) for r in behind])
        return len(behind)

    def _store_ledgered(self, table: str, partition: int, rows: list[tuple[int, dict]]) -> int:
        """Dedup, give each new record its leaf index and per-meter sequence, write the segment, then append."""
        rollups = self.rollups if table == "readings" else None
        with self.locked(table, partition):
            log = self.log(table, partition)
            fresh = self.store.fresh(table, partition, rows)
            first_leaf = log.size
            self.store.number(table, partition, fresh, first_leaf)
            if rollups is not None:
                rollups.before_store(partition, first_leaf)
            written = self.store.write(table, partition, fresh)
            log.append([leaf_hash(leaf.encode(r)) for r in fresh])
            if rollups is not None:  # counted, state saved, closed cells written: before the raw offsets are acked
                rollups.after_store(partition, rows, fresh, first_leaf)
            self.checkpoint_due(only=(table, partition))
        return written

    def rollup_tick(self, *, force: bool = False) -> int:
        """Close idle rollup cells (every open one with ``force``) of the readings partitions this worker holds;
        returns rows written. In a thread: it takes each partition's lock."""
        if self.rollups is None:
            return 0
        written = 0
        for partition in self.rollups.partitions():
            with self.locked("readings", partition):
                written += self.rollups.tick(partition, self.store.max_leaf("readings", partition) + 1, force=force)
        return written

    def checkpoint_due(self, *, only: tuple[str, int] | None = None, force: bool = False) -> int:
        """Sign checkpoints of logs that grew by enough leaves or long enough ago; returns how many."""
        if self.signer is None:
            return 0
        made = 0
        for key in list(self._logs):
            if only is not None and key != only:
                continue
            # ``only`` is given from inside the log's lock (an append); otherwise take it here
            with contextlib.nullcontext() if only is not None else self.locked(*key):
                made += self._checkpoint(key, force)
        return made

    def _checkpoint(self, key: tuple[str, int], force: bool) -> int:
        # re-read if another worker appended since: never sign a stale tree
        log = self.key_log(key[1]) if key[0] == "deks" else self.log(*key) if key[0] in LEDGERED \
            else self._open_log(*key)
        if force and not log.due(every_leaves=1, every_s=float("inf")):
            return 0  # nothing new since the last checkpoint
        if not force and not log.due(every_leaves=self.settings.checkpoint_leaves, every_s=self.settings.checkpoint_s):
            return 0
        if self.clock() < self._sign_after:
            return 0  # the key service failed a moment ago: the leaves wait for the next checkpoint
        try:
            note = log.checkpoint(self.signer)
        except KeyServiceError as exc:  # down, or refusing: sealing goes on, the checkpoint waits (deferred, not lost)
            self._sign_after = self.clock() + SIGN_RETRY_S
            _log.error("checkpoint of %s deferred: %s", log.origin, exc)
            return 0
        except Fenced:  # a log every worker appends to (the subject log): another signed this very tree first
            self._logs.pop(key, None)  # (re-read from its files next time, with that checkpoint)
            return 0
        with self._checkpoints_lock:
            self.pending_checkpoints.append({"origin": log.origin, "partition": key[1], "tree_size": log.size,
                                             "root_hash": log.root(), "note": note,
                                             "created_at_ms": int(self.clock() * 1000)})
        return 1

    @contextlib.contextmanager
    def locked(self, table: str, partition: int):
        """The store's lock on a partition's rows and log, also between this process's threads (the seal agent
        stores readings in a thread while timers sign checkpoints on the event loop; a PostgreSQL advisory
        lock is per session, so the Iceberg store's own lock does not keep two threads of one worker apart)."""
        with self._thread_locks_guard:
            local = self._thread_locks.setdefault((table, partition), threading.Lock())
        with local, self.store.locked(table, partition):
            yield

    def take_checkpoints(self) -> list[tuple[bytes, dict[str, Any]]]:
        with self._checkpoints_lock:
            out = [(c["origin"].encode(), c) for c in self.pending_checkpoints]
            self.pending_checkpoints.clear()
        return out

    def store_key(self, value: bytes, partition: int = 0) -> bool:
        """Keep a wrapped DEK from keys.deks and append its creation to the key log; False if already there, or if
        the message is a tombstone (no value: retention destroyed that DEK and deleted it from the topic)."""
        if value is None:
            return False
        try:
            record = schemas.decode("wrapped_key", value)
        except schemas.SchemaError:
            self.unreadable_keys += 1
            return False
        self.store.put_dek(record)  # the seal agent usually stored it already
        with self.locked("deks", partition):
            # caught up first: a worker killed between marking a DEK and appending its leaf left a marked DEK the
            # log lacks, and the redelivery that follows finds the DEK marked (the CI check of 2026-12-01 found
            # one such DEK in `ledger verify` after the two-worker kill test)
            log = self.key_log(partition)
            stored = self.store.get_dek(record["key_id"])
            if stored is None or stored.get("leaf_index") is not None:
                return False  # destroyed by retention (never stored again), or redelivered: already a leaf
            row = self.store.mark_dek(record["key_id"], partition=partition, leaf_index=log.size)
            log.append([leaf_hash(leaf.encode_key_event(row))])
            self.checkpoint_due(only=("deks", partition))
        return True

    def _open_log(self, table: str, partition: int) -> Log:
        """The cached log, or a fresh one from its files if none is cached or another process appended."""
        hashes = self.store.hash_store(table, partition)
        log = self._logs.get((table, partition))
        if log is None or log.size != hashes.size():
            log = Log(self.origin(table, partition), hashes, self.store.checkpoint_store(table, partition),
                      clock=self.clock)
            self._logs[(table, partition)] = log
        return log

    def key_log(self, partition: int) -> Log:
        """The key log of a keys.deks partition, caught up with DEK files marked before a crash."""
        log = self._open_log("deks", partition)
        behind = [r for r in self.store.dek_rows(partition) if r["leaf_index"] >= log.size]
        if behind:  # files marked, hashes not appended (a crash in between)
            log.append([leaf_hash(leaf.encode_key_event(r)) for r in behind])
        return log


class BatchState:
    """Per-meter state for one batch: read through to a table, written back once per meter.

    Writing each meter's state once per batch instead of once per reading keeps the changelog small.
    Values are sealed by ``codec`` (``encode(value, meter_tok)``/``decode(blob, meter_tok)``).
    ``flush(write)`` calls ``write(key, sealed_value, context)`` with the context (the Faust event) of
    the meter's last reading in the batch, so the table knows which partition the key belongs to.
    """

    def __init__(self, codec: Any, table: Any) -> None:
        self._codec, self._table = codec, table
        self._dirty: dict[str, tuple[Any, Any]] = {}

    def get(self, meter_tok: str) -> Any:
        if meter_tok in self._dirty:
            return self._dirty[meter_tok][0]
        return self._codec.decode(self._table.get(meter_tok.encode()), meter_tok)

    def put(self, meter_tok: str, value: Any, context: Any = None) -> None:
        self._dirty[meter_tok] = (value, context)

    def flush(self, write: Callable[[bytes, bytes, Any], None] | None = None) -> None:
        for meter_tok, (value, context) in self._dirty.items():
            blob = self._codec.encode(value, meter_tok)
            if write is None:
                self._table[meter_tok.encode()] = blob
            else:
                write(meter_tok.encode(), blob, context)
        self._dirty.clear()


class MeterStates(BatchState):
    """The validator's per-meter state (``MeterState``) for one batch."""

    def update(self, outcome: Sealed | Rejected, context: Any = None) -> None:
        if isinstance(outcome, Sealed) and outcome.state is not None:
            self.put(outcome.record["meter_tok"], outcome.state, context)
