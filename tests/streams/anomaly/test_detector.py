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


def test_score_learn_many_is_river_one_reading_at_a_time():
    """The vectorised walk gives River's own scores and leaves River's trees with River's masses, across
    window pivots and runs of any length."""
    import random

    from river import anomaly as river_anomaly

    from streams.anomaly.detector import MODEL_INPUTS, score_learn_many, sync_trees

    rng = random.Random(5)
    rows = [[rng.random() ** 3 for _ in MODEL_INPUTS] for _ in range(1400)]
    one = river_anomaly.HalfSpaceTrees(n_trees=5, height=6, window_size=100, seed=3)
    many = river_anomaly.HalfSpaceTrees(n_trees=5, height=6, window_size=100, seed=3)
    expected = []
    for row in rows:
        x = dict(zip(MODEL_INPUTS, row))
        expected.append(one.score_one(x))
        one.learn_one(x)
    got, cache, i = [], {}, 0
    for size in [1, 2, 57, 300, 1, 99, 500, 440]:
        got += score_learn_many(many, rows[i:i + size], MODEL_INPUTS, cache)
        i += size
    assert i == len(rows) and got == expected
    sync_trees(cache)
    assert [(n.l_mass, n.r_mass) for nodes in many._tree_nodes for n in nodes] == \
        [(n.l_mass, n.r_mass) for nodes in one._tree_nodes for n in nodes]
    for row in rows[:150]:  # synced, the model is River's own again: its methods go on from the same state
        x = dict(zip(MODEL_INPUTS, row))
        assert many.score_one(x) == one.score_one(x)
        many.learn_one(x)
        one.learn_one(x)


def test_observe_many_gives_the_verdicts_of_observing_one_by_one():
    import random

    from streams.anomaly.features import Profile

    rng = random.Random(2)
    readings, register = [], {m: 10.0 for m in range(6)}
    for i in range(3000):
        meter = rng.randrange(6)
        kwh = rng.choice([0.5, 0.5, 0.2, 3.0, 0.01]) * (50 if rng.random() < 0.01 else 1)
        register[meter] += kwh if rng.random() > 0.005 else -40
        readings.append((meter, 1.7e9 + 60 * i - (600 if rng.random() < 0.01 else 0), kwh, register[meter]))

    def run(chunk: int):
        d, profiles, out = Detector(seed=4, warmup=200, min_history=10, window=500), {}, []
        for start in range(0, len(readings), chunk):
            part = readings[start:start + chunk]
            out += d.observe_many([(profiles.setdefault(m, Profile()), e, k, r) for m, e, k, r in part])
        return [(v.score, [(f.kind, f.new, f.reason) for f in v.findings]) for v in out], profiles

    single, p1 = run(1)
    batched, p2 = run(500)
    assert batched == single and p1 == p2
    assert any(f for _, f in single)  # the stream does raise findings


def test_a_pickled_detector_continues_exactly_mid_window():
    """Between window pivots the masses live in arrays, not in River's nodes: pickling (what the worker saves)
    writes them back first, so a detector saved and loaded mid-window goes on with the same scores, and a
    pickle written by River's own nodes (an older worker's file) loads into the array path."""
    import pickle
    import random

    from streams.anomaly.features import Profile

    rng = random.Random(9)
    readings = [(rng.randrange(3), 1.7e9 + 60 * i, rng.choice([0.5, 0.2, 3.0, 0.01]), 10.0 + i) for i in range(1700)]

    def feed(d, profiles, part):
        return [v.score for v in d.observe_many([(profiles.setdefault(m, Profile()), e, k, r) for m, e, k, r in part])]

    straight, p1 = Detector(seed=4, warmup=100, window_size=200), {}
    saved, p2 = Detector(seed=4, warmup=100, window_size=200), {}
    expected = feed(straight, p1, readings)
    got = feed(saved, p2, readings[:730])  # 730: mid-window (the window pivots every 200 readings)
    saved = pickle.loads(pickle.dumps(saved))
    got += feed(saved, p2, readings[730:])
    assert got == expected and saved._seen == straight._seen
