"""Differentially private per-region aggregates of meter readings: contribution bounds, public group keys,
and OpenDP's Gaussian mechanism under zero-concentrated DP (zCDP).

**Guarantee.** The unit of privacy is a *meter*: two data sets are neighbours when one has all of one
meter's readings and the other has none of them. A release with parameter ``rho`` is rho-zCDP for that
unit (Bun & Steinke 2016), which implies (eps, delta)-DP with eps = rho + 2·sqrt(rho·ln(1/delta))
(``approx_dp``, via OpenDP's ``make_zCDP_to_approxDP``). zCDP composes by adding rho, which is what the
budgets (``budget``) add up.

**Contribution bounds** (meterseal's code, tested in ``tests/streams/privacy/test_dp.py``):

- every reading's kWh is clamped to ``[0, clamp_kwh]``;
- a meter counts with at most ``per_hour`` readings in any clock hour (UTC), across all regions: the
  earliest ones by timestamp are kept, later ones in that hour are dropped.

So one meter adds at most ``w·per_hour·clamp_kwh`` kWh (and ``w·per_hour`` readings) to the groups of one
time bucket of ``w`` hours, and at most that to all regions of the bucket together (L1, hence L2). Over
``B`` buckets its L2 norm is at most ``w·per_hour·clamp_kwh·sqrt(B)`` (sums) and ``w·per_hour·sqrt(B)``
(counts): the L2 sensitivities ``sensitivity`` returns.

**Public group keys.** Groups are every region of the settings times every hour (or day) of the query's
range — never keys taken from the data, so an empty group is released (noisy) like any other, and the
set of groups reveals nothing.

**Mechanism** (OpenDP, ``opendp.measurements.make_gaussian`` over ``vector_domain(atom_domain(float))``
with ``l2_distance``): the released vector is the sums (or counts, or both for ``mean``) divided by their
sensitivity, so one meter moves it by at most 1 (``sqrt(2)`` for ``mean``). OpenDP's privacy map gives
the rho it costs at that distance; its exact sampler adds the noise. Noise scale in kWh (or readings) =
the vector's scale × the sensitivity. ``mean`` = noisy sum / noisy count, with a 95 % interval from the
union bound of two 97.5 % intervals. Intervals cover the *noise*; the bias of clamping and dropping is not
in them (data within the bounds has none).

>>> spec = DPQuery(metric="sum", by=("region", "hour"), start=dt.date(2025, 1, 1), end=dt.date(2025, 1, 1),
...                regions=("north", "south"), bounds=Bounds(clamp_kwh=2.0, per_hour=4))
>>> len(group_keys(spec)), sensitivity(spec)
(48, (39.191835884530846, 19.595917942265423))
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..exceptions import MeterSealError

METRICS = ("sum", "mean", "count")
GROUPINGS = {("region",): None, ("region", "hour"): 1, ("region", "day"): 24}
ALPHA = 0.05  # the stated intervals are 95 %
MIN_RHO = 1e-9  # smaller costs need noise scales past 10^4 per unit of sensitivity: answers would be noise


class DPError(MeterSealError):
    """A differentially private query that cannot be answered as asked (bad parameters, no budget)."""


class BudgetExceeded(DPError):
    """The query would take an analyst's or a data set's privacy loss past its budget; nothing was released."""


def opendp():
    """``opendp.prelude`` with the ``contrib`` features on (Gaussian, filters, conversions)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


@dataclass(frozen=True)
class Bounds:
    """Per-meter contribution bounds: kWh per reading clamped to ``[0, clamp_kwh]``; at most ``per_hour``
    readings per meter in any clock hour (the earliest are kept)."""

    clamp_kwh: float = 2.0
    per_hour: int = 4
    hour_kwh: float | None = None
    """Set: clamp each meter's **hourly sum** to ``[0, hour_kwh]`` instead of each reading (read from the hourly
    rollups): one meter then moves a w-hour bucket's sum by at most w·hour_kwh rather than w·per_hour·clamp_kwh."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clamp_kwh) and self.clamp_kwh > 0) or self.per_hour < 1:
            raise DPError("contribution bounds need --clamp-kwh > 0 and --per-hour >= 1")
        if self.hour_kwh is not None and not (math.isfinite(self.hour_kwh) and self.hour_kwh > 0):
            raise DPError("--hour-kwh must be > 0")

    @property
    def value_bound(self) -> float:
        """The most one meter adds to one group's sum in one clock hour."""
        return self.hour_kwh if self.hour_kwh is not None else self.per_hour * self.clamp_kwh


