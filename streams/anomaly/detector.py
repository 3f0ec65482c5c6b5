"""Online anomaly detection: hard-fault rules plus a River model with an adaptive threshold. Pure.

``Detector.observe(profile, ...)`` looks at one reading of one meter against that meter's
``Profile`` and returns the features and the findings:

- rules for hard faults, which need no learning: ``rollback`` (the register went backwards),
  ``negative`` (negative energy), ``flatline`` (the same value ``flatline_run`` readings in a row);
- a River anomaly model (``HalfSpaceTrees`` over squashed, meter-normalised features) whose score is
  compared with a running quantile of its own recent scores — the threshold adapts, no fixed cut.
  A high score above the meter's usual is a ``spike``, below it a ``theft`` (consumption collapsed).

A reading at or before the meter's last one (a redelivery) is not looked at again, so a restarted
worker does not re-alert old events.

>>> from streams.anomaly.features import Profile
>>> d, p = Detector(seed=1), Profile()
>>> [d.observe(p, epoch=1.7e9 + 60 * i, kwh=0.5, register_kwh=10 + 0.5 * i).findings for i in range(3)]
[[], [], []]
>>> d.observe(p, epoch=1.7e9 + 600, kwh=0.5, register_kwh=3.0).findings[0].kind
'rollback'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from river import anomaly, stats

from streams.anomaly.features import Profile, features

KINDS = ("spike", "theft", "flatline", "rollback", "negative")
MODEL_INPUTS = ("z_hour", "z_level", "step", "low_run")
_SCALE = {"z_hour": 4.0, "z_level": 4.0, "step": 3.0, "low_run": 8.0}


@dataclass(frozen=True)
class Finding:
    kind: str
    score: float
    severity: str  # info | warning | critical
    reason: str
    new: bool = True  # False: the meter is still in an anomaly already alerted (flagged, not re-published)


@dataclass(frozen=True)
class Verdict:
    features: dict[str, float]
    findings: list[Finding]
    score: float  # the model's score (0 for readings the model did not see)


def squash(x: dict[str, float]) -> dict[str, float]:
    """Meter-normalised features mapped into [0, 1], the range Half-Space Trees expects."""
    return {k: 0.5 + 0.5 * math.tanh(x[k] / _SCALE[k]) for k in MODEL_INPUTS}


class Detector:
    """Rules + an online model for one stream partition (per-meter memory lives in ``Profile``).

    Parameters are stored as passed: ``quantile`` of recent model scores above which a reading is
    flagged, ``window`` of scores the quantile covers, ``flatline_run`` identical readings that make a
    stuck meter, ``min_history`` readings of a meter before the model may flag it, ``warmup`` readings
    the model sees before it may flag anything, and River's HST settings.
    """

    def __init__(self, *, quantile: float = 0.995, window: int = 5000, flatline_run: int = 20, min_history: int = 48,
                 warmup: int = 1000, realert_s: float = 3600.0, n_trees: int = 15, height: int = 8,
                 window_size: int = 500, seed: int = 42) -> None:
        self.quantile, self.window, self.flatline_run, self.realert_s = quantile, window, flatline_run, realert_s
        self.min_history, self.warmup = min_history, warmup
        self.n_trees, self.height, self.window_size, self.seed = n_trees, height, window_size, seed
        self._model = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed)
        self._threshold = stats.RollingQuantile(q=quantile, window_size=window)
        self._seen = 0

    def observe(self, profile: Profile, *, epoch: float, kwh: float, register_kwh: float) -> Verdict:
        """Score a reading, update the model and the meter's profile, return what was found."""
        if profile.n and epoch <= profile.last_ts:
            return Verdict({}, [], 0.0)  # redelivered or late: judged when it first arrived
        x = features(profile, epoch=epoch, kwh=kwh, register_kwh=register_kwh)
        found = self.rules(profile, x, kwh=kwh, register_kwh=register_kwh)
        if any(f.severity == "critical" for f in found):
            # a hard fault is not learned as normal behaviour, but it is seen: a redelivery is not re-judged
            profile.last_ts = epoch
            return Verdict(x, self._mark_new(profile, epoch, found), 0.0)
        z = squash(x)
        score = self._model.score_one(z)
        threshold = self._threshold.get()
        if (self._seen >= self.warmup and profile.n >= self.min_history and threshold is not None
                and score > threshold and not found):
            kind = "spike" if x["z_hour"] > 0 else "theft"
            found.append(Finding(kind, score, "warning",
                                 f"{'above' if kind == 'spike' else 'below'} this meter's usual for the hour "
                                 f"({x['z_hour']:+.1f} sd), model score {score:.2f} > adaptive threshold {threshold:.2f}"))
        self._threshold.update(score)
        self._model.learn_one(z)
        self._seen += 1
        found = self._mark_new(profile, epoch, found)
        profile.learn(epoch=epoch, kwh=kwh, register_kwh=register_kwh)
        return Verdict(x, found, score)

    def _mark_new(self, profile: Profile, epoch: float, found: list[Finding]) -> list[Finding]:
        """A finding is new unless the meter's last alert was of the same kind less than ``realert_s`` ago:
        a stuck meter or a theft run is flagged on every reading but alerted once an hour."""
        out = []
        for f in found:
            code = KINDS.index(f.kind)
            new = f.severity == "critical" or code != profile.alert_kind or epoch - profile.alert_ts >= self.realert_s
            if new:
                profile.alert_kind, profile.alert_ts = code, epoch
            out.append(f if new else Finding(f.kind, f.score, f.severity, f.reason, new=False))
        return out

    def rules(self, profile: Profile, x: dict[str, float], *, kwh: float, register_kwh: float) -> list[Finding]:
        """Hard faults, decided without any model."""
        found = []
        if kwh < 0:
            found.append(Finding("negative", 1.0, "critical", "negative energy reported"))
        if profile.n and register_kwh < profile.last_register:
            found.append(Finding("rollback", 1.0, "critical", "register went backwards"))
        if x["repeat_run"] >= self.flatline_run:
            found.append(Finding("flatline", 1.0, "warning", f"the same value {int(x['repeat_run'])} readings in a row"))
        return found
