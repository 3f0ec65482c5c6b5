"""Decoding and validation of raw readings and bills. Pure functions: no Kafka, no disk.

Every rejection raises ``InvalidInput(rule, reason)``; the reason is stored in clear on the
dead-letter topic, so it names the rule and the field but never the value.

>>> policy = Policy(regions=frozenset({"north"}))
>>> raw = b'{"meter_id": "m1", "ts": "2024-03-01T10:00:00Z", "kwh": 0.4, "register_kwh": 12.5,'
>>> raw += b' "region": "north", "category": "Domestic"}'
>>> reading = check_reading(decode_raw(raw, "reading"), policy=policy, now=1.8e9)
>>> reading.ts
'2024-03-01T10:00:00+00:00'
>>> check_reading(dict(decode_raw(raw, "reading"), kwh=-1.0), policy=policy, now=1.8e9)
Traceback (most recent call last):
...
streams.exceptions.InvalidInput: kwh: must be >= 0
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

import schemas
from streams.exceptions import InvalidInput

READING_FIELDS = ("meter_id", "ts", "kwh", "register_kwh", "region", "category", "account_id", "label")
_REQUIRED_READING = READING_FIELDS[:6]
BILL_COLUMNS = {f["name"]: f["csv"] for f in schemas.get("bill").fields if "csv" in f}  # field -> CSV header
_BILL_BY_HEADER = {header: name for name, header in BILL_COLUMNS.items()}
_BILL_TYPES = {f["name"]: f["type"] for f in schemas.get("bill").fields}


@dataclass(frozen=True)
class Policy:
    """What a valid reading is. Built from ``Settings`` by ``Policy.from_settings``."""

    regions: frozenset[str]
    max_future_skew_s: float = 300.0
    min_ts: float = dt.datetime(1990, 1, 1, tzinfo=dt.timezone.utc).timestamp()
    max_kwh: float = 10_000.0

    @classmethod
    def from_settings(cls, settings) -> "Policy":
        min_ts = _parse_ts(settings.min_ts, "min_ts").timestamp()
        return cls(frozenset(settings.regions), settings.max_future_skew_s, min_ts, settings.max_kwh)


@dataclass(frozen=True)
class MeterState:
    """What the validator remembers per meter: the latest reading's time and register."""

    ts: float
    register_kwh: float


@dataclass(frozen=True)
class Reading:
    meter_id: str
    ts: str  # normalised ISO-8601 in UTC
    epoch: float
    kwh: float
    register_kwh: float
    region: str
    category: str
    account_id: str | None = None
    label: str | None = None

    @property
    def day(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.epoch, dt.timezone.utc).date()

    def as_record(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in READING_FIELDS}


def decode_raw(data: bytes, kind: str) -> dict[str, Any]:
    """Bytes from a raw topic (JSON object or Avro single-object encoding) to a dict."""
    if not data:
        raise InvalidInput("decode", "empty message")
    if data[:2] == schemas.MARKER:
        try:
            return schemas.decode(kind, data)
        except schemas.SchemaError as exc:
            raise InvalidInput("decode", f"Avro: {exc}") from None
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("decode", "neither JSON nor Avro single-object encoding") from None
    except RecursionError:
        raise InvalidInput("decode", "JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise InvalidInput("decode", f"JSON must be an object, got {type(value).__name__}")
    return value


def _parse_ts(text: Any, name: str = "ts") -> dt.datetime:
    if not isinstance(text, str):
        raise InvalidInput("schema", f"{name}: must be an ISO-8601 string")
    try:
        stamp = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput("schema", f"{name}: not an ISO-8601 timestamp") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)


def utc_ts(text: Any) -> str:
    """A reading's timestamp as it is sealed and hashed into its record id: ISO-8601 in UTC.

    >>> utc_ts("2025-01-02T03:04:05Z"), utc_ts("2025-01-02T04:04:05+01:00")
    ('2025-01-02T03:04:05+00:00', '2025-01-02T03:04:05+00:00')
    """
    return _parse_ts(text).astimezone(dt.timezone.utc).isoformat()


