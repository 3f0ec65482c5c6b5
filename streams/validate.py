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
from typing import Any, NamedTuple

import orjson

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


class MeterState(NamedTuple):
    """What the validator remembers per meter: the latest reading's time and register."""

    ts: float
    register_kwh: float


class Reading(NamedTuple):
    """A valid reading (a tuple: made once per reading on the hot path, where a frozen dataclass's
    ``__init__`` cost more than the rest of validation)."""

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
        return {"meter_id": self.meter_id, "ts": self.ts, "kwh": self.kwh, "register_kwh": self.register_kwh,
                "region": self.region, "category": self.category, "account_id": self.account_id, "label": self.label}


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
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        value = _json_loads(data)  # what orjson refuses (NaN, Infinity, deep nesting, bad UTF-8) gets json's verdict
    if not isinstance(value, dict):
        raise InvalidInput("decode", f"JSON must be an object, got {type(value).__name__}")
    return value


def _json_loads(data: bytes) -> Any:
    """``json.loads`` with its errors as ``InvalidInput`` (rule ``decode``): the standard library accepts NaN and
    ±Infinity, which then fail the finite checks with their own rule, as they always did."""
    try:
        value = json.loads(data)
        json.dumps(value, ensure_ascii=False).encode()  # a "\ud800" escape decodes to a str no UTF-8 can hold
    except UnicodeEncodeError:
        raise InvalidInput("decode", "JSON holds a lone surrogate escape (\\ud800-\\udfff): not text") from None
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("decode", "neither JSON nor Avro single-object encoding") from None
    except RecursionError:
        raise InvalidInput("decode", "JSON nested too deeply") from None
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
    try:
        value = float(value)
    except OverflowError:  # an integer beyond any float (JSON allows any number of digits)
        value = math.inf
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


_new_tuple = tuple.__new__  # a NamedTuple made without its Python-level __new__ (hot path)
_NUMBER_TYPES = (float, int)  # exact types: bool (an int subclass) takes the careful path and is refused there
TIME_CACHE_SIZE = 100_000


def check_reading(record: dict[str, Any], *, policy: Policy, now: float, last: MeterState | None = None,
                  times: dict[str, tuple[float, str]] | None = None) -> Reading:
    """A valid ``Reading`` from a decoded record, or ``InvalidInput``.

    ``last`` is the meter's latest accepted reading: the register may not go back in time, and a
    second reading for the same instant must be an exact redelivery (the same register). ``times`` caches
    parsed timestamps (text -> (epoch, UTC ISO text)); a fleet's meters report the same instants.

    The usual reading (strings and plain numbers) is checked inline; anything else goes through the
    field checks one by one, in the same order, so each rejection names the same rule and field.
    """
    get = record.get
    meter_id, ts, kwh, register = get("meter_id"), get("ts"), get("kwh"), get("register_kwh")
    region, category = get("region"), get("category")
    if (type(meter_id) is str and type(ts) is str and type(region) is str and type(category) is str
            and type(kwh) in _NUMBER_TYPES and type(register) in _NUMBER_TYPES):
        meter_id, region, category = meter_id.strip(), region.strip(), category.strip()
        if not (0 < len(meter_id) <= 256 and 0 < len(region) <= 256 and 0 < len(category) <= 256):
            return _check_reading_slowly(record, policy=policy, now=now, last=last)
        parsed = None if times is None else times.get(ts)
        if parsed is None:
            stamp = _parse_ts(ts)
            parsed = (stamp.timestamp(), stamp.astimezone(dt.timezone.utc).isoformat())
            if times is not None:
                if len(times) >= TIME_CACHE_SIZE:
                    times.clear()
                times[ts] = parsed
        try:
            kwh, register = float(kwh), float(register)
        except OverflowError:
            return _check_reading_slowly(record, policy=policy, now=now, last=last)
        if not math.isfinite(kwh):
            raise InvalidInput("kwh", "kwh: must be finite")
        if not math.isfinite(register):
            raise InvalidInput("schema", "register_kwh: must be finite")
        epoch, utc = parsed
        # what _check_ranges accepts without a question (in range, and the meter's newest reading), else its verdict
        if not (0 <= kwh <= policy.max_kwh and register >= 0 and region in policy.regions
                and policy.min_ts <= epoch <= now + policy.max_future_skew_s
                and (last is None or (epoch > last[0] and register >= last[1]))):
            _check_ranges(epoch, kwh, register, region, policy, now, last)
        account, label = get("account_id"), get("label")
        return _new_tuple(Reading, (meter_id, utc, epoch, kwh, register, region, category,
                                    None if account is None else _text(record, "account_id"),
                                    None if label is None else _text(record, "label")))
    return _check_reading_slowly(record, policy=policy, now=now, last=last)


def _check_reading_slowly(record: dict[str, Any], *, policy: Policy, now: float, last: MeterState | None) -> Reading:
    """Every field checked on its own, in order: the first problem names the rule and field."""
    missing = [f for f in _REQUIRED_READING if record.get(f) is None]
    if missing:
        raise InvalidInput("schema", f"missing field(s): {', '.join(missing)}")
    meter_id = _text(record, "meter_id")
    stamp = _parse_ts(record["ts"])
    kwh = _number(record, "kwh")
    register = _number(record, "register_kwh")
    region = _text(record, "region")
    category = _text(record, "category")
    epoch = stamp.timestamp()
    _check_ranges(epoch, kwh, register, region, policy, now, last)
    utc = stamp.astimezone(dt.timezone.utc).isoformat()
    return Reading(meter_id, utc, epoch, kwh, register, region, category,
                   _text(record, "account_id", required=False), _text(record, "label", required=False))


def _check_ranges(epoch: float, kwh: float, register: float, region: str, policy: Policy, now: float,
                  last: MeterState | None) -> None:
    if kwh < 0:
        raise InvalidInput("kwh", "must be >= 0")
    if kwh > policy.max_kwh:
        raise InvalidInput("kwh", f"above the plausible maximum of {policy.max_kwh:g} kWh per reading")
    if register < 0:
        raise InvalidInput("register", "register_kwh must be >= 0")
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
