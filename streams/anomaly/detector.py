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
from typing import NamedTuple

import numpy as np
from river import anomaly, stats

from streams.anomaly.features import Profile, describe

KINDS = ("spike", "theft", "flatline", "rollback", "negative")
MODEL_INPUTS = ("z_hour", "z_level", "step", "low_run")
_SCALE = {"z_hour": 4.0, "z_level": 4.0, "step": 3.0, "low_run": 8.0}


class Finding(NamedTuple):
    kind: str
    score: float
    severity: str  # info | warning | critical
    reason: str
    new: bool = True  # False: the meter is still in an anomaly already alerted (flagged, not re-published)


class Verdict(NamedTuple):
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
        self._cache: dict = {}  # numpy arrays of the model's trees (score_learn_many)

    def observe(self, profile: Profile, *, epoch: float, kwh: float, register_kwh: float) -> Verdict:
        """Score a reading, update the model and the meter's profile, return what was found."""
        return self.observe_many([(profile, epoch, kwh, register_kwh)])[0]

    def observe_many(self, readings: list[tuple[Profile, float, float, float]]) -> list[Verdict]:
        """``observe`` for ``(profile, epoch, kwh, register_kwh)`` readings in stream order, with the model's
        work done once for all of them (``score_learn_many``): the same verdicts, scores and state as
        observing them one by one. First each reading's features and rules, in order (a meter's next reading
        is described against its profile after the last one); then the model scores and learns them all;
        then, in order again, the adaptive threshold decides and findings are marked new or ongoing."""
        pending: list[tuple[int, dict[str, float], list[Finding], bool, Profile, float, bool]] = []
        verdicts: list[Verdict | None] = [None] * len(readings)
        rows = []
        tanh, flatline_run, min_history = math.tanh, self.flatline_run, self.min_history
        s_hour, s_level, s_step, s_low = (_SCALE[k] for k in MODEL_INPUTS)
        for i, (profile, epoch, kwh, register_kwh) in enumerate(readings):
            n = profile.n
            if n and epoch <= profile.last_ts:
                verdicts[i] = Verdict({}, [], 0.0)  # redelivered or late: judged when it first arrived
                continue
            x, lx, hour = describe(profile, epoch, kwh, register_kwh)
            if kwh < 0 or (n and register_kwh < profile.last_register) or x["repeat_run"] >= flatline_run:
                found = self.rules(profile, x, kwh=kwh, register_kwh=register_kwh)
                if any(f.severity == "critical" for f in found):
                    # a hard fault is not learned as normal behaviour, but it is seen: a redelivery is not re-judged
                    pending.append((i, x, found, True, profile, epoch, False))
                    profile.last_ts = epoch
                    continue
            else:
                found = []  # (what ``rules`` finds for a reading none of them applies to)
            pending.append((i, x, found, False, profile, epoch, n >= min_history))
            # squash(x), inlined: the model's inputs in [0, 1]
            rows.append((0.5 + 0.5 * tanh(x["z_hour"] / s_hour), 0.5 + 0.5 * tanh(x["z_level"] / s_level),
                         0.5 + 0.5 * tanh(x["step"] / s_step), 0.5 + 0.5 * tanh(x["low_run"] / s_low)))
            profile._learn(lx, hour, epoch, kwh, register_kwh)
        scores = iter(score_learn_many(self._model, rows, MODEL_INPUTS, self._cache))
        threshold_of, warm = self._threshold, self._seen >= self.warmup
        for i, x, found, critical, profile, epoch, seasoned in pending:
            if critical:
                verdicts[i] = Verdict(x, self._mark_new(profile, epoch, found), 0.0)
                continue
            score = next(scores)
            if not warm:
                warm = self._seen >= self.warmup
            if warm and seasoned and not found:
                threshold = threshold_of.get()
                if threshold is not None and score > threshold:
                    kind = "spike" if x["z_hour"] > 0 else "theft"
                    found.append(Finding(kind, score, "warning",
                                         f"{'above' if kind == 'spike' else 'below'} this meter's usual for the hour "
                                         f"({x['z_hour']:+.1f} sd), model score {score:.2f} > adaptive threshold "
                                         f"{threshold:.2f}"))
            threshold_of.update(score)
            self._seen += 1
            verdicts[i] = Verdict(x, self._mark_new(profile, epoch, found) if found else found, score)
        return verdicts

    def __getstate__(self) -> dict:
        sync_trees(self._cache)  # the masses live in the arrays between pivots: River's nodes get them first
        return {k: v for k, v in self.__dict__.items() if k != "_cache"}  # the arrays are rebuilt from the trees

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._cache = {}

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


# --- River's Half-Space Trees, many readings at a time -----------------------------------------------


