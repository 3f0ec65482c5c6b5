import math

from hypothesis import given, strategies as st

from streams.anomaly.features import FEATURES, Profile, features

T0 = 1_700_000_000.0  # 2023-11-14 22:13 UTC


def trained(n=96, kwh=0.5, step=900.0):
    p = Profile()
    for i in range(n):
        p.learn(epoch=T0 + step * i, kwh=kwh, register_kwh=100 + kwh * i)
    return p


def test_first_reading_has_neutral_finite_features():
    x = features(Profile(), epoch=T0, kwh=0.3, register_kwh=5.0)
    assert tuple(x) == FEATURES and all(math.isfinite(v) for v in x.values())
    assert x["z_hour"] == 0 and x["repeat_run"] == 1


def test_spike_and_collapse_point_opposite_ways():
    p = trained()
    up = features(p, epoch=T0 + 900 * 96, kwh=5.0, register_kwh=100 + 0.5 * 96 + 5)
    down = features(p, epoch=T0 + 900 * 96, kwh=0.02, register_kwh=100 + 0.5 * 96)
    assert up["z_hour"] > 5 and down["z_hour"] < -5 and down["low_run"] == 1 and up["low_run"] == 0


def test_register_gap_is_zero_when_consistent_and_negative_on_rollback():
    p = trained()
    nxt = p.last_register + 0.5
    assert abs(features(p, epoch=T0 + 900 * 96, kwh=0.5, register_kwh=nxt)["register_gap"]) < 1e-6
    assert features(p, epoch=T0 + 900 * 96, kwh=0.5, register_kwh=nxt - 20)["register_gap"] < -3


def test_repeat_run_counts_identical_values():
    p = trained(n=10)  # the same kwh every time
    assert features(p, epoch=T0 + 900 * 10, kwh=0.5, register_kwh=200)["repeat_run"] == 11
    assert features(p, epoch=T0 + 900 * 10, kwh=0.51, register_kwh=200)["repeat_run"] == 1


@given(st.lists(st.tuples(st.floats(0, 1e4), st.floats(0, 1e7)), max_size=40))
def test_pack_round_trips_and_features_stay_finite(readings):
    p = Profile()
    for i, (kwh, register) in enumerate(readings):
        x = features(p, epoch=T0 + 60 * i, kwh=kwh, register_kwh=register)
        assert all(math.isfinite(v) for v in x.values())
        p.learn(epoch=T0 + 60 * i, kwh=kwh, register_kwh=register)
    assert Profile.unpack(p.pack()) == p and len(p.pack()) == len(Profile().pack())


def test_pack_writes_the_fields_in_their_declared_order():
    import dataclasses

    from streams.anomaly.features import _PACK, _SCALARS

    p = Profile()
    for i in range(30):
        p.learn(epoch=T0 + 900 * i, kwh=0.1 * (i % 7), register_kwh=10.0 + i)
    names = [f.name for f in dataclasses.fields(Profile)]
    assert tuple(names[:len(_SCALARS)]) == _SCALARS and names[len(_SCALARS):] == ["hour_mu", "hour_n"]
    values = _PACK.unpack(p.pack())
    assert list(values) == [getattr(p, s) for s in _SCALARS] + p.hour_mu + p.hour_n
    q = Profile.unpack(p.pack())
    assert dataclasses.astuple(q) == dataclasses.astuple(p)
