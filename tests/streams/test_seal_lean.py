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
from streams.seal import Rejected, Sealed, Sealer, Source
from streams.sealed_batch import batch_bodies, sealed_records
from streams.unseal import open_record
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
    assert open_record(out.record, made.__getitem__, sealer.index) == {**expected.as_record(), "device": None}
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


_BAD = {"meter_id": ["", True, None, "x" * 300, 7], "ts": ["1980-01-01T00:00:00Z", "2040-01-01T00:00:00Z", "nope", 5],
        "kwh": [-0.1, 10_000.5, float("nan"), float("inf"), True, "1", None],
        "register_kwh": [-1, float("inf"), float("nan"), "2", None], "region": ["atlantis", 3, ""],
        "category": ["", None, 4], "account_id": ["", 5], "label": ["", 6]}
_ROWS = st.lists(st.tuples(st.sampled_from(["m-1", " m-1 ", "m-2"]),
                           st.sampled_from(["2024-03-01T10:00:00Z", "2024-03-01T10:15:00+00:00", "2024-03-01T09:00:00Z",
                                            "2024-03-01T10:15:00Z", "2024-03-01T11:00:00+01:00"]),
                           st.floats(0, 50), st.integers(0, 30), st.sampled_from(["north", " south"]),
                           st.sampled_from([None, "a-1", " a-1 ", "a" * 257, "  ", "é"]),
                           st.sampled_from([None, "spike"]),
                           st.sampled_from([None, None, None, *_BAD]), st.integers(0, 6)), min_size=1, max_size=25)


@settings(max_examples=300, deadline=None)
@given(rows=_ROWS)
def test_seal_readings_decides_as_the_validator_reading_after_reading(rows):
    """The inline path of ``seal_readings`` (a timestamp seen before, the meter's newest reading) and the validator
    give the same verdict, rule and reason, a meter's later reading checked against its earlier one in the same
    list; what is sealed opens to the validated values."""
    from streams.validate import next_state

    sealer, made = _sealer()
    records = []
    for meter, ts, kwh, register, region, account, label, bad, which in rows:
        record = {"meter_id": meter, "ts": ts, "kwh": kwh, "register_kwh": register, "region": region,
                  "category": "Domestic"}
        if account is not None:
            record["account_id"] = account
        if label is not None:
            record["label"] = label
        if bad is not None:  # one field made wrong
            record[bad] = _BAD[bad][which % len(_BAD[bad])]
        records.append(record)
    index, states, expected = BlindIndex(bytes(range(32))), {}, []
    for record in records:
        meter = record["meter_id"]
        token = index.meter(str(meter)) if isinstance(meter, (str, int)) and not isinstance(meter, bool) else None
        try:
            reading = check_reading(record, policy=POLICY, now=NOW, last=states.get(token))
        except InvalidInput as exc:
            expected.append((exc.rule, exc.reason))
            continue
        states[token] = next_state(states.get(token), reading)
        expected.append((reading, states[token]))
    for _ in range(2):  # the second time every timestamp is in the sealer's cache: the inline path
        got = []
        for out in sealer.seal_readings(records):
            if isinstance(out, InvalidInput):
                got.append((out.rule, out.reason))
            else:
                got.append((out.reading, out.state))
                assert open_record(out.record, made.__getitem__, sealer.index) == {**out.reading.as_record(),
                                                                                  "device": None}
                assert out.body == _fastavro("sealed", out.record)
        assert got == expected


def test_readings_at_once_are_reading_after_reading():
    messages = [json.dumps({"meter_id": m, "ts": f"2025-01-01T00:0{i}:00Z", "kwh": 0.5, "register_kwh": r,
                            "region": "north", "category": "Domestic"}).encode()
                for i, (m, r) in enumerate([("a", 1.0), ("b", 5.0), ("a", 0.5), ("a", 2.0), ("b", 4.0)])]
    messages.insert(2, b"{not json")
    one, _ = _sealer()
    states: dict = {}
    expected = []
    for m in messages:
        out = one.reading(m, SRC, states.get)
        if isinstance(out, Sealed):
            states[out.record["meter_tok"]] = out.state
        expected.append(out)
    many, _ = _sealer()
    got = many.readings(messages, [SRC] * len(messages))
    assert [type(o) for o in got] == [type(o) for o in expected] == [Sealed, Sealed, Rejected, Rejected, Sealed,
                                                                      Rejected]
    assert [o.record.get("record_id") or o.record["rule"] for o in got] == \
        [o.record.get("record_id") or o.record["rule"] for o in expected]
    assert [o.record.get("dlq_id") for o in got] == [o.record.get("dlq_id") for o in expected]


