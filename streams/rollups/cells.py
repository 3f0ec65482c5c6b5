"""The rollup arithmetic of one partition, pure: contributions in, emissions out, no I/O.

A ``PartitionRollup`` holds what one sealed-topic partition's rollups need between store writes:

- ``watermark``: every reading of the partition at a leaf index below it is counted, none above (the
  readings' ledger leaf index orders them, so "counted" is one number, and counting a leaf twice is impossible);
- open cells: per (meter, account, region, category) and hour (``hours``) or day (``days``), the readings,
  sum, min and max of kWh seen so far;
- ``closed_hour``/``closed_day``: buckets that start before these are closed (emitted). A reading for a
  closed bucket is *late*: it becomes a delta of its own, emitted with the next emission (readers add deltas up);
- ``pending``: emissions decided but perhaps not yet written (the state is saved first, then the rows are
  written: a crash between the two writes them again, under the same row ids).

A bucket closes once the partition's newest reading time has passed its end by ``grace_s`` (readings of
one meter arrive in time order, give or take the grace), or when nothing was added for ``idle_s`` of wall-clock
time (the end of a stream), or on ``close_all``.

>>> r = PartitionRollup(partition=0)
>>> r.add([Contribution(0, "m1", None, "north", "Domestic", 3600.0, 0.5),
...        Contribution(1, "m1", None, "north", "Domestic", 4500.0, 0.25)], now=0.0)
>>> r.watermark, len(r.hours)
(2, 1)
>>> e = r.close(now=0.0, grace_s=300, idle_s=60, force=True)
>>> [(c.period, c.start, c.agg.readings, c.agg.kwh_sum) for c in e.meters]
[('hour', 3600, 2, 0.75), ('day', 0, 2, 0.75)]
>>> [(c.hour, c.meters, c.agg.readings) for c in e.regions]
[(3600, 1, 2)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple

HOUR, DAY = 3600, 86_400


class Contribution(NamedTuple):
    """One stored reading, as the rollups count it: its leaf index and the plaintext fields they need."""

    leaf: int
    meter_id: str
    account_id: str | None
    region: str
    category: str
    epoch: float
    kwh: float


@dataclass
class Agg:
    """Readings, sum, min and max of kWh."""

    readings: int = 0
    kwh_sum: float = 0.0
    kwh_min: float = math.inf
    kwh_max: float = -math.inf

    def add(self, kwh: float) -> None:
        self.readings += 1
        self.kwh_sum += kwh
        self.kwh_min = min(self.kwh_min, kwh)
        self.kwh_max = max(self.kwh_max, kwh)

    def merge(self, other: "Agg") -> None:
        self.readings += other.readings
        self.kwh_sum += other.kwh_sum
        self.kwh_min = min(self.kwh_min, other.kwh_min)
        self.kwh_max = max(self.kwh_max, other.kwh_max)

    def as_list(self) -> list:
        return [self.readings, self.kwh_sum, self.kwh_min, self.kwh_max]


# (meter id, account id, region, category): what a per-meter rollup record is sealed for
Who = tuple[str, "str | None", str, str]


class MeterCell(NamedTuple):
    period: str  # "hour" | "day"
    start: int  # epoch seconds (UTC) of the bucket's start
    who: Who
    agg: Agg
    late: bool  # a delta for a bucket emitted before


class RegionCell(NamedTuple):
    hour: int
    region: str
    category: str
    meters: int  # meters counted here for the first time
    agg: Agg


@dataclass
class Emission:
    """Rows to write: per-meter cells (sealed by the caller) and region cells (clear). ``key`` names the emission
    (partition, watermark, number): every row id derives from it, so writing it twice writes nothing new."""

    key: str
    meters: list[MeterCell] = field(default_factory=list)
    regions: list[RegionCell] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.meters or self.regions)


@dataclass
class PartitionRollup:
    partition: int
    watermark: int = 0
    closed_hour: int = -(2**62)
    closed_day: int = -(2**62)
    max_ts: float = -math.inf
    last_added: float = 0.0  # wall clock of the last contribution (idle close)
    emissions: int = 0
    hours: dict[tuple[int, Who], Agg] = field(default_factory=dict)
    days: dict[tuple[int, Who], Agg] = field(default_factory=dict)
    late_hours: dict[tuple[int, Who], Agg] = field(default_factory=dict)
    late_days: dict[tuple[int, Who], Agg] = field(default_factory=dict)
    pending: list[Emission] = field(default_factory=list)

    def add(self, contributions: Iterable[Contribution], *, now: float) -> None:
        """Count contributions, in leaf order, from the watermark on, without a gap (``ValueError`` otherwise:
        the caller keeps what does not follow on). (The worker's store thread runs this for every reading: the
        aggregate update is written out inline.)"""
        hours, days, late_hours, late_days = self.hours, self.days, self.late_hours, self.late_days
        closed_hour, closed_day = self.closed_hour, self.closed_day
        watermark, max_ts, added = self.watermark, self.max_ts, False
        for leaf, meter_id, account_id, region, category, epoch, kwh in contributions:
            if leaf != watermark:
                self.watermark, self.max_ts = watermark, max_ts
                raise ValueError(f"leaf {leaf} does not follow the watermark {watermark}")
            who = (meter_id, account_id, region, category)
            hour = int(epoch // HOUR) * HOUR
            day = hour - hour % DAY
            for cells, key in (((hours if hour >= closed_hour else late_hours), (hour, who)),
                               ((days if day >= closed_day else late_days), (day, who))):
                agg = cells.get(key)
                if agg is None:
                    cells[key] = Agg(1, kwh, kwh, kwh)
                else:
                    agg.readings += 1
                    agg.kwh_sum += kwh
                    if kwh < agg.kwh_min:
                        agg.kwh_min = kwh
                    if kwh > agg.kwh_max:
                        agg.kwh_max = kwh
            if epoch > max_ts:
                max_ts = epoch
            watermark += 1
            added = True
        self.watermark, self.max_ts = watermark, max_ts
        if added:
            self.last_added = now

    @property
    def open_cells(self) -> int:
        return len(self.hours) + len(self.days) + len(self.late_hours) + len(self.late_days)

    def lag_s(self) -> float:
        """How far the newest reading is ahead of the end of the last closed hour (0 with nothing open)."""
        if not self.hours:
            return 0.0
        return max(0.0, self.max_ts - min(start for start, _ in self.hours))

    def close(self, *, now: float, grace_s: float, idle_s: float, force: bool = False,
              known_members: Callable[[list[tuple[int, Who]]], set[tuple[int, Who]]] = lambda cells: set()) -> Emission:
        """Move what is due out of the open cells into a new pending ``Emission`` (empty if nothing is due).

        ``known_members(cells)`` says which of the late hourly (hour, who) cells were emitted before (their
        meter is already counted in its region cell): the caller looks them up in the store."""
        idle = bool(force or (self.open_cells and now - self.last_added >= idle_s))
        # a bucket closes once its end is at or before (newest reading time - grace): everything starting before
        # the cut's bucket; idle: everything up to the newest reading's bucket
        cut = math.inf if idle or self.max_ts == -math.inf else self.max_ts - grace_s
        if self.max_ts == -math.inf:  # nothing seen yet (an idle or forced close of an empty partition)
            hour_mark = day_mark = -(2**62)
        else:
            hour_mark = int(self.max_ts // HOUR) * HOUR + HOUR if idle else (-(2**62) if cut == math.inf else int(cut // HOUR) * HOUR)
            day_mark = int(self.max_ts // DAY) * DAY + DAY if idle else (-(2**62) if cut == math.inf else int(cut // DAY) * DAY)
        due_hours = sorted(k for k in self.hours if idle or k[0] < hour_mark)
        due_days = sorted(k for k in self.days if idle or k[0] < day_mark)
        self.closed_hour, self.closed_day = max(self.closed_hour, hour_mark), max(self.closed_day, day_mark)
        emission = Emission(f"p{self.partition}/{self.watermark}/{self.emissions}")
        if not (due_hours or due_days or self.late_hours or self.late_days):
            return emission
        regions: dict[tuple[int, str, str], list] = {}  # (hour, region, category) -> [meters, Agg]
        for key in due_hours:
            agg = self.hours.pop(key)
            hour, who = key
            emission.meters.append(MeterCell("hour", hour, who, agg, False))
            cell = regions.setdefault((hour, who[2], who[3]), [set(), Agg()])
            cell[0].add(who[0])
            cell[1].merge(agg)
        late = sorted(self.late_hours)
        known = known_members(late) if late else set()
        for key in late:
            agg = self.late_hours.pop(key)
            hour, who = key
            emission.meters.append(MeterCell("hour", hour, who, agg, True))
            cell = regions.setdefault((hour, who[2], who[3]), [set(), Agg()])
            if key not in known:
                cell[0].add(who[0])
            cell[1].merge(agg)
        for cells, keys, late_flag in ((self.days, due_days, False), (self.late_days, sorted(self.late_days), True)):
            for key in keys:
                emission.meters.append(MeterCell("day", key[0], key[1], cells.pop(key), late_flag))
        emission.regions = [RegionCell(h, r, c, len(m), agg) for (h, r, c), (m, agg) in sorted(regions.items())]
        self.emissions += 1
        self.pending.append(emission)
        return emission


def recompute(contributions: Iterable[Contribution]) -> tuple[dict, dict]:
    """Rollups straight from raw rows, for checking: ``(meter cells, region cells)`` with meter cells keyed by
    (period, start, who) -> [readings, sum, min, max] and region cells by (hour, region, category) -> [meters,
    readings, sum, min, max]."""
    meters: dict[tuple, Agg] = {}
    regions: dict[tuple, list] = {}
    for c in contributions:
        who = (c.meter_id, c.account_id, c.region, c.category)
        hour, day = int(c.epoch // HOUR) * HOUR, int(c.epoch // DAY) * DAY
        for key in (("hour", hour, who), ("day", day, who)):
            meters.setdefault(key, Agg()).add(c.kwh)
        cell = regions.setdefault((hour, c.region, c.category), [set(), Agg()])
        cell[0].add(c.meter_id)
        cell[1].add(c.kwh)
    return ({k: v.as_list() for k, v in meters.items()},
            {k: [len(m), *agg.as_list()] for k, (m, agg) in regions.items()})


def fold(emissions: Iterable[Emission]) -> tuple[dict, dict]:
    """What readers make of emitted rows (deltas added up), in ``recompute``'s shape."""
    meters: dict[tuple, Agg] = {}
    regions: dict[tuple, list] = {}
    for e in emissions:
        for m in e.meters:
            meters.setdefault((m.period, m.start, m.who), Agg()).merge(m.agg)
        for r in e.regions:
            cell = regions.setdefault((r.hour, r.region, r.category), [0, Agg()])
            cell[0] += r.meters
            cell[1].merge(r.agg)
    return ({k: v.as_list() for k, v in meters.items()},
            {k: [n, *agg.as_list()] for k, (n, agg) in regions.items()})
