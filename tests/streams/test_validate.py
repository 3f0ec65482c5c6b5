import json
import math

import pytest

from streams.exceptions import InvalidInput
from streams.validate import MeterState, check_bill, check_reading, decode_raw, next_state

NOW = 1_800_000_000.0  # 2027-01-15
GOOD = {"meter_id": "m1", "ts": "2024-03-01T10:00:00Z", "kwh": 0.4, "register_kwh": 12.5, "region": "north",
        "category": "Domestic"}


def rule_of(record, policy, last=None):
    with pytest.raises(InvalidInput) as err:
        check_reading(record, policy=policy, now=NOW, last=last)
    return err.value.rule


def test_good_reading_is_normalised(policy):
    r = check_reading({**GOOD, "ts": "2024-03-01T12:00:00+02:00", "extra": 1}, policy=policy, now=NOW)
    assert r.ts == "2024-03-01T10:00:00+00:00" and r.kwh == 0.4 and r.account_id is None


def test_naive_timestamps_are_utc(policy):
    assert check_reading({**GOOD, "ts": "2024-03-01 10:00:00"}, policy=policy, now=NOW).ts == "2024-03-01T10:00:00+00:00"


@pytest.mark.parametrize("change, rule", [
    ({"kwh": -0.1}, "kwh"),
    ({"kwh": math.nan}, "kwh"),
    ({"kwh": math.inf}, "kwh"),
    ({"kwh": 1e9}, "kwh"),
    ({"kwh": "4"}, "schema"),
    ({"kwh": True}, "schema"),
    ({"register_kwh": -1}, "register"),
    ({"ts": "2199-01-01T00:00:00Z"}, "future"),
    ({"ts": "1970-01-01T00:00:00Z"}, "ancient"),
    ({"ts": "yesterday"}, "schema"),
    ({"region": "atlantis"}, "region"),
    ({"meter_id": ""}, "schema"),
    ({"meter_id": None}, "schema"),
    ({"category": ["x"]}, "schema"),
])
def test_each_rule_rejects(policy, change, rule):
    assert rule_of({**GOOD, **change}, policy) == rule


def test_future_skew_is_configurable(policy):
    ts = NOW + 200
    import datetime as dt

    stamp = dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat()
    check_reading({**GOOD, "ts": stamp}, policy=policy, now=NOW)  # 200 s < 300 s default skew
    from dataclasses import replace

    assert rule_of({**GOOD, "ts": stamp}, replace(policy, max_future_skew_s=60)) == "future"


def test_register_must_not_roll_back(policy):
    last = MeterState(ts=check_reading(GOOD, policy=policy, now=NOW).epoch - 900, register_kwh=20.0)
    assert rule_of(GOOD, policy, last) == "register"


def test_redelivery_is_accepted_but_a_conflicting_duplicate_is_not(policy):
    r = check_reading(GOOD, policy=policy, now=NOW)
    state = next_state(None, r)
    assert check_reading(GOOD, policy=policy, now=NOW, last=state) == r
    assert rule_of({**GOOD, "register_kwh": 13.0}, policy, state) == "duplicate"


def test_late_reading_must_fit_below_a_later_register(policy):
    r = check_reading(GOOD, policy=policy, now=NOW)
    state = MeterState(r.epoch + 900, 13.0)
    check_reading(GOOD, policy=policy, now=NOW, last=state)
    assert rule_of({**GOOD, "register_kwh": 14.0}, policy, state) == "register"
    assert next_state(state, r) == state  # a late reading does not move the state back


def test_reasons_never_quote_the_data(policy):
    for change in ({"kwh": -123.456}, {"region": "secret-region-xyz"}, {"ts": "not-a-ts-98765"}):
        with pytest.raises(InvalidInput) as err:
            check_reading({**GOOD, **change}, policy=policy, now=NOW)
        assert not any(str(v) in err.value.reason for v in change.values())


@pytest.mark.parametrize("data", [b"", b"not json", b"[1,2]", b"\xff\xfe", b'"str"', b"\xc3\x01garbage!"])
def test_decode_errors(data):
    with pytest.raises(InvalidInput) as err:
        decode_raw(data, "reading")
    assert err.value.rule == "decode"


SEED_ROW = {"Name": "Miraya Keer", "Address": "H.No. 114, Chahal Street, Purnia 567345", "Account ID": "1503927654",
            "Phone No.": "+91 7849510324", "Meter No.": "65849108", "Date": "2023-03-04", "Time": "03:02:39",
            "Bill No.": "194741", "Max Demand": "1", "Previous Unit": "361639", "Present Unit": "361791",
            "Billed Unit": "152", "Due Date": "2025-03-01", "Total Due": "701", "Sanctioned Load": "3",
            "Fixed Amount": "245", "Category": "Industrial"}


def test_bill_from_csv_headers_is_typed():
    bill = check_bill(SEED_ROW)
    assert bill["name"] == "Miraya Keer" and bill["phone_no"] == "+91 7849510324"
    assert bill["present_unit"] == 361791 and bill["total_due"] == 701.0 and bill["region"] is None


def test_bill_from_json_field_names():
    bill = check_bill(SEED_ROW)
    assert check_bill(json.loads(json.dumps(bill))) == bill


@pytest.mark.parametrize("change, rule", [
    ({"Present Unit": "361000"}, "register"),
    ({"Billed Unit": "153"}, "units"),
    ({"Date": "2023-13-01"}, "schema"),
    ({"Time": "25:00:00"}, "schema"),
    ({"Total Due": "lots"}, "schema"),
    ({"Total Due": "-5"}, "amount"),
    ({"Name": ""}, "schema"),
])
def test_bill_rules(change, rule):
    with pytest.raises(InvalidInput) as err:
        check_bill({**SEED_ROW, **change})
    assert err.value.rule == rule


def test_bill_missing_columns_are_named():
    row = dict(SEED_ROW)
    del row["Phone No."]
    with pytest.raises(InvalidInput, match="Phone No."):
        check_bill(row)