def test_a_workers_batch_of_messages_is_message_after_message():
    """``Sealer.messages`` (the seal agent's call): runs of single readings sealed together, head-end batches on
    their own, each message's outcomes as ``message`` gives them one message after another, a meter's state
    carried across single readings and batches alike."""
    def reading(m, minute, register, **extra):
        return {"meter_id": m, "ts": f"2025-01-01T00:{minute:02d}:00Z", "kwh": 0.5, "register_kwh": register,
                "region": "north", "category": "Domestic", **extra}

    messages = [json.dumps(reading("a", 1, 1.0)).encode(), json.dumps(reading("b", 2, 5.0)).encode(),
                json.dumps([reading("a", 3, 2.0), reading("a", 4, 0.5), reading("c", 4, 1.0)]).encode(),
                json.dumps(reading("a", 5, 1.5)).encode(),  # below the batch's last accepted register: rejected
                b"[]", json.dumps(reading("a", 6, 3.0)).encode(), b"{not json",
                json.dumps([reading("b", 7, 6.0)]).encode()]
    keys = [b"a", b"b", b"hes-1", b"a", b"hes-1", b"a", b"a", b"hes-1"]
    one, _ = _sealer()
    states: dict = {}
    expected = []
    for data, key in zip(messages, keys):
        outcomes = list(one.message(data, SRC, states.get, key=key))
        for out in outcomes:
            if isinstance(out, Sealed):
                states[out.record["meter_tok"]] = out.state
        expected.append(outcomes)
    many, _ = _sealer()
    got = many.messages(messages, [SRC] * len(messages), keys=keys)

    def summary(per_message):
        return [[o.record.get("record_id") or (o.record["rule"], o.record.get("batch_index")) for o in outcomes]
                for outcomes in per_message]

    assert summary(got) == summary(expected)
    assert [[type(o).__name__ for o in outcomes] for outcomes in got] == [
        ["Sealed"], ["Sealed"], ["Sealed", "Rejected", "Sealed"], ["Rejected"], ["Rejected"], ["Sealed"], ["Rejected"],
        ["Sealed"]]


def test_an_integer_beyond_any_float_is_a_dead_letter_not_an_error():
    """JSON numbers have no size limit: a 400-digit kwh or register is refused as not finite (it used to raise
    OverflowError out of the validator, which the worker turned into an ``internal`` dead letter), and the other
    messages of the same call are sealed."""
    good = json.dumps({"meter_id": "m", "ts": "2025-01-01T00:00:00Z", "kwh": 0.5, "register_kwh": 1.0,
                       "region": "north", "category": "Domestic"})
    huge_kwh = good.replace("0.5", "1" + "0" * 400).encode()
    huge_register = good.replace('"register_kwh": 1.0', '"register_kwh": 1' + "0" * 400).encode()
    sealer, _ = _sealer()
    out = sealer.readings([good.encode(), huge_kwh, huge_register], [SRC] * 3)
    assert isinstance(out[0], Sealed)
    assert [(o.record["rule"], o.record["reason"]) for o in out[1:]] == [("kwh", "kwh: must be finite"),
                                                                         ("schema", "register_kwh: must be finite")]


def test_a_lone_surrogate_escape_is_a_decode_dead_letter():
    data = (b'{"meter_id": "\\ud800", "ts": "2025-01-01T00:00:00Z", "kwh": 0.5, "register_kwh": 1.0, '
            b'"region": "north", "category": "Domestic"}')
    sealer, _ = _sealer()
    out = sealer.reading(data, SRC)
    assert isinstance(out, Rejected) and out.record["rule"] == "decode"


def test_an_unexpected_error_costs_its_own_message_only(monkeypatch):
    """If sealing a list raises (a bug met on some message's data), each message is sealed on its own: the one
    that raises is an ``internal`` dead letter, the others are sealed, a meter's later reading still checked
    against its earlier one."""
    sealer, made = _sealer()
    account = sealer._account

    def buggy(account_id):
        if account_id == "boom":
            raise KeyError(account_id)
        return account(account_id)

    monkeypatch.setattr(sealer, "_account", buggy)
    rows = [("a", 1.0, None), ("a", 2.0, "boom"), ("a", 1.5, None), ("a", 3.0, None)]
    messages = [json.dumps({"meter_id": m, "ts": f"2025-01-01T00:0{i}:00Z", "kwh": 0.5, "register_kwh": r,
                            "region": "north", "category": "Domestic", "account_id": acc}).encode()
                for i, (m, r, acc) in enumerate(rows)]
    out = sealer.readings(messages, [SRC] * 4)
    assert [o.record.get("rule") for o in out] == [None, "internal", None, None]
    assert open_record(out[3].record, made.__getitem__)["register_kwh"] == 3.0
