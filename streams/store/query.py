"""Search and SQL over the sealed store: tokens made on the client, records opened only with the owner key.

``Reader`` holds what the person querying has: the index key (to turn ``--date 2023-03-04`` into a token)
and, optionally, the owner's private keys (to open hits). The store only ever sees tokens.

>>> # see tests/streams/test_query.py for runnable examples over a store of the seed CSV
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import duckdb
import orjson
import pyarrow as pa

from streams.exceptions import InvalidEnvelope, KeystoreError, MeterSealError
from streams.keys.keyring import Keyring
from streams.keys.subjects import Epoch, Fence, current_epoch
from streams.keys.keystore import UnlockedKeys
from streams.unseal import SEALED_COLUMNS, open_many, open_record, open_table, shown
from streams.store.base import connect, open_store
from streams.crypto.tokens import BlindIndex
from streams.validate import BILL_COLUMNS

KINDS = {"readings": "readings", "bills": "bills"}


@dataclass(frozen=True)
class Query:
    """What to look for; every given field must match (AND)."""

    date: dt.date | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    meter: str | None = None
    account: str | None = None
    region: str | None = None

    def __post_init__(self) -> None:
        if self.date and (self.start or self.end):
            raise MeterSealError("give either --date or --from/--to, not both")
        if (self.start is None) != (self.end is None):
            raise MeterSealError("a date range needs both --from and --to")
        if self.start and self.end and self.end < self.start:
            raise MeterSealError(f"empty date range: {self.start} is after {self.end}")


def where(query: Query, index: BlindIndex, *, meter_tok: str | None = None,
          account_tok: str | None = None) -> tuple[str, list[Any]]:
    """SQL condition and ``?`` parameters for ``query``; tokens are computed here, on the client (``meter_tok`` and
    ``account_tok``: the meter's and account's tokens of their current epoch, when a reader knows the erasure fence;
    else epoch 0's)."""
    clauses, params = [], []
    if query.date:
        clauses.append("day_tok = ?")
        params.append(index.day(query.date.isoformat()))
    if query.start:
        cover = index.range_tokens(query.start, query.end)
        parts = []
        for column, tokens in (("year_tok", cover.year), ("month_tok", cover.month), ("day_tok", cover.day)):
            if tokens:
                parts.append(f"{column} IN ({', '.join('?' * len(tokens))})")
                params.extend(tokens)
        clauses.append("(" + " OR ".join(parts) + ")")
    if query.meter:
        clauses.append("meter_tok = ?")
        params.append(meter_tok or index.meter(query.meter))
    if query.account:
        clauses.append("account_tok = ?")
        params.append(account_tok or index.account(query.account))
    if query.region:
        clauses.append("region = ?")
        params.append(query.region)
    return (" AND ".join(clauses) or "TRUE"), params


def _plain_bill(plain: dict[str, Any]) -> dict[str, Any]:
    """A bill under the seed CSV's column names, numbers as written there (701, not 701.0)."""
    out = {}
    for name, header in BILL_COLUMNS.items():
        value = plain[name]
        out[header] = int(value) if isinstance(value, float) and value.is_integer() else value
    return out


@dataclass
class Reader:
    """Queries over one store. ``keys`` are the unlocked keystore (index key, and owner keys to open hits)."""

    store_dir: Any
    keys: UnlockedKeys | None = None
    index_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        root = self.keys.index_key if self.keys else self.index_key
        if root is None:
            raise KeystoreError("searching needs the index key: set METERSEAL_PASSPHRASE (tokens are made on the client)")
        self.index = BlindIndex(root)
        self.store = open_store(self.store_dir, create=False)  # a directory, s3://..., or a Store
        self._keyring = self.keys.keyring(self.store) if self.keys else None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._empty = True
        self._fence: Fence | None = None
        self._fence_read = 0.0

    @property
    def can_open(self) -> bool:
        return self._keyring is not None

    def connect(self) -> duckdb.DuckDBPyConnection:
        """DuckDB with views ``readings``, ``bills``, ``dlq`` and the token and ``unseal`` functions."""
        con = connect(self.store)
        register_functions(con, self.index, self._keyring)
        return con

    def search(self, query: Query, *, kinds: Iterable[str] = ("readings", "bills")) -> list[dict[str, Any]]:
        """Every matching row (all columns), each kind in leaf order."""
        condition, params = where(query, self.index, meter_tok=self.token("meter", query.meter),
                                  account_tok=self.token("account", query.account))
        if hasattr(self.store, "pruned"):  # object storage: Iceberg prunes files, then the same SQL decides
            return self._search_pruned(query, condition, params, kinds)
        if self._con is None or (self._empty and any(self.store.segments(t) for t in KINDS)):
            # the views glob the segments, so later segments are seen too; a store that was empty when the
            # connection was made has placeholder views, remade once segments appear
            self._con = connect(self.store)
            self._empty = not any(self.store.segments(t) for t in KINDS)
        rows = []
        for kind in kinds:
            cur = self._con.execute(f"SELECT * FROM {KINDS[kind]} WHERE {condition} "
                                    "ORDER BY topic_partition, leaf_index", params)
            cols = [d[0] for d in cur.description]
            rows += [dict(zip(cols, r)) for r in cur.fetchall()]
        return rows

    def _search_pruned(self, query: Query, condition: str, params: list[Any], kinds: Iterable[str]) -> list[dict[str, Any]]:
        """Search an Iceberg store: the scan carries every day and month token of the range and the meter,
        account and region, so Iceberg skips partitions and files; DuckDB applies ``condition`` exactly."""
        days = months = None
        if query.date or query.start and (query.end - query.start).days <= 3660:
            first, last = (query.date, query.date) if query.date else (query.start, query.end)
            dates = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
            days = [self.index.day(d.isoformat()) for d in dates]
            months = sorted({self.index.month(d.year, d.month) for d in dates})
        con = duckdb.connect()
        rows = []
        for kind in kinds:
            data = self.store.pruned(KINDS[kind], day_toks=days, month_toks=months,
                                     meter_tok=self.token("meter", query.meter),
                                     account_tok=self.token("account", query.account),
                                     region=query.region)
            con.register("candidates", data)
            cur = con.execute(f"SELECT * FROM candidates WHERE {condition} ORDER BY topic_partition, leaf_index", params)
            cols = [d[0] for d in cur.description]
            rows += [dict(zip(cols, r)) for r in cur.fetchall()]
            con.unregister("candidates")
        return rows

    def token(self, kind: str, subject_id: str | None) -> str | None:
        """A meter's or account's token of its current epoch (after an erasure its data is under the next one's),
        the erasure fence read again at most every 2 s."""
        return None if subject_id is None else self.epoch(kind, subject_id).token

    def epoch(self, kind: str, subject_id: str) -> Epoch:
        """A meter's or account's current epoch: its token, and until when earlier epochs were erased (a new
        occupant's view starts there)."""
        now = time.monotonic()
        if self._fence is None:
            self._fence, self._fence_read = Fence.load(self.store.blobs), now
        elif now - self._fence_read >= 2.0:
            self._fence.refresh()
            self._fence_read = now
        return current_epoch(self.index, self._fence, kind, subject_id)

    def open(self, row: dict[str, Any]) -> dict[str, Any]:
        """The plaintext of a hit under the source's own field names; ``InvalidEnvelope`` if it does not open."""
        plain = open_record(row, self._opener(), self.index)
        return _plain_bill(plain) if row["kind"] == "bill" else shown(plain)

    def open_hits(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``open`` for many hits at once, in order (the bulk path: one AES-GCM object per data key)."""
        return [_plain_bill(p) if r["kind"] == "bill" else shown(p) for r, p in zip(rows, self.open_many(rows))]

    def open_many(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Many hits opened at once, under the raw schemas' field names (``bill_no``, not ``Bill No.``)."""
        return open_many(rows, self._opener(), self.index)

    @property
    def keyring(self) -> Keyring:
        """The owner's keyring these hits open with (``KeystoreError`` if this reader has only the index key)."""
        return self._opener()

    def _opener(self) -> Keyring:
        if self._keyring is None:
            raise KeystoreError("opening records needs the owner's private key: set METERSEAL_PASSPHRASE (a passphrase "
                                "keystore), or a key service token that may unwrap DEKs")
        return self._keyring


def register_functions(con: duckdb.DuckDBPyConnection, index: BlindIndex, keyring: Keyring | None) -> None:
    """Token functions (``day_token('2021-03-15')``, ``month_token('2021-03')``, ``year_token('2021')``,
    ``meter_token(id)``, ``account_token(id)``), ``unseal(<the sealed columns>)`` → JSON text, and the views
    ``readings_open`` / ``bills_open`` (every column plus ``plain``, the opened record)."""
    def tokenizer(fn):
        def apply(values: pa.Array) -> pa.Array:
            return pa.array([None if v is None else fn(v) for v in values.to_pylist()], pa.string())
        return apply

    def month(text: str) -> str:
        year, mon = text.split("-")
        return index.month(int(year), int(mon))

    for name, fn in (("day_token", lambda v: index.day(dt.date.fromisoformat(v).isoformat())),
                     ("month_token", month), ("year_token", lambda v: index.year(int(v))),
                     ("meter_token", index.meter), ("account_token", index.account)):
        con.create_function(name, tokenizer(fn), [duckdb.sqltype("VARCHAR")], duckdb.sqltype("VARCHAR"), type="arrow")

    def unseal(record_id, kind, schema_version, region, category, meter_tok, account_tok, day_tok, month_tok,
               year_tok, envelope) -> pa.Array:
        columns = (record_id, kind, schema_version, region, category, meter_tok, account_tok, day_tok, month_tok,
                   year_tok, envelope)
        if keyring is None:
            raise KeystoreError("unseal() needs the owner's private key: set METERSEAL_PASSPHRASE")
        # DuckDB calls this from each of its threads; one at a time is faster: two threads in here hand the
        # GIL to each other at every HMAC (OpenSSL's one-shot HMAC releases it): 200k readings, 6 runs each,
        # median ~50k/s without the lock, ~62k/s with it
        with one_at_a_time:
            table = pa.Table.from_arrays(list(columns), names=list(SEALED_COLUMNS))
            try:
                plains = open_table(table, keyring, index)
            except InvalidEnvelope:
                raise InvalidEnvelope("a record does not open: altered, or not sealed for this owner key "
                                      "(`meterseal ledger verify` names it)") from None
            # orjson: ~8x json.dumps here, and JSON text was the largest part of unseal() after opening
            return pa.array([orjson.dumps(_plain_bill(p) if k == "bill" else shown(p)).decode()
                             for k, p in zip(kind.to_pylist(), plains)], pa.string())

    one_at_a_time = threading.Lock()

    types = ["VARCHAR", "VARCHAR", "INTEGER", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR",
             "VARCHAR", "BLOB"]
    con.create_function("unseal", unseal, [duckdb.sqltype(t) for t in types], duckdb.sqltype("VARCHAR"),
                        type="arrow", null_handling="special")
    sealed_columns = ", ".join(SEALED_COLUMNS)
    for view in ("readings", "bills"):  # `plain` is the opened record as JSON: plain->>'kwh', plain->>'Bill No.'
        con.execute(f"CREATE OR REPLACE VIEW {view}_open AS SELECT *, unseal({sealed_columns}) AS plain FROM {view}")
