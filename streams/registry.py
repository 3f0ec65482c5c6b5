"""The registry of what each capability keeps: its Merkle logs, its holders of a data subject's data, its
kinds of data under retention.

The floors that must reach every capability — the store's ledger audit (``streams.store.audit``), erasure and
retention (``streams.erasure``) — iterate a ``Registry`` and never import a capability. Each capability says
what it keeps in a ``register(registry)`` function of its own (``streams/share/registration.py``, ...), and one
module above them all, ``streams.capabilities`` (like Django's ``INSTALLED_APPS``), calls every one of them.
The registry is dumb: it stores entries and lists them; each entry says what it holds and how to act on it.

Four kinds of entry:

- ``LedgerLog``: a log's table name, how to read its rows, how to encode a row as its leaf. ``ledger verify``
  audits every log the store holds; a log with no registered entry is a finding, never skipped.
- ``SubjectHolder``: something that holds a data subject's data (rows, state, grants, tokens ...) and how to
  erase it. Erasure calls every holder; a holder's ``erase`` is idempotent (a rerun after a kill finishes).
- ``RetainedKind``: a kind of data with a retention period (``readings``, ``bills``, ``dlq``, ``alerts``) and how
  to delete what is older than a cut-off.
- ``Tombstones``: where the tombstones of deleted records are kept (``ledger.redaction``): the audit accepts a
  missing record only at a leaf a matching tombstone names.

Pure: imports nothing of meterseal's.

>>> registry = Registry()
>>> registry.add_log(LedgerLog("notes", rows=lambda store, partition: [], encode=lambda row: b""))
>>> [log.table for log in registry.logs]
['notes']
>>> registry.add_log(LedgerLog("notes", rows=lambda store, partition: [], encode=lambda row: b""))
Traceback (most recent call last):
...
ValueError: log 'notes' is registered twice
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class LedgerLog:
    """A Merkle log of the store: ``rows(store, partition)`` are its rows with their ``leaf_index`` (in any order),
    ``encode(row)`` a row's leaf bytes. ``local``: kept in this machine's data dir even when the store is on S3
    (the DP budgets' log). ``check(rows)`` adds findings of its own as ``(kind, detail, leaf index)`` (a model
    whose weights no longer hash right)."""

    table: str
    rows: Callable[[Any, int], list[dict[str, Any]]]
    encode: Callable[[dict[str, Any]], bytes]
    local: bool = False
    check: Callable[[list[dict[str, Any]]], list[tuple[str, str, int | None]]] | None = None


@dataclass(frozen=True)
class Subject:
    """Whose data is erased: a meter or an account, as the owner names it. The ids are in clear only in the
    erasing process's memory; a holder never writes them anywhere.

    ``meters``/``accounts``: every meter and account id whose records belong to the subject (erasing a meter
    also erases the accounts its records name: their subject keys are the ones that sealed them).
    ``meter_toks``/``account_toks``: their blind-index tokens of every epoch so far. ``subject_hash``: what
    logs, receipts and notices name instead (hex SHA-256 of the subject's token)."""

    kind: str  # "meter" | "account"
    id: str = field(repr=False)
    meters: tuple[str, ...] = field(default=(), repr=False)
    accounts: tuple[str, ...] = field(default=(), repr=False)
    meter_toks: tuple[str, ...] = field(default=(), repr=False)
    account_toks: tuple[str, ...] = field(default=(), repr=False)
    subject_hash: str = ""

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.meter_toks + self.account_toks


@dataclass
class ErasureContext:
    """What a holder may use while erasing: the store, the data dir, the owner's index key and ledger signer,
    the erasure's id, reason and time, and ``extra`` (settings, broker URL: whatever the caller has)."""

    store: Any  # streams.store.base.Store
    data_dir: Path
    index_key: bytes = field(repr=False)
    signer: Any = field(repr=False)  # ledger.note.Signer
    erasure_id: str = ""
    reason: str = ""
    now: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SubjectHolder:
    """Something that holds a subject's data. ``erase(context, subject)`` removes (or revokes) all of it and
    returns how many items it removed this time (0 when a rerun finds nothing left): idempotent, and safe to
    kill at any point. ``holds``: one line an operator reads ("grants naming the subject's meters")."""

    name: str
    holds: str
    erase: Callable[[ErasureContext, Subject], int]


@dataclass(frozen=True)
class RetainedKind:
    """A kind of data under retention: ``delete_older(context, cutoff_epoch_s)`` deletes what is older than the
    cut-off (by the data's own time: a reading's time, a bill's date) and returns how many items it deleted."""

    kind: str
    holds: str
    delete_older: Callable[[ErasureContext, float], int]


@dataclass(frozen=True)
class Tombstones:
    """``read(store, verifiers)`` returns the ``ledger.redaction.Redaction``s some capability recorded when it deleted
    records (``verifiers``: the ledger's checkpoint keys, for tombstones not yet under a logged leaf)."""

    name: str
    read: Callable[[Any, Any], list[Any]]


class Registry:
    """Entries by name; adding a name twice is an error (two capabilities claiming one log is a bug)."""

    def __init__(self) -> None:
        self._logs: dict[str, LedgerLog] = {}
        self._holders: dict[str, SubjectHolder] = {}
        self._kinds: dict[str, RetainedKind] = {}
        self._tombstones: dict[str, Tombstones] = {}

    def add_log(self, log: LedgerLog) -> None:
        _add(self._logs, log.table, log, "log")

    def add_holder(self, holder: SubjectHolder) -> None:
        _add(self._holders, holder.name, holder, "holder")

    def add_retained(self, kind: RetainedKind) -> None:
        _add(self._kinds, kind.kind, kind, "retained kind")

    def add_tombstones(self, source: Tombstones) -> None:
        _add(self._tombstones, source.name, source, "tombstone source")

    def log(self, table: str) -> LedgerLog | None:
        return self._logs.get(table)

    def retained(self, kind: str) -> RetainedKind | None:
        return self._kinds.get(kind)

    @property
    def logs(self) -> list[LedgerLog]:
        return list(self._logs.values())

    @property
    def holders(self) -> list[SubjectHolder]:
        return list(self._holders.values())

    @property
    def retained_kinds(self) -> list[RetainedKind]:
        return list(self._kinds.values())

    @property
    def tombstones(self) -> list[Tombstones]:
        return list(self._tombstones.values())


def _add(entries: dict[str, Any], name: str, entry: Any, what: str) -> None:
    if name in entries:
        raise ValueError(f"{what} {name!r} is registered twice")
    entries[name] = entry
