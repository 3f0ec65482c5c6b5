import numpy as np

from fl import task

T0 = 1_700_000_000.0


def test_windows_skip_gaps_and_scale_by_the_window_mean():
    series = [(T0 + 3600 * i, 2.0) for i in range(30)] + [(T0 + 3600 * i, 2.0) for i in range(40, 70)]
    x, y, scale = task.windows(series, step_s=3600)
    assert len(y) == 2 * (30 - task.LOOKBACK)  # no window spans the 10-hour gap
    assert np.allclose(x[:, :task.LOOKBACK], 1.0) and np.allclose(y, 1.0) and np.allclose(scale, 2.0)


def test_windows_carry_the_last_interval_in_parts():
    # one-minute readings: 0.01 kWh a minute, except the last part (5 minutes) of hour 23, which uses 0.05
    hour0, part_min = 3600 * (T0 // 3600), 60 // task.RECENT
    series = [(hour0 + 60 * i, 0.05 if 24 * 60 - part_min <= i < 24 * 60 else 0.01) for i in range(25 * 60)]
    x, y, scale = task.windows(series, step_s=3600)
    assert x.shape == (1, task.WIDTH)
    parts = x[0, task.LOOKBACK:task.LOOKBACK + task.RECENT] * scale[0] / task.RECENT  # back to kWh
    assert np.allclose(parts, [0.01 * part_min] * (task.RECENT - 1) + [0.05 * part_min])
    assert np.isclose(x[0, task.LOOKBACK - 1] * scale[0], parts.sum())  # the last hour's total, as before
    assert np.isclose(y[0] * scale[0], 0.6)


def test_readings_coarser_than_the_parts_put_the_interval_in_the_part_of_their_time():
    hour0 = 3600 * (T0 // 3600)  # hourly readings stamped at the start of the hour: the first part
    x, _, scale = task.windows([(hour0 + 3600 * i, 2.0) for i in range(30)], step_s=3600)
    assert np.allclose(x[:, task.LOOKBACK:task.LOOKBACK + task.RECENT] * scale[:, None] / task.RECENT,
                       [2.0] + [0.0] * (task.RECENT - 1))


def test_resample_sums_readings_into_intervals():
    assert task.resample([(T0 + 60 * i, 0.5) for i in range(120)], 3600)[0][1] == sum(
        0.5 for i in range(120) if (T0 + 60 * i) // 3600 == T0 // 3600)


def test_metrics():
    a = np.array([1.0, 2.0, 3.0])
    assert task.metrics(a, a) == {"mae": 0.0, "rmse": 0.0, "r2": 1.0, "n": 3}
    m = task.metrics(a, np.array([2.0, 2.0, 2.0]))
    assert abs(m["mae"] - 2 / 3) < 1e-9 and m["r2"] == 0.0


def test_training_lowers_the_loss_and_fedprox_stays_closer_to_the_start():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, task.WIDTH)).astype(np.float32)
    y = (x[:, task.LOOKBACK - 1] * 0.5 + 1).astype(np.float32)
    plain, prox = task.Forecaster(), task.Forecaster()
    task.set_weights(prox, task.get_weights(plain))
    start = np.concatenate([w.ravel() for w in task.get_weights(plain)])
    first = task.train(plain, x, y, epochs=1)
    assert task.train(plain, x, y, epochs=5) < first
    task.train(prox, x, y, epochs=6, proximal_mu=10.0)
    moved = {name: np.linalg.norm(np.concatenate([w.ravel() for w in task.get_weights(m)]) - start)
             for name, m in (("plain", plain), ("prox", prox))}
    assert moved["prox"] < moved["plain"]


def test_bench_forecaster_reports_each_variant_against_persistence():
    from streams.bench.fl import bench_forecaster

    out = bench_forecaster(meters=2, days=8, epochs=1, seeds=2)
    assert [(r["interval_min"], r["lookback"], r["recent_parts"], r["loss"]) for r in out["variants"]] == [
        (60, 24, 0, "mse"), (60, 24, 0, "l1"), (60, 168, 0, "l1"), (60, 24, 4, "l1"), (60, 24, 12, "l1"), (240, 42, 0, "l1")]
    for r in out["variants"]:
        assert r["test_windows"] > 0 and r["mae_kwh"] > 0 and r["persistence_mae_kwh"] > 0
        assert (r["last_part_mae_kwh"] is None) == (r["recent_parts"] == 0)
        assert r["seed_range_pct"][0] <= r["better_than_persistence_pct"] + 0.1 <= r["seed_range_pct"][1] + 0.2
        # (the percentage comes from the unrounded MAEs)
        assert abs(r["better_than_persistence_pct"] - 100 * (1 - r["mae_kwh"] / r["persistence_mae_kwh"])) < 0.2