@dataclass(frozen=True)
class DPQuery:
    """What to aggregate: ``metric`` of kWh per group, groups ``by`` region (and hour or day) over the days
    ``start``..``end`` (UTC, inclusive), every region in ``regions`` (public: from the settings)."""

    metric: str
    by: tuple[str, ...]
    start: dt.date
    end: dt.date
    regions: tuple[str, ...]
    bounds: Bounds = Bounds()

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise DPError(f"--metric must be one of {', '.join(METRICS)}")
        if tuple(self.by) not in GROUPINGS:
            raise DPError("--by must be region, region,hour or region,day")
        if self.end < self.start:
            raise DPError(f"empty date range: {self.start} is after {self.end}")
        if (self.end - self.start).days >= 366:
            raise DPError("a DP query covers at most 366 days; split the range")
        if not self.regions:
            raise DPError("no regions to group by (METERSEAL_REGIONS)")

    @property
    def hours(self) -> int:
        return ((self.end - self.start).days + 1) * 24

    @property
    def bucket_hours(self) -> int:
        return GROUPINGS[tuple(self.by)] or self.hours

    @property
    def buckets(self) -> int:
        return self.hours // self.bucket_hours

    def describe(self) -> dict[str, Any]:
        return {"metric": self.metric, "by": ",".join(self.by), "from": self.start.isoformat(),
                "to": self.end.isoformat(), "regions": list(self.regions), **dataclasses.asdict(self.bounds)}


def _epoch(day: dt.date) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()


def group_keys(query: DPQuery) -> list[tuple[str, ...]]:
    """The public group keys, region-major: (region,) or (region, bucket start as ISO text)."""
    if query.by == ("region",):
        return [(r,) for r in query.regions]
    step = dt.timedelta(hours=query.bucket_hours)
    t0 = dt.datetime(query.start.year, query.start.month, query.start.day, tzinfo=dt.timezone.utc)
    fmt = "%Y-%m-%dT%H:00Z" if query.by[1] == "hour" else "%Y-%m-%d"
    stamps = [(t0 + step * b).strftime(fmt) for b in range(query.buckets)]
    return [(r, s) for r in query.regions for s in stamps]


def sensitivity(query: DPQuery) -> tuple[float, float]:
    """L2 sensitivities (sum in kWh, count in readings) of the group vector when one meter is added or removed."""
    root = math.sqrt(query.buckets)
    return query.bucket_hours * query.bounds.value_bound * root, query.bucket_hours * query.bounds.per_hour * root


@dataclass
class Columns:
    """Readings as arrays: meter (any hashable codes), epoch seconds, region name, kWh."""

    meter: np.ndarray
    epoch: np.ndarray
    region: np.ndarray
    kwh: np.ndarray
    readings: np.ndarray | None = None  # readings behind each row (hourly rollups); None: one each

    @classmethod
    def from_hours(cls, cells: Sequence[dict[str, Any]]) -> "Columns":
        """From hourly rollup cells (``meter_id``, ``start`` datetime, ``region``, ``kwh_sum``, ``readings``)."""
        return cls(np.asarray([c["meter_id"] for c in cells], dtype=object),
                   np.asarray([c["start"].timestamp() for c in cells], dtype=np.float64),
                   np.asarray([c["region"] for c in cells], dtype=object),
                   np.asarray([c["kwh_sum"] for c in cells], dtype=np.float64),
                   np.asarray([c["readings"] for c in cells], dtype=np.float64))

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]]) -> "Columns":
        """From opened readings (``meter_id``, ``ts`` ISO-8601, ``region``, ``kwh``)."""
        return cls(np.asarray([r["meter_id"] for r in records], dtype=object),
                   np.asarray([dt.datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp() for r in records],
                              dtype=np.float64),
                   np.asarray([r["region"] for r in records], dtype=object),
                   np.asarray([r["kwh"] for r in records], dtype=np.float64))


