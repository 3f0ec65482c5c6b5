"""What the console reads from the store, as plain functions of an unlocked ``Vault`` (no web types here).

The console runs in the data owner's trust zone: ``Vault`` holds the owner's keys as the console may use them
(``streams.kms``): with a passphrase keystore, the owner's private keys; with a key service, only its token —
each DEK is unwrapped by the service (and cached for ``METERSEAL_KMS_CACHE_TTL``), so revoking the token stops
the console opening anything new at once. When the service refuses or is unreachable, a request fails closed
with one plain message (the detail goes to the log, not to the page). Every function here takes the scope it
may see as an argument (a meter id the caller already checked, a set of meter tokens); nothing here decides who
may ask.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ledger.checkpoint import Checkpoint

from ..exceptions import KeyServiceError, MeterSealError
from ..keys.keystore import Keystore
from ..store.query import Query, Reader
from ..store.base import connect

PERIODS = {"day": 1, "week": 7, "month": 30}


log = logging.getLogger("meterseal.console")


class NoSuchRecord(MeterSealError):
    """No record with that id in the store (or not in the caller's scope)."""


class KeysUnavailable(MeterSealError):
    """Records cannot be opened now: the key service refused or could not be reached (the log says which)."""


@contextlib.contextmanager
def _opening():
    """Failures of the key service become one plain ``KeysUnavailable``: fail closed, say nothing about the service."""
    try:
        yield
    except KeyServiceError as exc:
        log.error("key service: %s", exc)
        raise KeysUnavailable("records cannot be opened right now: the key service refused or is unreachable "
                              "(the console's log says which)") from None


@dataclass
class Vault:
    """The unlocked keystore and a reader over the store; one lock because a DuckDB connection is not shared."""

    data_dir: Path
    keystore: Keystore
    reader: Reader
    signer: Any = field(default=None, repr=False)
    """The owner's ledger signer: the consent log's grants and revocations are signed with it."""
    keys: Any = field(default=None, repr=False)
    """The console's keys (``streams.kms.access.ProcessKeys``): its unwrap counts, its key service."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, data_dir: Path | str, passphrase: str | Callable[[], str] | None = None, *, store: Any = None,
             settings: Any = None) -> "Vault":
        """``store``: a directory, ``s3://...`` or a ``Store`` (default ``<data_dir>/store``). ``passphrase`` (or a
        function asking for it) opens a passphrase keystore; a key service's keystore needs its token instead
        (``BAO_TOKEN``, checked now for the console's capabilities)."""
        from ..kms.access import open_keys
        from ..settings import Settings

        settings = settings if settings is not None else Settings.from_env(data_dir=Path(data_dir))
        keys = open_keys(settings.replace(data_dir=Path(data_dir)), role="console", passphrase=passphrase, check=True)
        reader = Reader(Path(data_dir) / "store" if store is None else store, keys.unlocked())
        keys.usage.attach(reader.store)
        return cls(Path(data_dir), keys.keystore, reader, keys.signer(), keys)

    @property
    def store(self) -> Any:
        """The store every read and write goes through (``streams.store.base.Store``: either backend)."""
        return self.reader.store

    @property
    def store_dir(self) -> Path:
        """This machine's local files: the whole store when local, else the data dir's (budgets, FL models)."""
        return self.reader.store.root

    @property
    def index_key(self) -> bytes:
        return self.reader.keys.index_key

    def meter_token(self, meter_id: str) -> str:
        """The meter's token of its current epoch: after an erasure, its readings are under the next epoch's."""
        return self.reader.token("meter", meter_id)

    def occupied_since(self, meter_id: str) -> float:
        """When the meter's current occupant's time began (epoch seconds): its last erasure, or -inf if never
        erased. Grants, authorizations and refusals made before it belong to an erased customer: never shown."""
        return self.reader.epoch("meter", meter_id).erased_until

    def tokens(self, meter_ids: Iterable[str]) -> set[str]:
        return {self.meter_token(m) for m in meter_ids}

    # -- readings -------------------------------------------------------------------------------
    def readings(self, meter_id: str, start: dt.date, end: dt.date) -> list[dict[str, Any]]:
        """One meter's readings from ``start`` to ``end`` (whole days, inclusive), opened, oldest first."""
        with self._lock, _opening():
            rows = self.reader.search(Query(meter=meter_id, start=start, end=end), kinds=("readings",))
            plains = self.reader.open_many(rows)
        # a signed reading names the device key that signed it; an unsigned one is marked as not device-signed
        out = [{"ts": p["ts"], "kwh": p["kwh"], "register_kwh": p["register_kwh"], "record_id": r["record_id"],
                "device_signed": p.get("device") is not None,
                "device_kid": p["device"]["kid"] if p.get("device") else None} for r, p in zip(rows, plains)]
        return sorted(out, key=lambda x: x["ts"])

    def reading_days(self) -> tuple[dt.date, dt.date] | None:
        """The first and last day of the fleet's readings: from the region rollups (every closed hour, in clear)
        when the worker keeps them, else from the readings sealed first and last; None for an empty store."""
        from ..rollups.read import region_connection

        with self._lock:
            con = region_connection(self.store)
            try:
                low, high = con.execute("SELECT min(hour_ms), max(hour_ms) FROM rollup_region").fetchone()
            finally:
                con.close()
        if low is not None:
            return tuple(dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).date() for ms in (low, high))
        last = self.latest_day()
        return None if last is None else (self.earliest_day() or last, last)

    def recent_readings(self, meter_ids: Iterable[str], *, per_meter: int = 12) -> list[dict[str, Any]]:
        """Each meter's newest readings (of its newest day), newest first, with whether its device signed them."""
        out = []
        for meter in meter_ids:
            day = self.latest_day(meter)
            if day is not None:
                out += [{**r, "meter_id": meter} for r in self.readings(meter, day, day)[-per_meter:]]
        return sorted(out, key=lambda r: r["ts"], reverse=True)

    def latest_day(self, meter_id: str | None = None) -> dt.date | None:
        """The day of the newest reading (of one meter, or of the fleet): replayed data is not from today."""
        return self._edge_day(meter_id, newest=True)

    def earliest_day(self, meter_id: str | None = None) -> dt.date | None:
        """The day of the oldest reading (of one meter, or of the fleet)."""
        return self._edge_day(meter_id, newest=False)

    def _edge_day(self, meter_id: str | None, *, newest: bool) -> dt.date | None:
        """Days are sealed (only their tokens are in clear): open the 200 readings sealed last (or first) and
        take their newest (oldest) day — a stream is sealed roughly in time order."""
        sql = ("SELECT * FROM readings" + (" WHERE meter_tok = ?" if meter_id else "")
               + f" ORDER BY sealed_at_ms {'DESC' if newest else 'ASC'} LIMIT 200")
        with self._lock:
            con = connect(self.store)
            try:
                if self.store.is_empty("readings"):
                    return None
                cur = con.execute(sql, [self.meter_token(meter_id)] if meter_id else [])
                cols = [d[0] for d in cur.description]
                rows = [dict(zip(cols, r)) for r in cur.fetchall()]
            finally:
                con.close()
            with _opening():
                plains = self.reader.open_many(rows) if rows else []
        days = [_day(p["ts"]) for p in plains]
        return (max if newest else min)(days, default=None)

    def usage(self, meter_id: str, *, period: str, end: dt.date) -> dict[str, Any]:
        """kWh per hour (day) or per day (week, month) for the period ending ``end``, and the period before it,
        from the meter's rollups (``usage.meter_period``)."""
        from .usage import meter_period

        if period not in PERIODS:
            raise MeterSealError(f"period {period!r}: choose day, week or month")
        return meter_period(self, meter_id, period=period, end=end, days=PERIODS[period])

    def green_button_csv(self, meter_ids: Iterable[str], start: dt.date, end: dt.date) -> str:
        """"Download My Data": every reading of the customer's meters in the range, as CSV."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["meter_id", "interval_start_utc", "kwh", "register_kwh"])
        for meter in meter_ids:
            for r in self.readings(meter, start, end):
                writer.writerow([meter, r["ts"], r["kwh"], r["register_kwh"]])
        return out.getvalue()

    def green_button_espi(self, meter_ids: Iterable[str], start: dt.date, end: dt.date) -> bytes:
        """Green Button "Download My Data": the customer's meters' readings in the range as an ESPI Atom feed
        (one UsagePoint per meter; it validates against the ESPI 4.0 schema). ``ShareError`` when empty."""
        from ..share.espi import feed

        rows = [{"meter_id": meter, "ts": r["ts"], "kwh": r["kwh"]} for meter in meter_ids
                for r in self.readings(meter, start, end)]
        return feed(rows)

    def region_usage(self, start: dt.date, end: dt.date, *, regions: Iterable[str], min_meters: int = 10) -> dict[str, Any]:
        """Fleet kWh per region per hour (ranges under 3 days) or day, from the region rollups
        (``usage.region_series``: no reading is opened)."""
        from .usage import region_series

        return region_series(self, start, end, regions=regions, min_meters=min_meters)

    # -- bills --------------------------------------------------------------------------------
    def bills(self, meter_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The bills of these meters, opened, newest first."""
        out = []
        with self._lock, _opening():
            for meter in meter_ids:
                rows = self.reader.search(Query(meter=meter), kinds=("bills",))
                for row, plain in zip(rows, self.reader.open_many(rows)):
                    out.append({"record_id": row["record_id"], "bill_no": plain["bill_no"], "meter_id": meter,
                                "date": plain["date"], "units": plain["billed_unit"],
                                "amount": plain.get("total_due"), "category": plain.get("category")})
        return sorted(out, key=lambda b: str(b["date"]), reverse=True)

    # -- ledger -------------------------------------------------------------------------------
    def proof(self, record_id: str, *, meter_tokens: set[str] | None = None, device: bool = False) -> dict[str, Any]:
        """The inclusion-proof bundle of ``meterseal ledger prove``; with ``meter_tokens``, only for those meters;
        ``device``: the proof from the device (``ledger prove --device``; ``DeviceError`` if not device-signed)."""
        from ..store.audit import find_record, proof_bundle

        with self._lock:
            found = find_record(self.store, record_id)
        if found is None or (meter_tokens is not None and found[1]["meter_tok"] not in meter_tokens):
            raise NoSuchRecord(f"no record {record_id}")
        if device:
            from ..devices.proof import device_proof

            return device_proof(self.store, *found, keyring=self.reader.keyring, vkey=self.keystore.ledger_verifier.vkey)
        return proof_bundle(self.store, *found, vkey=self.keystore.ledger_verifier.vkey)

    def checkpoints(self) -> list[dict[str, Any]]:
        """The newest signed checkpoint of every log: origin, size, root, note text, how many were signed."""
        from ..store.audit import logs

        store = self.store
        out = []
        for table, part in logs(store):
            notes = store.checkpoint_store(table, part).all()
            if notes:
                cp = Checkpoint.from_note(notes[-1])
                out.append({"log": f"{table}/p{part}", "origin": cp.origin, "size": cp.size, "root": cp.root.hex(),
                            "signed": len(notes), "note": notes[-1]})
        return out

    # -- keys and fleet -------------------------------------------------------------------------
    def key_status(self) -> dict[str, Any]:
        """Fingerprints, DEK counts and owner-key rotations, the key service (if any) and every process's unwraps
        per hour (``streams.kms.usage``): public facts only, never a secret."""
        from ..kms.usage import hourly

        info = self.keystore.describe()
        deks = self.store.dek_ids()
        if self.keys is not None:
            self.keys.usage.flush()  # this console's own count, up to now
        return {"owners": info["owners"], "regions": info["regions"], "rotations": max(0, len(info["owners"]) - 1),
                "deks": len(deks), "ledger_vkey": self.keystore.ledger_verifier.vkey,
                "kms": info["kms"]["uri"] if info.get("kms") else "local (passphrase keystore)",
                "unwraps": hourly(self.store)}

    def fleet(self, *, now_ms: int, minutes: int = 15) -> dict[str, Any]:
        """Readings sealed and dead letters per minute (last ``minutes``), dead letters by rule, totals."""
        con = connect(self.store)
        try:
            since = now_ms - minutes * 60_000
            per_min = {"readings": [0] * minutes, "dead": [0] * minutes}
            for table, column, key in (("readings", "sealed_at_ms", "readings"), ("dlq", "received_at_ms", "dead")):
                if self.store.is_empty(table):
                    continue
                for slot, n in con.execute(f"SELECT ({column} - ?) // 60000 AS slot, count(*) FROM {table} "
                                           f"WHERE {column} >= ? GROUP BY slot", [since, since]).fetchall():
                    if 0 <= slot < minutes:
                        per_min[key][int(slot)] = n
            totals, by_rule = {}, {}
            for table in ("readings", "bills", "dlq"):
                totals[table] = (con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                                 if not self.store.is_empty(table) else 0)
            if totals["dlq"]:
                by_rule = dict(con.execute("SELECT rule, count(*) FROM dlq GROUP BY rule ORDER BY 2 DESC").fetchall())
        finally:
            con.close()
        return {"per_minute": per_min, "dead_by_rule": by_rule, "totals": totals, "minutes": minutes}


def fl_history(store_dir: Path) -> dict[str, Any] | None:
    """The newest ``fl run``'s history (rounds with MAE/RMSE/R², baselines), or None if there was none."""
    import json

    runs = sorted((store_dir / "models").glob("*/history.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(runs[-1].read_text()) if runs else None


def _day(ts: str) -> dt.date:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(dt.timezone.utc).date()


def _epoch(day: dt.date) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()


def _epoch_ts(ts: str) -> float:
    stamp = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)).timestamp()
