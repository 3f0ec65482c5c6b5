"""The worker's side of the rollups: counts each stored reading once and writes the rollup rows.

``streams.pipeline`` calls ``before_store``/``after_store`` inside a readings partition's store lock, around
the write of a segment and its ledger leaves, and ``tick`` from a timer (idle closes). The seal agent calls
``note`` with each sealed reading: the plaintext fields the rollups need, kept in memory only until the
reading is stored.

Exactly once, like the records: a partition's state says which leaves it has counted (all below its
``watermark``) and is saved (sealed, ``state``) before the raw offsets of its readings are acked. The
readings' segment is written first, then the state. A worker killed between the two leaves rows stored but
not counted; their raw messages were not acked, so they come again (to this worker or the partition's next
owner), are sealed to the same record ids — which the store drops as duplicates — and are counted here from
the ids of the rows at and above the watermark (``Store.rows(min_leaf=...)``, read once). Re-reads come in
partition order, so they fill the watermark's gap before any new reading. Rows are written after the state
that decides them, under ids derived from the emission (``Emission.key``): a crash between writes them again,
and the store keeps each id once.

What is not counted exactly: readings stored by something that does not pass their plaintext (``meterseal
store rebuild`` from the sealed topics). The partition's watermark then stays behind its ledger (the
``rollup_pending_leaves`` metric says by how much) until ``meterseal store rollup rebuild`` recomputes it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

import schemas
from streams.crypto.tokens import BlindIndex
from streams.exceptions import StoreError, SubjectErased
from streams.rollups import state as state_codec
from streams.rollups.cells import DAY, Contribution, Emission, PartitionRollup, Who
from streams.seal import Sealed, Sealer

log = logging.getLogger("meterseal.rollups")

Plain = tuple[str, "str | None", str, str, float, float]  # meter, account, region, category, epoch, kWh


def iso(epoch: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat()


def member_token(key: bytes, hour: int, who: Who) -> str:
    """The hourly member token of (meter, hour, region, category): keyed, and unlinkable across hours."""
    return hmac.new(key, f"{who[0]}|{hour}|{who[2]}|{who[3]}".encode(), hashlib.sha256).hexdigest()[:32]


def meter_rows(emission: Emission, sealer: Sealer, index: BlindIndex, member_key: bytes) -> list[dict[str, Any]]:
    """The ``rollup_meter`` rows of an emission: each cell's ``rollup`` body sealed through ``Sealer.record``."""
    schema = schemas.get("rollup")
    out = []
    for cell in emission.meters:
        meter_id, account_id, region, category = cell.who
        start = iso(cell.start)
        record_id = index.record_id("rollup", cell.period, meter_id, start, emission.key)
        body = schemas.encode_body(schema, {
            "meter_id": meter_id, "account_id": account_id, "period": cell.period, "start": start, "region": region,
            "category": category, "readings": cell.agg.readings, "kwh_sum": cell.agg.kwh_sum,
            "kwh_min": cell.agg.kwh_min, "kwh_max": cell.agg.kwh_max, "emission": emission.key})
        try:
            sealed = sealer.record("rollup", record_id, body, meter_id=meter_id, account_id=account_id, region=region,
                                   category=category, day=cell.start // DAY)
        except SubjectErased:  # the meter's (account's) subject was erased meanwhile: its rollups go with it
            continue
        out.append({**sealed.record, "period": cell.period,
                    "member": member_token(member_key, cell.start, cell.who) if cell.period == "hour" else None})
    return out


def region_rows(emission: Emission, index: BlindIndex, now_ms: int) -> list[dict[str, Any]]:
    return [{"row_id": index.record_id("rollup-region", emission.key, str(c.hour), c.region, c.category),
             "hour_ms": c.hour * 1000, "region": c.region, "category": c.category, "meters": c.meters,
             "readings": c.agg.readings, "kwh_sum": c.agg.kwh_sum, "kwh_min": c.agg.kwh_min, "kwh_max": c.agg.kwh_max,
             "emitted_at_ms": now_ms} for c in emission.regions]


class RollupKeeper:
    """One worker's rollup maintenance over the partitions it stores. Thread use: ``note`` on the event loop,
    everything else in the store thread (or a timer's thread) inside the partition's lock."""

    def __init__(self, store: Any, index_key: bytes, sealer: Sealer, *, grace_s: float = 300.0,
                 idle_s: float = 30.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, emit_every_s: float = 2.0) -> None:
        self.store, self.sealer = store, sealer
        self.grace_s, self.idle_s = grace_s, idle_s
        # closed cells are written at most this often per partition (a replay of history closes hours many times a
        # second: written together, they cost one segment per table instead of one per store write)
        self.emit_every_s = emit_every_s
        self._emitted_at: dict[int, float] = {}
        # member tokens this keeper wrote, per partition and hour: a late reading's meter is looked up here first
        # (the store only for hours closed before this keeper loaded the partition)
        self._members: dict[int, dict[int, set[str]]] = {}
        self._members_from: dict[int, int] = {}
        self.clock, self.monotonic = clock, monotonic
        self.index = BlindIndex(index_key)
        self._state_key = state_codec.state_key(index_key)
        self._member_key = state_codec.member_key(index_key)
        self._plain: dict[str, Plain] = {}  # record id -> what the rollups count of it, until it is stored
        self._parts: dict[int, PartitionRollup] = {}
        self._size: dict[int, int] = {}  # readings leaves after this worker's last write (another writer: reload)
        self._behind: dict[int, dict[str, int]] = {}  # record id -> leaf of rows stored but not counted
        self._held: dict[int, dict[int, Contribution]] = {}  # counted-to-be, beyond a gap in the leaves
        self._broken: set[int] = set()
        self.rows_written = {"rollup_meter": 0, "rollup_region": 0}
        self.late_cells = 0
        self.stop_before_counting: int | None = None  # tests: SIGKILL this process at that write (agents/rollups.py)
        self._writes = 0

    # -- the seal agent ----------------------------------------------------------------------------
    def note(self, outcome: Any) -> None:
        """Remember a sealed reading's plaintext fields until it is stored (anything else is ignored)."""
        if type(outcome) is Sealed and outcome.reading is not None:
            r = outcome.reading
            self._plain[outcome.record["record_id"]] = (r.meter_id, r.account_id, r.region, r.category, r.epoch, r.kwh)

    # -- inside the partition's lock -----------------------------------------------------------------
    def before_store(self, partition: int, size: int) -> None:
        """Before the first readings segment this keeper writes to a partition: a partition with no state yet
        starts counting here (readings stored before rollups existed need ``meterseal store rollup rebuild``)."""
        if partition in self._parts and self._size.get(partition) == size:
            return
        blob = self.store.blobs.get(state_codec.blob_name(partition))
        if blob is None:
            if size:
                log.warning("readings/%d: %d readings were stored before rollups were kept: run `meterseal store "
                            "rollup rebuild` to count them", partition, size)
            state = PartitionRollup(partition, watermark=size)
            self._save(state)
        self._load(partition, size)

    def after_store(self, partition: int, rows: list[tuple[int, dict[str, Any]]], fresh: list[dict[str, Any]],
                    first_leaf: int) -> None:
        """Count a write's readings (``rows`` as given to the store, ``fresh`` the ones written, numbered from
        ``first_leaf``), then save the state and write what closed."""
        plains = {record["record_id"]: self._plain.pop(record["record_id"], None) for _, record in rows}
        self._writes += 1
        if self._writes == self.stop_before_counting:  # a crash between storing readings and counting them
            import os
            import signal

            log.error("test failpoint: killing this worker between storing readings and counting them")
            os.kill(os.getpid(), signal.SIGKILL)
        if partition in self._broken:
            return
        try:
            state = self._load(partition, first_leaf)
            found: dict[int, Contribution] = {}
            for row in fresh:
                plain = plains.get(row["record_id"])
                if plain is not None:
                    found[row["leaf_index"]] = Contribution(row["leaf_index"], *plain)
            if state.watermark < first_leaf:  # stored, not counted: a writer stopped between the two
                behind = self._behind_rows(partition, state.watermark, first_leaf)
                for record_id, plain in plains.items():
                    leaf = behind.get(record_id)
                    if plain is not None and leaf is not None and leaf >= state.watermark:
                        found[leaf] = Contribution(leaf, *plain)
            held = self._held.setdefault(partition, {})
            held.update(found)
            run = []
            while state.watermark + len(run) in held:
                run.append(held.pop(state.watermark + len(run)))
            state.add(run, now=self.monotonic())
            if state.watermark >= first_leaf:
                self._behind.pop(partition, None)
            if held:
                log.warning("readings/%d: %d stored reading(s) wait for leaves %d.. to be counted first",
                            partition, len(held), state.watermark)
            self._flush(state, force=False, changed=bool(run))
            self._size[partition] = first_leaf + len(fresh)
        except (OSError, StoreError):  # the store: the readings' write would fail too (exit 70, read again)
            raise
        except Exception:  # noqa: BLE001 - a rollup bug must never cost a reading: stop counting this partition
            log.exception("readings/%d: rollups stopped after an unexpected error (restart the worker, or run "
                          "`meterseal store rollup rebuild`)", partition)
            self._broken.add(partition)
            self._parts.pop(partition, None)

    def tick(self, partition: int, size: int, *, force: bool = False) -> int:
        """Close what is idle (or everything, ``force``) in a partition this keeper holds, whose readings log has
        ``size`` leaves; returns rows written."""
        state = self._parts.get(partition)
        if state is None or partition in self._broken:
            return 0
        if self._size.get(partition) != size:  # another writer stored since: it owns the state now
            self.release([partition])
            return 0
        return self._flush(state, force=force, changed=False)

    def replace(self, partition: int, contributions: list[Contribution], size: int) -> int:
        """The owner's rebuild of one partition (``streams.rollups.rebuild``, inside its lock): rollups
        recomputed from every stored reading (``contributions``, leaves ``0..size-1``), every bucket closed, the
        partition's old rows deleted, the new state saved and rows written; returns rows written."""
        old = self.store.blobs.get(state_codec.blob_name(partition))
        state = PartitionRollup(partition)
        if old is not None:  # a new emission number: none of the new rows reuses an old row's id
            try:
                state.emissions = state_codec.decode(old, partition, self._state_key).emissions + 1
            except Exception:  # noqa: BLE001 - a state that does not open is what a rebuild replaces
                state.emissions = int(self.clock())
        state.add(sorted(contributions), now=self.monotonic())
        if state.watermark != size:
            raise ValueError(f"readings/{partition}: {state.watermark} leaves counted of {size}")
        state.close(now=self.monotonic(), grace_s=self.grace_s, idle_s=self.idle_s, force=True)
        self._clear(partition)
        self._save(state)
        self.release([partition])
        self._broken.discard(partition)
        return self._write_pending(state)

    def _clear(self, partition: int) -> None:
        """Delete a partition's rollup rows (by their ids: ``Store.delete_rows``)."""
        for table, id_col in (("rollup_meter", "record_id"), ("rollup_region", "row_id")):
            if self.store.is_empty(table):
                continue
            if hasattr(self.store, "scan"):  # Iceberg
                from pyiceberg.expressions import EqualTo

                ids = self.store.scan(table, EqualTo("topic_partition", partition)).column(id_col).to_pylist()
            else:
                import pyarrow.parquet as pq

                ids = [i for f in self.store.segments(table, partition)
                       for i in pq.read_table(f, columns=[id_col]).column(id_col).to_pylist()]
            if ids:
                self.store.delete_rows(table, id_col, ids)

    def release(self, partitions: list[int]) -> None:
        """Forget partitions handed to another worker (their state is saved already)."""
        for p in partitions:
            self._parts.pop(p, None)
            self._size.pop(p, None)
            self._behind.pop(p, None)
            self._held.pop(p, None)

    def partitions(self) -> list[int]:
        return sorted(self._parts)

    def lag(self) -> dict[int, tuple[int, float]]:
        """Per partition held: (stored readings not counted yet, seconds of readings in still-open hours)."""
        return {p: (max(0, self._size.get(p, s.watermark) - s.watermark), s.lag_s()) for p, s in self._parts.items()}

    # -- internals --------------------------------------------------------------------------------------
    def _load(self, partition: int, size: int) -> PartitionRollup:
        state = self._parts.get(partition)
        if state is not None and self._size.get(partition) == size:
            return state
        blob = self.store.blobs.get(state_codec.blob_name(partition))
        state = (PartitionRollup(partition, watermark=size) if blob is None
                 else state_codec.decode(blob, partition, self._state_key))
        self._parts[partition], self._size[partition] = state, size
        self._held.pop(partition, None)
        self._behind.pop(partition, None)
        self._members[partition], self._members_from[partition] = {}, state.closed_hour  # later hours: written here
        if state.pending:  # decided by a writer that stopped before writing them all: write them (again)
            self._write_pending(state)
        return state

    def _behind_rows(self, partition: int, watermark: int, first_leaf: int) -> dict[str, int]:
        found = self._behind.get(partition)
        if found is None:
            rows = self.store.rows("readings", partition, min_leaf=watermark)
            found = self._behind[partition] = {r["record_id"]: r["leaf_index"] for r in rows
                                               if r["leaf_index"] < first_leaf}
            log.warning("readings/%d: %d stored reading(s) from leaf %d on were not counted yet (a writer stopped): "
                        "counting them as they are read again", partition, len(found), watermark)
        return found

    def _flush(self, state: PartitionRollup, *, force: bool, changed: bool) -> int:
        now = self.monotonic()
        emission = None
        if force or now - self._emitted_at.get(state.partition, -1e18) >= self.emit_every_s \
                or state.open_cells and now - state.last_added >= self.idle_s:
            emission = state.close(now=now, grace_s=self.grace_s, idle_s=self.idle_s, force=force,
                                   known_members=lambda cells: self._known(state.partition, cells))
            if emission:
                self._emitted_at[state.partition] = now
        if emission or changed:
            self._save(state)
        return self._write_pending(state)

    def _save(self, state: PartitionRollup) -> None:
        self.store.blobs.put(state_codec.blob_name(state.partition), state_codec.encode(state, self._state_key))

    def _write_pending(self, state: PartitionRollup) -> int:
        written = 0
        while state.pending:
            emission = state.pending[0]
            self.late_cells += sum(1 for m in emission.meters if m.late)
            meters = meter_rows(emission, self.sealer, self.index, self._member_key)
            self._remember(state.partition, emission)
            regions = region_rows(emission, self.index, int(self.clock() * 1000))
            for table, rows in (("rollup_meter", meters), ("rollup_region", regions)):
                if rows:
                    n = self.store.append(table, state.partition, [(state.watermark, r) for r in rows])
                    self.rows_written[table] += n
                    written += n
            state.pending.pop(0)
        return written

    def _known(self, partition: int, cells: list[tuple[int, Who]]) -> set[tuple[int, Who]]:
        """Which late (hour, who) cells already have an hourly row in this partition (their meter is counted)."""
        tokens = {member_token(self._member_key, hour, who): (hour, who) for hour, who in cells}
        mine = self._members.get(partition, {})
        since = self._members_from.get(partition, 2**62)
        present = {t for t, (hour, _) in tokens.items() if hour >= since and t in mine.get(hour, ())}
        ask = [t for t, (hour, _) in tokens.items() if hour < since]
        if ask:
            present |= members_present(self.store, partition, ask)
        return {tokens[t] for t in present}

    def _remember(self, partition: int, emission: Emission) -> None:
        mine = self._members.setdefault(partition, {})
        for cell in emission.meters:
            if cell.period == "hour":
                mine.setdefault(cell.start, set()).add(member_token(self._member_key, cell.start, cell.who))
        if len(mine) > 24 * 8:  # a week of hours: older ones are asked of the store
            for hour in sorted(mine)[:len(mine) - 24 * 8]:
                del mine[hour]
            self._members_from[partition] = min(mine)


def members_present(store: Any, partition: int, tokens: list[str]) -> set[str]:
    """The member tokens among ``tokens`` that ``rollup_meter`` rows of ``partition`` carry."""
    if not tokens:
        return set()
    if hasattr(store, "scan"):  # Iceberg: a filtered scan
        from pyiceberg.expressions import And, EqualTo, In

        data = store.scan("rollup_meter", And(EqualTo("topic_partition", partition), In("member", tokens)))
    else:
        import pyarrow.parquet as pq

        files = store.segments("rollup_meter", partition)
        if not files:
            return set()
        data = pa.concat_tables([pq.read_table(f, columns=["member"]) for f in files])
    column = data.column("member")
    return set(pc.filter(column, pc.is_in(column, pa.array(tokens))).to_pylist())