def bounded_aggregates(columns: Columns, query: DPQuery) -> tuple[np.ndarray, np.ndarray]:
    """The exact per-group sums and counts *after* the contribution bounds (clamp, at most ``per_hour``
    readings per meter and hour), in ``group_keys`` order. This is the value the noisy answer estimates;
    it is never released."""
    n_groups = len(query.regions) * query.buckets
    sums, counts = np.zeros(n_groups), np.zeros(n_groups)
    if len(columns.kwh) == 0:
        return sums, counts
    t0 = _epoch(query.start)
    hour = np.floor((columns.epoch - t0) / 3600.0).astype(np.int64)
    region_index = {r: i for i, r in enumerate(query.regions)}
    reg = np.asarray([region_index.get(r, -1) for r in columns.region], dtype=np.int64)
    keep = (hour >= 0) & (hour < query.hours) & (reg >= 0)
    codes: dict[Any, int] = {}
    meter = np.fromiter((codes.setdefault(m, len(codes)) for m in columns.meter[keep]), dtype=np.int64,
                        count=int(keep.sum()))
    hour, reg, epoch, kwh = hour[keep], reg[keep], columns.epoch[keep], columns.kwh[keep]
    if query.bounds.hour_kwh is not None:  # each meter's hourly sum clamped, its readings counted up to per_hour
        n = np.ones(len(kwh)) if columns.readings is None else columns.readings[keep]
        cell = (meter * len(query.regions) + reg) * query.hours + hour
        uniq, inverse = np.unique(cell, return_inverse=True)
        hour_sum, hour_n = np.zeros(len(uniq)), np.zeros(len(uniq))
        np.add.at(hour_sum, inverse, np.nan_to_num(kwh, nan=0.0, posinf=query.bounds.hour_kwh, neginf=0.0))
        np.add.at(hour_n, inverse, n)
        cell_hour, cell_reg = uniq % query.hours, (uniq // query.hours) % len(query.regions)
        group = cell_reg * query.buckets + cell_hour // query.bucket_hours
        np.add.at(sums, group, np.clip(hour_sum, 0.0, query.bounds.hour_kwh))
        np.add.at(counts, group, np.minimum(hour_n, query.bounds.per_hour))
        return sums, counts
    # rank of each reading within its (meter, hour), earliest first; keep the first per_hour
    order = np.lexsort((epoch, hour, meter))
    cell = meter[order] * query.hours + hour[order]
    starts = np.r_[0, np.flatnonzero(np.diff(cell)) + 1]
    rank = np.arange(len(cell)) - np.repeat(starts, np.diff(np.r_[starts, len(cell)]))
    chosen = order[rank < query.bounds.per_hour]
    value = np.clip(np.nan_to_num(kwh[chosen], nan=0.0, posinf=query.bounds.clamp_kwh, neginf=0.0),
                    0.0, query.bounds.clamp_kwh)
    group = reg[chosen] * query.buckets + hour[chosen] // query.bucket_hours
    np.add.at(sums, group, value)
    np.add.at(counts, group, 1.0)
    return sums, counts


@dataclass(frozen=True)
class Plan:
    """The OpenDP measurement for a query at a given rho, and the noise scales it implies."""

    query: DPQuery
    rho: float
    unit_scale: float  # noise scale on the sensitivity-normalised vector
    d_in: float  # the normalised vector's L2 distance between neighbours
    sum_scale: float  # kWh
    count_scale: float  # readings
    measurement: Any

    @property
    def cost(self) -> float:
        """rho this release costs, from OpenDP's privacy map (>= the asked rho by at most float rounding)."""
        return float(self.measurement.map(self.d_in))


def plan(query: DPQuery, rho: float) -> Plan:
    """The Gaussian measurement with the smallest noise that OpenDP's map says costs at most ``rho``."""
    if not (math.isfinite(rho) and rho > 0):
        raise DPError("--rho must be a positive number")
    if rho < MIN_RHO:
        raise DPError(f"--rho {rho:g} is below {MIN_RHO:g}: the noise would swamp any answer")
    dp = opendp()
    d_in = math.sqrt(2.0) if query.metric == "mean" else 1.0
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l2_distance(T=float)
    try:
        scale = dp.binary_search_param(lambda s: dp.m.make_gaussian(*space, scale=s), d_in=d_in, d_out=rho)
        measurement = dp.m.make_gaussian(*space, scale=scale)
    except dp.OpenDPException as exc:  # a rho OpenDP cannot calibrate: a refusal, not a crash
        raise DPError(f"no Gaussian noise scale for rho {rho:g}: {str(exc).strip()[:120]}") from None
    s_sum, s_count = sensitivity(query)
    return Plan(query, rho, scale, d_in, scale * s_sum, scale * s_count, measurement)


def _half_width(scale: float, alpha: float) -> float:
    return float(opendp().gaussian_scale_to_accuracy(scale, alpha))


def release(p: Plan, sums: np.ndarray, counts: np.ndarray, *, invoke=None) -> list[dict[str, Any]]:
    """Run the measurement on the bounded aggregates and return one row per public group key:
    the keys, ``value``, ``noise_scale`` and the 95 % interval ``low``/``high``.

    ``invoke`` runs the measurement (default: call it); the engine passes an OpenDP privacy filter's
    queryable instead, so OpenDP itself also refuses a release past the remaining budget."""
    invoke = invoke or (lambda m, x: m(x))
    s_sum, s_count = sensitivity(p.query)
    if p.query.metric == "sum":
        vector = (sums / s_sum).tolist()
    elif p.query.metric == "count":
        vector = (counts / s_count).tolist()
    else:
        vector = (sums / s_sum).tolist() + (counts / s_count).tolist()
    noisy = np.asarray(invoke(p.measurement, vector), dtype=np.float64)
    keys = group_keys(p.query)
    names = list(p.query.by)
    rows = []
    if p.query.metric in ("sum", "count"):
        scale = p.sum_scale if p.query.metric == "sum" else p.count_scale
        values = noisy * (s_sum if p.query.metric == "sum" else s_count)
        half = _half_width(scale, ALPHA)
        for key, value in zip(keys, values):
            rows.append({**dict(zip(names, key)), "value": float(value), "noise_scale": scale,
                         "low": float(value - half), "high": float(value + half)})
        return rows
    n = len(keys)
    noisy_sum, noisy_count = noisy[:n] * s_sum, noisy[n:] * s_count
    a, b = _half_width(p.sum_scale, ALPHA / 2), _half_width(p.count_scale, ALPHA / 2)
    for key, s, c in zip(keys, noisy_sum, noisy_count):
        # post-processing: a mean of clamped readings lies in [0, clamp_kwh]
        top = p.query.bounds.clamp_kwh if p.query.bounds.hour_kwh is None else p.query.bounds.hour_kwh
        value = float(min(max(s / c, 0.0), top)) if c > 0 else None
        lo_c, hi_c = c - b, c + b
        if lo_c <= 0:
            low, high = 0.0, top  # the mean of clamped readings (hours) is always in [0, clamp]
        else:
            low, high = max(0.0, (s - a) / hi_c), min(top, (s + a) / lo_c)
        rows.append({**dict(zip(names, key)), "value": value, "noise_scale": [p.sum_scale, p.count_scale],
                     "low": float(low), "high": float(high)})
    return rows


def true_values(query: DPQuery, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """What each released value estimates (for tests and the benchmark; never released)."""
    if query.metric == "sum":
        return sums
    if query.metric == "count":
        return counts
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def approx_dp(rho: float, delta: float = 1e-6) -> float:
    """The epsilon of (epsilon, delta)-DP implied by rho-zCDP (OpenDP's ``make_zCDP_to_approxDP`` on a
    Gaussian release of that rho)."""
    if rho <= 0:
        return 0.0
    dp = opendp()
    space = dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float)
    gauss = dp.m.make_gaussian(*space, scale=1.0 / math.sqrt(2 * rho))
    return float(dp.c.make_zCDP_to_approxDP(gauss).map(1.0).epsilon(delta))
