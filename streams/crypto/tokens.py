"""Keyed blind-index tokens: equality search over sealed records without plaintext.

Each field has its own key, derived with HKDF-SHA256 from the index root key
(info ``meterseal/blind-index/v1/<field>``); a token is HMAC-SHA256(field key, value)
truncated to 128 bits, hex. Without the root key a token cannot be recomputed, so a low-entropy
value (a date, an 8-digit meter number) cannot be found by hashing guesses — the weakness of the
earlier prototype's bare SHA-256 date tokens.

Dates get three tokens (day, month, year) so a date range becomes a short list: whole years,
then whole months, then the remaining days.

>>> index = BlindIndex(bytes(32))
>>> index.token("meter", "65849108") == index.token("meter", " 65849108 ")
True
>>> index.token("meter", "65849108") == BlindIndex(bytes([1]) * 32).token("meter", "65849108")
False
>>> import datetime as dt
>>> years, months, days = cover_range(dt.date(2023, 12, 30), dt.date(2025, 2, 2))
>>> years, months, [d.isoformat() for d in days]
([2024], [(2025, 1)], ['2023-12-30', '2023-12-31', '2025-02-01', '2025-02-02'])
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from streams.crypto import _primitives

FIELDS = ("meter", "account", "day", "month", "year", "record")
TOKEN_BYTES = 16
CACHED = ("meter", "account", "day", "month", "year")  # few distinct values, asked for on every record
CACHE_SIZE = 100_000  # tokens kept per field; a full cache starts over (a fleet's meters fit)


class BlindIndex:
    """Token maker for one index root key."""

    def __init__(self, root_key: bytes) -> None:
        if len(root_key) != 32:
            raise ValueError(f"index root key must be 32 bytes, got {len(root_key)}")
        self._root = root_key
        self._epoch_keys: dict[tuple[str, int], bytes] = {}
        self._keys = {f: _primitives.hkdf_sha256(root_key, info=b"meterseal/blind-index/v1/" + f.encode()) for f in FIELDS}
        self._cache: dict[str, dict[str, str]] = {f: {} for f in CACHED}
        self._record_hmac = _primitives.HmacSha256(self._keys["record"])

    def token(self, field: str, value: str) -> str:
        cache = self._cache.get(field)
        if cache is not None:
            tok = cache.get(value)
            if tok is None:
                if len(cache) >= CACHE_SIZE:
                    cache.clear()
                tok = cache[value] = self._token(field, value)
            return tok
        return self._token(field, value)

    def _token(self, field: str, value: str) -> str:
        try:
            key = self._keys[field]
        except KeyError:
            raise ValueError(f"no blind index for field {field!r}; fields: {', '.join(FIELDS)}") from None
        return _primitives.hmac_sha256(key, value.strip().encode()).hex()[: 2 * TOKEN_BYTES]

    def meter(self, meter_id: str, epoch: int = 0) -> str:
        """The meter's token in token ``epoch`` (0 until its data is first erased; each erasure moves it on)."""
        return self.token("meter", meter_id) if not epoch else self._epoch_token("meter", meter_id, epoch)

    def account(self, account_id: str, epoch: int = 0) -> str:
        return self.token("account", account_id) if not epoch else self._epoch_token("account", account_id, epoch)

    def _epoch_token(self, field: str, value: str, epoch: int) -> str:
        """A token of a later epoch: HMAC under a field key of that epoch's own (HKDF info
        ``meterseal/blind-index/v1/<field>/epoch/<n>``), so no value of one epoch collides with another's."""
        if epoch < 0:
            raise ValueError("token epochs start at 0")
        key = self._epoch_keys.get((field, epoch))
        if key is None:
            key = self._epoch_keys[(field, epoch)] = _primitives.hkdf_sha256(
                self._root, info=f"meterseal/blind-index/v1/{field}/epoch/{epoch}".encode())
        return _primitives.hmac_sha256(key, value.strip().encode()).hex()[: 2 * TOKEN_BYTES]

    def day(self, day: dt.date | str) -> str:
        return self.token("day", str(day))

    def month(self, year: int, month: int) -> str:
        return self.token("month", f"{year:04d}-{month:02d}")

    def year(self, year: int) -> str:
        return self.token("year", f"{year:04d}")

    def date_tokens(self, day: dt.date) -> "DateTokens":
        return DateTokens(self.day(day.isoformat()), self.month(day.year, day.month), self.year(day.year))

    def record_id(self, kind: str, *parts: str) -> str:
        """Stable id of a record: the same reading redelivered gets the same id; the store cannot invert it."""
        return self.token("record", "|".join((kind, *parts)))

    def reading_id(self, meter_id: str, ts: str) -> str:
        """``record_id("reading", meter_id, ts)`` for a validated reading (``meter_id`` stripped, ``ts`` the
        normalised UTC time), in one call: the seal path's per-reading HMAC."""
        return self._record_hmac.digest(f"reading|{meter_id}|{ts}".encode()).hex()[: 2 * TOKEN_BYTES]

    def reading_id_pads(self) -> tuple:
        """SHA-256 states of ``reading_id``'s HMAC, inner (with ``"reading|"`` already hashed in) and outer: the
        seal path copies them and adds ``f"{meter_id}|{ts}"`` (``hexdigest()[:32]`` is then ``reading_id``)."""
        inner = self._record_hmac.inner_state()
        inner.update(b"reading|")
        return inner, self._record_hmac.outer_state()

    def range_tokens(self, start: dt.date, end: dt.date) -> "DateTokens[list]":
        years, months, days = cover_range(start, end)
        return DateTokens([self.day(d.isoformat()) for d in days],
                          [self.month(y, m) for y, m in months],
                          [self.year(y) for y in years])


@dataclass(frozen=True)
class DateTokens:
    day: object
    month: object
    year: object


def _month_end(year: int, month: int) -> dt.date:
    first_next = dt.date(year + month // 12, month % 12 + 1, 1)
    return first_next - dt.timedelta(days=1)


def cover_range(start: dt.date, end: dt.date) -> tuple[list[int], list[tuple[int, int]], list[dt.date]]:
    """Cover [start, end] (inclusive) with the fewest whole years, then whole months, then days."""
    if end < start:
        raise ValueError(f"empty date range: {start} is after {end}")
    years: list[int] = []
    months: list[tuple[int, int]] = []
    days: list[dt.date] = []
    day = start
    while day <= end:
        year_end = dt.date(day.year, 12, 31)
        month_end = _month_end(day.year, day.month)
        if day.month == 1 and day.day == 1 and year_end <= end:
            years.append(day.year)
            day = year_end + dt.timedelta(days=1)
        elif day.day == 1 and month_end <= end:
            months.append((day.year, day.month))
            day = month_end + dt.timedelta(days=1)
        else:
            days.append(day)
            day += dt.timedelta(days=1)
    return years, months, days
