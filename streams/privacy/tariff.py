"""Slab tariffs and the bill computed in the clear: the reference every encrypted bill must equal to the paisa.

A tariff is a TOML file (``bescom.toml`` beside this module is the default: the prototype's BESCOM slabs
0-100 kWh at 4.15, 101-200 at 5.60, 201-300 at 7.15, above 300 at 8.20 rupees per kWh). Units are
0.01 kWh: a period's kWh is rounded half up to 0.01 kWh (``units_of``); slab ``i`` takes the units above
the previous edge up to its own; the exact amount is ``sum(units_i * rate_i)`` in 0.01 paise (an integer);
the bill is that / 100 rounded half up, in paise (``paise_of``).

>>> t = default_tariff()
>>> [split(units_of("100.01"), t), clear_bill(units_of(152), t)]
[[10000, 1, 0, 0], 70620]
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Sequence

from ..exceptions import ConfigError

DEFAULT = Path(__file__).with_name("bescom.toml")
UNITS_PER_KWH = 100  # billing unit: 0.01 kWh


@dataclass(frozen=True)
class Tariff:
    """Slab edges in units (0.01 kWh, increasing; the last slab has none) and rates in paise per kWh."""

    name: str
    edges: tuple[int, ...]
    rates: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.rates) != len(self.edges) + 1 or not self.rates:
            raise ConfigError("a tariff needs one rate per slab and an edge for every slab but the last")
        if any(b <= a for a, b in zip((0, *self.edges), self.edges)) or any(r < 0 for r in self.rates):
            raise ConfigError("tariff slab edges must increase from 0 and rates must be >= 0 paise")

    @property
    def slabs(self) -> int:
        return len(self.rates)


def load_tariff(path: Path | str | None = None) -> Tariff:
    """Read a tariff TOML (``[[slab]]`` tables with ``upto_kwh`` — text or number — and ``rate_paise``)."""
    path = Path(path) if path else DEFAULT
    try:
        doc = tomllib.loads(path.read_text())
        slabs = doc["slab"]
        edges = tuple(units_of(s["upto_kwh"]) for s in slabs[:-1])
        rates = tuple(int(s["rate_paise"]) for s in slabs)
        if "upto_kwh" in slabs[-1]:
            raise ConfigError(f"{path}: the last slab is open-ended; remove its upto_kwh")
        return Tariff(str(doc.get("name", path.stem)), edges, rates)
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a tariff file ({exc}); see {DEFAULT} for the format") from None


def default_tariff() -> Tariff:
    return load_tariff(DEFAULT)


def units_of(kwh: float | int | str | Decimal) -> int:
    """kWh -> units of 0.01 kWh, rounded half up (floats via their shortest decimal text, so 0.125 -> 13)."""
    try:
        value = Decimal(str(kwh)) if not isinstance(kwh, Decimal) else kwh
        units = int((value * UNITS_PER_KWH).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    except (InvalidOperation, ValueError):
        raise ConfigError(f"{kwh!r} is not a number of kWh") from None
    if units < 0:
        raise ConfigError(f"{kwh!r} kWh: consumption cannot be negative")
    return units


def split(units: int, tariff: Tariff) -> list[int]:
    """Per-slab units of a period's ``units`` (they add up to ``units``)."""
    out, below = [], 0
    for edge in (*tariff.edges, None):
        top = units if edge is None else min(units, edge)
        out.append(max(top - below, 0))
        below = edge if edge is not None else below
    return out


def exact_amount(slab_units: Sequence[int], tariff: Tariff) -> int:
    """sum(units_i x rate_i): the exact amount in 0.01 paise (what the encrypted dot product computes)."""
    return sum(u * r for u, r in zip(slab_units, tariff.rates))


def paise_of(exact: int) -> int:
    """0.01 paise -> paise, rounded half up."""
    return (exact + 50) // 100


def clear_bill(units: int, tariff: Tariff) -> int:
    """The bill in paise, computed in the clear (the reference)."""
    return paise_of(exact_amount(split(units, tariff), tariff))
