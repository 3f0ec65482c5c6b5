"""Per-meter online features for anomaly detection. Pure: no Kafka, no disk.

A ``Profile`` is what the detector remembers about one meter: its last reading, a profile of
log-consumption per hour of day, a short-term level, the spread of its residuals, and how long the
current run of identical values and of unusually low values has lasted. ``features`` describes a
new reading *against* the profile (causally: only the past is used); ``Profile.learn`` then folds
the reading in. The profile packs into a fixed-size byte string, so the worker can keep it sealed
in a changelog-backed table.

>>> p = Profile()
>>> for i in range(48):
...     p.learn(epoch=1.7e9 + 900 * i, kwh=0.5, register_kwh=100 + 0.5 * i)
>>> round(features(p, epoch=1.7e9 + 900 * 48, kwh=5.0, register_kwh=124.0)["z_hour"], 1)
9.2
>>> Profile.unpack(p.pack()) == p
True
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

EPS_KWH = 1e-4  # 0.1 Wh: log(kwh + EPS) keeps zero readings finite
HOUR_ALPHA_MIN = 0.002  # the hour-of-day profile forgets slowly (about 500 readings of that hour)
LEVEL_ALPHA = 0.05  # the short-term level follows the last ~20 readings
SPREAD_ALPHA = 0.01
MIN_SD = 0.25  # floor of the residual spread (in log units) while a profile is young
LOW_Z = -2.0  # a reading this far below the hour profile extends the "low" run

FEATURES = ("z_hour", "z_level", "step", "low_run", "repeat_run", "register_gap", "hour_sin", "hour_cos", "weekend")

_SCALARS = ("n", "last_ts", "last_kwh", "last_register", "repeat_run", "low_run", "level", "spread", "alert_kind",
            "alert_ts")  # Profile's scalar fields, in their declared order (pack/unpack rely on it; a test checks)
_PACK = struct.Struct(f"<{len(_SCALARS) + 48}d")


def _log(kwh: float) -> float:
    return math.log(max(kwh, 0.0) + EPS_KWH)


def _hour(epoch: float) -> tuple[int, int]:
    """UTC hour of day and weekday (Monday 0) of an epoch time; 1970-01-01 was a Thursday (3)."""
    day, seconds = divmod(int(epoch // 1), 86400)
    return seconds // 3600, (day + 3) % 7


@dataclass
class Profile:
    """One meter's online state (see the module docstring)."""

    n: float = 0.0
    last_ts: float = float("nan")
    last_kwh: float = float("nan")
    last_register: float = float("nan")
    repeat_run: float = 0.0
    low_run: float = 0.0
    level: float = 0.0
    spread: float = 1.0  # EW variance of residuals against the hour profile, in log units
    alert_kind: float = -1.0  # the last alert published for this meter (index into anomaly.KINDS) and its time
    alert_ts: float = float("-inf")
    hour_mu: list[float] = field(default_factory=lambda: [0.0] * 24)
    hour_n: list[float] = field(default_factory=lambda: [0.0] * 24)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Profile) and self.pack() == other.pack()

    @property
    def sd(self) -> float:
        return max(math.sqrt(self.spread), MIN_SD)

    def expected(self, hour: int) -> float:
        """The log-consumption expected at this hour: the hour's mean once seen, else the level."""
        return self.hour_mu[hour] if self.hour_n[hour] else self.level

    def learn(self, *, epoch: float, kwh: float, register_kwh: float) -> None:
        """Fold a reading into the profile (call after ``features``)."""
        self._learn(_log(kwh), _hour(epoch)[0], epoch, kwh, register_kwh)

    def _learn(self, lx: float, hour: int, epoch: float, kwh: float, register_kwh: float) -> None:
        """``learn`` with the reading's log-consumption and hour already known (``describe`` gives them)."""
        if self.n:
            mu = self.hour_mu[hour] if self.hour_n[hour] else self.level
            resid = lx - mu
            spread = self.spread
            spread += SPREAD_ALPHA * (resid * resid - spread) if self.n > 1 else resid * resid - spread
            self.spread = spread
            self.repeat_run = self.repeat_run + 1 if kwh == self.last_kwh else 1
            sd = math.sqrt(spread)
            self.low_run = self.low_run + 1 if resid / (sd if sd > MIN_SD else MIN_SD) < LOW_Z else 0
            self.level += LEVEL_ALPHA * (lx - self.level)
        else:
            self.repeat_run, self.level = 1, lx
        hour_n = self.hour_n[hour] + 1
        self.hour_n[hour] = hour_n
        rate = 1 / hour_n
        self.hour_mu[hour] += (rate if rate > HOUR_ALPHA_MIN else HOUR_ALPHA_MIN) * (lx - self.hour_mu[hour])
        self.n += 1
        if not self.last_ts >= epoch:  # nan-safe: the first reading, or a later one
            self.last_ts, self.last_kwh, self.last_register = epoch, kwh, register_kwh

    def pack(self) -> bytes:
        return _PACK.pack(self.n, self.last_ts, self.last_kwh, self.last_register, self.repeat_run, self.low_run,
                          self.level, self.spread, self.alert_kind, self.alert_ts, *self.hour_mu, *self.hour_n)

    @classmethod
    def unpack(cls, blob: bytes) -> "Profile":
        values = _PACK.unpack(blob)
        k = len(_SCALARS)  # the fields in their declared order: _SCALARS, then the two hour lists
        return cls(*values[:k], list(values[k:k + 24]), list(values[k + 24:]))


