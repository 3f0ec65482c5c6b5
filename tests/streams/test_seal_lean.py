"""The lean seal path against the slow, obvious one: what it seals opens with ``open_record`` to the values the
field-by-field validator produces; its encodings are fastavro's byte for byte; its inline validation rejects
exactly what the field-by-field checks reject, with the same rule and reason; its HMAC is the standard one."""

from __future__ import annotations

import datetime as dt
import hmac
import io
import json

import fastavro
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from streams.crypto import _primitives as _crypto
from streams.crypto.envelope import DekRing
from streams.exceptions import InvalidInput
from streams.seal import Sealed, Sealer, Source, batch_bodies, open_record, sealed_records
from streams.crypto.tokens import BlindIndex
from streams.validate import Policy, _check_reading_slowly, check_reading

POLICY = Policy(frozenset({"north", "south"}))
NOW = 1.8e9
SRC = Source("readings.raw", 0, 7)

texts = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=12)
stamps = st.datetimes(min_value=dt.datetime(1985, 1, 1), max_value=dt.datetime(2027, 1, 1),
                      timezones=st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=-5)), None]))
values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                   texts)


def _sealer() -> tuple[Sealer, dict]:
    made: dict = {}
    ring = DekRing(max_records=50, max_age_s=3600, on_new_key=lambda k: made.__setitem__(k.key_id, k))
    return Sealer(BlindIndex(bytes(range(32))), ring, POLICY, clock=lambda: NOW), made


def _outcome(check, record):
    try:
        return check(record, policy=POLICY, now=NOW)
    except InvalidInput as exc:
        return (exc.rule, exc.reason)


@settings(max_examples=400, deadline=None)
@given(meter=st.one_of(texts, st.just(" m-1 "), st.integers(0, 99)), ts=st.one_of(stamps.map(str), stamps.map(
    lambda d: d.isoformat().replace("+00:00", "Z")), values), kwh=values, register=values,
    region=st.one_of(st.sampled_from(["north", " south ", "atlantis", ""]), values),
    category=st.one_of(st.just("Domestic"), values), account=st.one_of(st.none(), texts, st.booleans()),
    drop=st.sets(st.sampled_from(["meter_id", "ts", "kwh", "register_kwh", "region", "category"]), max_size=2))
def test_inline_validation_decides_as_the_field_by_field_checks(meter, ts, kwh, register, region, category, account,
                                                                 drop):
    record = {"meter_id": meter, "ts": ts, "kwh": kwh, "register_kwh": register, "region": region,
              "category": category, "account_id": account}
    for field in drop:
        del record[field]
    times: dict = {}
    fast = _outcome(lambda r, **kw: check_reading(r, times=times, **kw), record)
    assert fast == _outcome(lambda r, **kw: _check_reading_slowly(r, last=None, **kw), record)
    assert _outcome(lambda r, **kw: check_reading(r, times=times, **kw), record) == fast  # from the time cache


@settings(max_examples=200, deadline=None)
@given(meter=st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=20),
       stamp=st.datetimes(min_value=dt.datetime(1990, 1, 2), max_value=dt.datetime(2026, 1, 1),
                          timezones=st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=-5)), None])), kwh=st.floats(0, 10_000), register=st.floats(0, 1e9), region=st.sampled_from(["north", "south"]),
       account=st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1,
                                            max_size=20)),
       label=st.sampled_from([None, "spike"]), avro=st.booleans())
def test_sealed_readings_open_to_the_validated_values(meter, stamp, kwh, register, region, account, label, avro):
    sealer, made = _sealer()
    raw = {"meter_id": meter, "ts": stamp.isoformat(), "kwh": kwh, "register_kwh": register, "region": region,
           "category": "Domestic", "account_id": account, "label": label}
    data = schemas.encode("reading", raw) if avro else json.dumps(raw).encode()
    out = sealer.reading(data, SRC)
    assert isinstance(out, Sealed), out.record.get("reason")
    expected = _check_reading_slowly(raw, policy=POLICY, now=NOW, last=None)
    assert open_record(out.record, made.__getitem__, sealer.index) == expected.as_record()
    assert out.reading == expected
    # the body is the Avro fastavro writes, the record's encoding is the SealedRecord fastavro writes
    assert out.body == _fastavro("sealed", out.record)
    index = BlindIndex(bytes(range(32)))
    day = dt.datetime.fromtimestamp(expected.epoch, dt.timezone.utc).date()
    assert (out.record["day_tok"], out.record["month_tok"], out.record["year_tok"]) == (
        index.day(day.isoformat()), index.month(day.year, day.month), index.year(day.year))
    assert out.record["record_id"] == index.record_id("reading", expected.meter_id, expected.ts)
    assert out.record["account_tok"] == (index.account(account) if account else None)


def test_bills_take_the_same_path_and_open(seed_csv):
    import csv

    sealer, made = _sealer()
    with open(seed_csv, newline="") as f:
        rows = [next(csv.DictReader(f)) for _ in range(1)]
    out = sealer.bill(json.dumps(rows[0]).encode(), SRC)
    assert isinstance(out, Sealed), out.record.get("reason")
    assert out.body == _fastavro("sealed", out.record)
    from streams.validate import check_bill

    assert open_record(out.record, made.__getitem__, sealer.index) == check_bill(rows[0])


def test_batch_bodies_are_the_sealed_batch_fastavro_writes():
    sealer, _ = _sealer()
    outs = [sealer.reading(json.dumps({"meter_id": f"m{i}", "ts": "2025-01-01T00:00:00Z", "kwh": 0.5,
                                       "register_kwh": 1.0 * i, "region": "north", "category": "Domestic"}).encode(),
                           SRC) for i in range(7)]
    messages = batch_bodies([o.body for o in outs], max_records=3)
    assert [len(sealed_records(m)) for m in messages] == [3, 3, 1]
    expected = [schemas.encode("sealed_batch", {"records": [o.record for o in outs[i:i + 3]]}) for i in (0, 3, 6)]
    assert messages == expected
    assert batch_bodies([]) == []


def _fastavro(name: str, record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schemas.get(name).parsed, record)
    return buf.getvalue()


@given(key=st.binary(min_size=0, max_size=100), message=st.binary(max_size=300))
def test_hmac_with_precomputed_pads_is_hmac_sha256(key, message):
    assert _crypto.HmacSha256(key).digest(message) == hmac.digest(key, message, "sha256")


def test_nonces_are_fresh_and_twelve_bytes():
    nonces = _crypto.Nonces(batch=4)
    drawn = [nonces.next() for _ in range(10)]
    assert all(len(n) == 12 for n in drawn) and len(set(drawn)) == 10