def _number(record: dict, name: str) -> float:
    value = record.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput("schema", f"{name}: must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidInput(name if name == "kwh" else "schema", f"{name}: must be finite")
    return value


def _text(record: dict, name: str, *, required: bool = True) -> str | None:
    value = record.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidInput("schema", f"{name}: must be a string")
    value = str(value).strip()
    if not value:
        raise InvalidInput("schema", f"{name}: must not be empty")
    if len(value) > 256:
        raise InvalidInput("schema", f"{name}: longer than 256 characters")
    return value


def check_reading(record: dict[str, Any], *, policy: Policy, now: float, last: MeterState | None = None) -> Reading:
    """A valid ``Reading`` from a decoded record, or ``InvalidInput``.

    ``last`` is the meter's latest accepted reading: the register may not go back in time, and a
    second reading for the same instant must be an exact redelivery (the same register).
    """
    missing = [f for f in _REQUIRED_READING if record.get(f) is None]
    if missing:
        raise InvalidInput("schema", f"missing field(s): {', '.join(missing)}")
    meter_id = _text(record, "meter_id")
    stamp = _parse_ts(record["ts"])
    kwh = _number(record, "kwh")
    register = _number(record, "register_kwh")
    region = _text(record, "region")
    category = _text(record, "category")
    if kwh < 0:
        raise InvalidInput("kwh", "must be >= 0")
    if kwh > policy.max_kwh:
        raise InvalidInput("kwh", f"above the plausible maximum of {policy.max_kwh:g} kWh per reading")
    if register < 0:
        raise InvalidInput("register", "register_kwh must be >= 0")
    epoch = stamp.timestamp()
    if epoch > now + policy.max_future_skew_s:
        raise InvalidInput("future", f"timestamp more than {policy.max_future_skew_s:g} s in the future")
    if epoch < policy.min_ts:
        raise InvalidInput("ancient", "timestamp before the configured minimum (METERSEAL_MIN_TS)")
    if region not in policy.regions:
        raise InvalidInput("region", "unknown region (see METERSEAL_REGIONS)")
    if last is not None:
        if epoch > last.ts and register < last.register_kwh:
            raise InvalidInput("register", "register_kwh went backwards (rollback)")
        if epoch == last.ts and register != last.register_kwh:
            raise InvalidInput("duplicate", "a different reading for the same meter and time was already accepted")
        if epoch < last.ts and register > last.register_kwh:
            raise InvalidInput("register", "late reading's register is ahead of a later reading")
    utc = stamp.astimezone(dt.timezone.utc).isoformat()
    return Reading(meter_id, utc, epoch, kwh, register, region, category,
                   _text(record, "account_id", required=False), _text(record, "label", required=False))


def next_state(last: MeterState | None, reading: Reading) -> MeterState:
    if last is not None and last.ts >= reading.epoch:
        return last
    return MeterState(reading.epoch, reading.register_kwh)


def check_bill(record: dict[str, Any]) -> dict[str, Any]:
    """A bill in schema field names with typed values, from field names or the CSV's column headers."""
    fields = {_BILL_BY_HEADER.get(k, k): v for k, v in record.items()}
    missing = [name for name in BILL_COLUMNS if fields.get(name) in (None, "")]
    if missing:
        raise InvalidInput("schema", "missing column(s): " + ", ".join(BILL_COLUMNS[m] for m in missing))
    bill: dict[str, Any] = {}
    for name, header in BILL_COLUMNS.items():
        value, kind = fields[name], _BILL_TYPES[name]
        try:
            if kind == "string":
                if isinstance(value, (bool, float)) or not isinstance(value, (str, int)):
                    raise ValueError
                bill[name] = str(value).strip()
            elif kind == "long":
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                bill[name] = int(value)
            else:
                if isinstance(value, bool):
                    raise ValueError
                bill[name] = float(value)
                if not math.isfinite(bill[name]):
                    raise ValueError
        except (TypeError, ValueError):
            raise InvalidInput("schema", f"{header}: must be a {'number' if kind != 'string' else 'string'}") from None
    for name in ("date", "due_date"):
        try:
            dt.date.fromisoformat(bill[name])
        except ValueError:
            raise InvalidInput("schema", f"{BILL_COLUMNS[name]}: not a YYYY-MM-DD date") from None
    try:
        dt.time.fromisoformat(bill["time"])
    except ValueError:
        raise InvalidInput("schema", "Time: not an HH:MM:SS time") from None
    if bill["present_unit"] < bill["previous_unit"]:
        raise InvalidInput("register", "Present Unit is below Previous Unit (rollback)")
    if bill["billed_unit"] != bill["present_unit"] - bill["previous_unit"]:
        raise InvalidInput("units", "Billed Unit is not Present Unit - Previous Unit")
    if bill["total_due"] < 0:
        raise InvalidInput("amount", "Total Due must be >= 0")
    region = fields.get("region")
    bill["region"] = None if region in (None, "") else str(region).strip()
    return bill