def score_learn_many(model: anomaly.HalfSpaceTrees, rows: list[list[float]], names: tuple[str, ...],
                     cache: dict) -> list[float]:
    """``[model.score_one(x); model.learn_one(x)]`` for each row (``x = dict(zip(names, row))``, features in
    [0, 1], none missing), with one vectorised walk of the trees per run of rows instead of two Python walks
    per row per tree. Exact: a tree's score reads only its reference masses (``r_mass``), which change only
    when the window pivots, so the rows are taken in runs that end at a pivot; learning only counts visits
    (``l_mass``). ``cache`` keeps the trees as arrays, masses included: between calls the arrays hold the
    masses and River's node objects are stale until ``sync_trees`` writes them back (``Detector`` does before
    it is pickled); the pivot and its counter are River's. A test checks scores and masses against
    ``score_one``/``learn_one``."""
    scores: list[float] = []
    i = 0
    if not model.trees:
        cache.pop("trees", None)
    while i < len(rows) and not model.trees:  # River builds the trees on the first reading it learns
        x = dict(zip(names, rows[i]))
        scores.append(model.score_one(x))
        model.learn_one(x)
        i += 1
    if i == len(rows):
        return scores
    trees = cache.get("trees")
    if trees is None or trees.model is not model:
        trees = cache["trees"] = _TreeArrays(model, names)
    X = np.asarray(rows[i:] if i else rows, dtype=np.float64)
    start, size, max_score, limit = 0, len(trees.l_mass), model._max_score, 0.1 * model.window_size
    while start < len(X):
        stop = min(len(X), start + model.window_size - model.counter)
        paths = trees.paths(X[start:stop])
        if model._first_window:
            scores.extend([0] * (stop - start))  # as score_one: nothing to compare with before the first pivot
        else:
            scores.extend((1 - trees.score(paths, limit) / max_score).tolist())
        trees.l_mass += np.bincount(paths.ravel(), minlength=size)  # River's _walk_learn, counted
        trees.synced = False
        model.counter += stop - start
        if model.counter == model.window_size:  # River's pivot (HalfSpaceTrees.learn_one), on the arrays
            trees.r_mass, trees.l_mass = trees.l_mass, np.zeros(size, np.int64)
            model._first_window = False
            model.counter = 0
        start = stop
    return scores


def sync_trees(cache: dict) -> None:
    """Write the masses ``score_learn_many`` keeps in ``cache`` back into River's tree nodes (then the model
    is River's own again: it pickles, and ``score_one``/``learn_one`` continue from it)."""
    trees = cache.get("trees")
    if trees is not None and not trees.synced:
        for node, l_mass, r_mass in zip(trees.nodes, trees.l_mass.tolist(), trees.r_mass.tolist()):
            node.l_mass, node.r_mass = l_mass, r_mass
        trees.synced = True


class _TreeArrays:
    """A River HST's trees as flat arrays over all trees' nodes (tree t's node k is ``t * size + k``): split
    feature, threshold, children (``child[2 * node + goes_right]``) and both masses."""

    def __init__(self, model: anomaly.HalfSpaceTrees, names: tuple[str, ...]) -> None:
        self.model, self.height = model, model.height
        self.nodes = [node for nodes in model._tree_nodes for node in nodes]  # River's depth-first node lists
        size, trees = len(model._tree_nodes[0]), len(model._tree_nodes)
        self.feature = np.zeros(len(self.nodes), np.intp)
        self.threshold = np.zeros(len(self.nodes))
        self.child = np.zeros(2 * len(self.nodes), np.intp)
        column = {name: j for j, name in enumerate(names)}
        where = {id(node): g for g, node in enumerate(self.nodes)}
        for g, node in enumerate(self.nodes):
            if hasattr(node, "feature"):  # a branch; leaves keep zeros and are never split
                self.feature[g], self.threshold[g] = column[node.feature], node.threshold
                self.child[2 * g], self.child[2 * g + 1] = where[id(node.children[0])], where[id(node.children[1])]
        self.roots = np.arange(trees) * size
        self.l_mass = np.array([node.l_mass for node in self.nodes], np.int64)
        self.r_mass = np.array([node.r_mass for node in self.nodes], np.int64)
        self.weights = (2 ** np.arange(self.height + 1, dtype=np.int64))[:, None, None]
        self.synced = True

    def paths(self, X: np.ndarray) -> np.ndarray:
        """The nodes each row visits in each tree, root to leaf: (height + 1, trees, rows)."""
        n = len(X)
        flat = np.ascontiguousarray(X).ravel()
        offset = np.arange(n) * X.shape[1]
        out = np.empty((self.height + 1, len(self.roots), n), np.intp)
        node = out[0]
        node[:] = self.roots[:, None]
        for d in range(self.height):
            right = flat[self.feature[node] + offset] >= self.threshold[node]
            node = out[d + 1]
            np.add(2 * out[d], right, out=node)
            node[:] = self.child[node]
        return out

    def score(self, paths: np.ndarray, limit: float) -> np.ndarray:
        """River's ``_walk_score`` summed over the trees, for every row (exact integers)."""
        r = self.r_mass[paths]  # (height + 1, trees, rows)
        # a walk stops after the first node whose mass is below the limit: later nodes add nothing
        reached = np.ones(r.shape, bool)
        np.logical_and.accumulate(r[:-1] >= limit, axis=0, out=reached[1:])
        r *= self.weights
        r *= reached
        return r.sum(axis=(0, 1))
