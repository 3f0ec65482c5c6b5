import math
import random

from streams.anomaly.detector import Detector
from streams.anomaly.features import Profile

T0 = 1_700_000_000.0


def normal_day(rng, i, step):
    """A household-like profile: low at night, peaks morning and evening, lognormal noise."""
    h = ((T0 + step * i) % 86400) / 3600
    base = 0.2 + 0.5 * math.exp(-((h - 7.5) ** 2) / 3) + 0.9 * math.exp(-((h - 19.5) ** 2) / 5)
    return round(base * rng.lognormvariate(0, 0.15), 4)


def run(readings, detector=None, profile=None, step=900.0, start=0):
    """Feed (kwh, register) pairs; returns the verdicts."""
    d, p = detector or Detector(seed=1, warmup=200), profile or Profile()
    return [d.observe(p, epoch=T0 + step * (start + i), kwh=k, register_kwh=r) for i, (k, r) in enumerate(readings)], d, p


def normal(n, rng, register=1000.0, step=900.0, start=0):
    out = []
    for i in range(n):
        kwh = normal_day(rng, start + i, step)
        register += kwh
        out.append((kwh, round(register, 4)))
    return out


def warm(n, seed):
    """A detector and profile after ``n`` normal readings, and the last register."""
    history = normal(n, random.Random(seed))
    _, d, p = run(history)
    return d, p, history[-1][1]


def test_normal_data_raises_few_flags_and_no_hard_faults():
    rng = random.Random(1)
    verdicts, _, _ = run(normal(3000, rng))
    kinds = [f.kind for v in verdicts for f in v.findings]
    assert not {"rollback", "negative", "flatline"} & set(kinds)
    assert len(kinds) < 0.02 * 3000  # the adaptive quantile (0.995) keeps flags rare


def test_rollback_negative_and_flatline_rules_fire():
    d, p, reg = warm(300, seed=2)
    rollback = d.observe(p, epoch=T0 + 900 * 300, kwh=0.3, register_kwh=reg - 10)
    assert [(f.kind, f.severity) for f in rollback.findings] == [("rollback", "critical")]
    negative = d.observe(p, epoch=T0 + 900 * 301, kwh=-0.3, register_kwh=reg)
    assert "negative" in [f.kind for f in negative.findings]
    stuck = [d.observe(p, epoch=T0 + 900 * (302 + i), kwh=0.4321, register_kwh=reg + 0.4321 * (i + 1)) for i in range(25)]
    first = next(i for i, v in enumerate(stuck) if any(f.kind == "flatline" for f in v.findings))
    assert first == d.flatline_run - 1  # the 20th identical reading (the run counts the first one)
    # flagged on every later stuck reading (6), alerted (new) once an hour: the 20th and the 24th 15-min reading
    flags = [(i, f.new) for i, v in enumerate(stuck) for f in v.findings if f.kind == "flatline"]
    assert len(flags) == 6 and [i for i, new in flags if new] == [19, 23]


def test_model_flags_spike_and_theft_with_their_kind():
    d, p, reg = warm(2000, seed=3)
    spike = d.observe(p, epoch=T0 + 900 * 2000, kwh=8.0, register_kwh=reg + 8)
    assert [f.kind for f in spike.findings] == ["spike"]
    reg += 8
    theft = []
    for i in range(1, 9):
        reg += 0.01
        theft += d.observe(p, epoch=T0 + 900 * (2000 + i), kwh=0.01, register_kwh=reg).findings
    assert theft and {f.kind for f in theft} == {"theft"}


def test_redelivered_reading_is_not_judged_twice():
    d, p, reg = warm(300, seed=4)
    first = d.observe(p, epoch=T0 + 900 * 300, kwh=0.3, register_kwh=reg - 10)
    again = d.observe(p, epoch=T0 + 900 * 300, kwh=0.3, register_kwh=reg - 10)
    assert first.findings and not again.findings


def test_threshold_adapts_to_the_stream():
    """Scaling every reading by 100 changes the scale of nothing the model sees: same flags."""
    rng1, rng2 = random.Random(5), random.Random(5)
    a, _, _ = run(normal(1500, rng1))
    b, _, _ = run([(k * 100, r * 100) for k, r in normal(1500, rng2)])
    flags_a = [i for i, v in enumerate(a) if v.findings]
    flags_b = [i for i, v in enumerate(b) if v.findings]
    assert len(set(flags_a) ^ set(flags_b)) <= max(2, len(flags_a) // 5)