def features(profile: Profile, *, epoch: float, kwh: float, register_kwh: float) -> dict[str, float]:
    """The reading described against the meter's past (``FEATURES``, all finite).

    - ``z_hour``: log-consumption minus the meter's usual for this hour, in residual spreads;
    - ``z_level``: the same against the short-term level; ``step``: log change from the last reading;
    - ``low_run``: readings in a row (this one included) far below the hour profile;
    - ``repeat_run``: readings in a row with exactly this value;
    - ``register_gap``: how far the register is from last register + kwh, in units of this reading
      (0 when consistent, very negative on a rollback);
    - ``hour_sin``/``hour_cos``/``weekend``: calendar.
    """
    return describe(profile, epoch, kwh, register_kwh)[0]


def describe(profile: Profile, epoch: float, kwh: float, register_kwh: float) -> tuple[dict[str, float], float, int]:
    """``features`` of a reading, with its log-consumption and UTC hour (what ``Profile._learn`` takes):
    the detector's hot path, one call per reading."""
    lx = math.log(kwh + EPS_KWH) if kwh > 0 else _LOG_EPS
    day, seconds = divmod(int(epoch // 1), 86400)
    hour = seconds // 3600
    if profile.n:
        sd = math.sqrt(profile.spread)
        if sd < MIN_SD:
            sd = MIN_SD
        level, last_kwh = profile.level, profile.last_kwh
        z_hour = (lx - (profile.hour_mu[hour] if profile.hour_n[hour] else level)) / sd
        z_level = (lx - level) / sd
        step = lx - (math.log(last_kwh + EPS_KWH) if last_kwh > 0 else _LOG_EPS)
        repeat = profile.repeat_run + 1 if kwh == last_kwh else 1.0
        low = profile.low_run + 1 if z_hour < LOW_Z else 0.0
        gap = register_kwh - (profile.last_register + kwh)
        register_gap = math.asinh(gap / max(abs(kwh), 1e-3))
    else:
        z_hour = z_level = step = low = register_gap = 0.0
        repeat = 1.0
    hour_sin, hour_cos = _CLOCK[hour]
    return ({"z_hour": z_hour, "z_level": z_level, "step": step, "low_run": low, "repeat_run": repeat,
             "register_gap": register_gap, "hour_sin": hour_sin, "hour_cos": hour_cos,
             "weekend": 1.0 if (day + 3) % 7 >= 5 else 0.0}, lx, hour)


_LOG_EPS = math.log(EPS_KWH)
_CLOCK = [(math.sin(2 * math.pi * h / 24), math.cos(2 * math.pi * h / 24)) for h in range(24)]
