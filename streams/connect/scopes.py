"""ESPI scope strings, parsed strictly: ``FB=4_5_15;IntervalDuration=900;BlockDuration=daily;HistoryLength=34128000``.

A scope names the Green Button function blocks (``FB``, numbers joined by ``_``), the finest interval the
third party may see (``IntervalDuration``, seconds), how often it may be told of new data (``BlockDuration``)
and how far back it may read (``HistoryLength``, seconds). Anything else — a blank string, a repeated or
unknown key, an unknown function block, a number that is not one, a string longer than the ESPI schema's
256 characters — is ``InvalidScope`` (OAuth's ``invalid_scope``), never a guess.

``within(asked, registered)`` says whether a requested scope is no wider than the party's registered one:
the same or fewer function blocks, an interval no finer, notifications no more often, history no longer.

>>> s = Scope.parse("FB=4_5_15;IntervalDuration=900;BlockDuration=daily;HistoryLength=34128000")
>>> s.function_blocks, s.interval_s, s.block_s, s.history_s
((4, 5, 15), 900, 86400, 34128000)
>>> str(s)
'FB=4_5_15;IntervalDuration=900;BlockDuration=daily;HistoryLength=34128000'
>>> Scope.parse("FB=4_99;IntervalDuration=900")
Traceback (most recent call last):
...
streams.connect.scopes.InvalidScope: unknown function block 99 in FB=4_99: ESPI function blocks are 1..51
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from streams.exceptions import MeterSealError

MAX_LENGTH = 256  # the ESPI schema's Authorization scope is a String256
# ESPI (NAESB REQ.21) function blocks by number; the ones meterseal's feeds carry are marked in SERVED
FUNCTION_BLOCKS = {
    1: "Common", 2: "Download My Data", 3: "Connect My Data", 4: "Interval metering",
    5: "Interval electricity metering", 6: "Demand electricity metering", 7: "Net metering",
    8: "Forward and reverse metering", 9: "Register values", 10: "Gas", 11: "Water", 12: "Cost of interval data",
    13: "Security and privacy classes", 14: "Authorization and authentication (OAuth 2.0)", 15: "Usage summary",
    16: "Usage summary with cost", 17: "Power quality summary", 18: "Multiple usage points",
    19: "Partial update data", 20: "Common user experience", 27: "Usage summary with demands and previous day",
    28: "Usage summary costs for current billing period", 29: "Temperature", 30: "Common third-party authorization",
    31: "Core REST services", 32: "REST for resource-level access", 33: "Management REST interfaces",
    34: "SFTP for bulk", 35: "REST for bulk", 36: "Third-party data custodian resources", 37: "Query parameters",
    38: "On-demand requests", 39: "PUSH model", 40: "Offline authorization", 41: "Manage RetailCustomer resources",
    44: "Manage ApplicationInformation", 45: "Manage Authorization", 46: "Manage Subscription",
    47: "Manage UsagePoint", 48: "Manage MeterReading", 49: "Manage IntervalBlock", 50: "Manage ReadingType",
    51: "Manage ServiceStatus",
}
SERVED = frozenset({1, 3, 4, 5, 13, 14, 18, 31, 32, 33, 37, 39})
BLOCK_DURATIONS = {"hourly": 3600, "daily": 86400, "weekly": 7 * 86400, "monthly": 31 * 86400}
INTERVALS = (300, 900, 1800, 3600, 86400)  # the IntervalDurations meterseal can serve (it aggregates up)
KEYS = ("FB", "IntervalDuration", "BlockDuration", "HistoryLength")
_FB = re.compile(r"[0-9]{1,3}(_[0-9]{1,3}){0,60}")
_INT = re.compile(r"[0-9]{1,10}")


class InvalidScope(MeterSealError):
    """A scope string that is blank, malformed, unknown or wider than allowed (OAuth ``invalid_scope``)."""

    error = "invalid_scope"


@dataclass(frozen=True)
class Scope:
    function_blocks: tuple[int, ...]
    interval_s: int = 3600
    block: str = "daily"
    history_s: int = 13 * 31 * 86400

    @property
    def block_s(self) -> int:
        return BLOCK_DURATIONS[self.block]

    def __str__(self) -> str:
        return (f"FB={'_'.join(map(str, self.function_blocks))};IntervalDuration={self.interval_s};"
                f"BlockDuration={self.block};HistoryLength={self.history_s}")

    @classmethod
    def parse(cls, text: str | None) -> "Scope":
        if not isinstance(text, str) or not text.strip():
            raise InvalidScope("blank scope: give e.g. FB=4_5;IntervalDuration=900;BlockDuration=daily;"
                               "HistoryLength=31536000")
        if len(text) > MAX_LENGTH:
            raise InvalidScope(f"scope is {len(text)} characters: at most {MAX_LENGTH}")
        if not text.isascii() or any(c.isspace() for c in text):
            raise InvalidScope("scope has spaces or non-ASCII characters: one string of KEY=VALUE;...")
        parts: dict[str, str] = {}
        for item in text.rstrip(";").split(";"):
            key, sep, value = item.partition("=")
            if not sep or not key or not value:
                raise InvalidScope(f"malformed scope part {item[:40]!r}: want KEY=VALUE")
            if key not in KEYS:
                raise InvalidScope(f"unknown scope key {key[:40]!r}: known are {', '.join(KEYS)}")
            if key in parts:
                raise InvalidScope(f"scope key {key} given twice")
            parts[key] = value
        if "FB" not in parts:
            raise InvalidScope("scope names no function blocks: add FB=4_5 (interval electricity metering)")
        if not _FB.fullmatch(parts["FB"]):
            raise InvalidScope(f"malformed FB={parts['FB'][:40]}: numbers joined by '_'")
        blocks = tuple(sorted({int(b) for b in parts["FB"].split("_")}))
        for b in blocks:
            if b not in FUNCTION_BLOCKS:
                raise InvalidScope(f"unknown function block {b} in FB={parts['FB']}: ESPI function blocks are 1..51")
        values = {}
        for key in ("IntervalDuration", "HistoryLength"):
            if key in parts:
                if not _INT.fullmatch(parts[key]) or int(parts[key]) <= 0:
                    raise InvalidScope(f"{key}={parts[key][:20]} is not a positive number of seconds")
                values[key] = int(parts[key])
        interval = values.get("IntervalDuration", cls.interval_s)
        if interval not in INTERVALS:
            raise InvalidScope(f"IntervalDuration={interval}: meterseal serves {', '.join(map(str, INTERVALS))} s")
        block = parts.get("BlockDuration", cls.block)
        if block not in BLOCK_DURATIONS:
            raise InvalidScope(f"BlockDuration={block[:20]}: one of {', '.join(BLOCK_DURATIONS)}")
        return cls(blocks, interval, block, values.get("HistoryLength", cls.history_s))

    def describe(self) -> list[str]:
        """The scope in words, for the consent page."""
        return [f"{FUNCTION_BLOCKS[b]} (function block {b})" for b in self.function_blocks] + [
            f"readings no finer than every {_span(self.interval_s)}",
            f"at most {_span(self.history_s)} of history",
            f"told of new data at most {self.block}"]


def within(asked: Scope, registered: Scope) -> bool:
    """Whether ``asked`` is no wider than ``registered``."""
    return (set(asked.function_blocks) <= set(registered.function_blocks) and asked.interval_s >= registered.interval_s
            and asked.block_s >= registered.block_s and asked.history_s <= registered.history_s)


def check_within(asked: Scope, registered: Scope) -> Scope:
    if not within(asked, registered):
        raise InvalidScope(f"scope {asked} is wider than the party's registered scope {registered}")
    return asked


def _span(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"
