import datetime as dt
import hashlib

import pytest
from hypothesis import given, settings, strategies as st

from streams.crypto.tokens import BlindIndex, cover_range

A = BlindIndex(bytes(32))
B = BlindIndex(bytes([7]) * 32)


def test_same_input_same_token_other_key_other_token():
    assert A.meter("65849108") == A.meter("65849108")
    assert A.meter("65849108") != B.meter("65849108")
    assert A.meter("65849108") != A.meter("65849109")


def test_fields_are_separated():
    """The same text under two fields gives unrelated tokens (per-field HKDF keys)."""
    assert A.token("meter", "2024") != A.token("account", "2024") != A.year(2024)


def test_tokens_are_not_bare_hashes():
    for value in ("2023-03-04", "65849108"):
        assert A.day(value) not in (hashlib.sha256(value.encode()).hexdigest(), hashlib.sha256(value.encode()).hexdigest()[:32])


def test_date_tokens_are_hierarchical():
    t = A.date_tokens(dt.date(2023, 3, 4))
    assert (t.day, t.month, t.year) == (A.day("2023-03-04"), A.month(2023, 3), A.year(2023))


def test_unknown_field_and_bad_key_are_refused():
    with pytest.raises(ValueError):
        A.token("name", "x")
    with pytest.raises(ValueError):
        BlindIndex(b"short")


def _expand(years, months, days):
    out = set(days)
    for y, m in months:
        d = dt.date(y, m, 1)
        while d.month == m:
            out.add(d)
            d += dt.timedelta(days=1)
    for y in years:
        d = dt.date(y, 1, 1)
        while d.year == y:
            out.add(d)
            d += dt.timedelta(days=1)
    return out


@settings(max_examples=300, deadline=None)
@given(st.dates(dt.date(2018, 1, 1), dt.date(2026, 12, 31)), st.integers(0, 1200))
def test_range_cover_is_exact_and_short(start, span):
    end = start + dt.timedelta(days=span)
    years, months, days = cover_range(start, end)
    expanded = _expand(years, months, days)
    exact = {start + dt.timedelta(days=i) for i in range(span + 1)}
    assert expanded == exact
    # no piece overlaps another
    assert len(days) + sum(1 for _ in months) + len(years) <= 2 * 31 + 2 * 12 + (span // 365 + 1)


def test_range_tokens_match_a_full_year():
    cover = A.range_tokens(dt.date(2024, 1, 1), dt.date(2024, 12, 31))
    assert cover.year == [A.year(2024)] and cover.month == [] and cover.day == []


def test_empty_range_is_an_error():
    with pytest.raises(ValueError):
        cover_range(dt.date(2024, 1, 2), dt.date(2024, 1, 1))
