"""Encrypted forecasts agree with the same model in plaintext (< 1e-3 kWh); the utility holds no secret key."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from fl.data import region_data
from streams.ingest import sources
from streams.privacy import he_forecast

REGIONS = ("north", "south", "east")


@pytest.fixture(scope="module")
def trained():
    readings = list(sources.simulate(meters=6, readings=6 * 96 * 4, regions=REGIONS, interval_min=15,
                                     end=dt.datetime(2025, 3, 4, 23, 45, tzinfo=dt.timezone.utc)))
    datas = [region_data([r for r in readings if r["region"] == g], g) for g in REGIONS]
    report = he_forecast.train_federated(datas, rounds=2, epochs=2)
    return datas, report["model_weights"], report


def test_federated_rounds_train_the_linear_model(trained):
    datas, weights, report = trained
    assert [w.shape for w in weights] == [(1, 40), (1,)]
    assert [r["round"] for r in report["rounds"]] == [1, 2] and report["rounds"][-1]["mae"] > 0


def test_encrypted_and_plaintext_forecasts_agree_on_held_out_windows(trained):
    datas, weights, _ = trained
    gateway = he_forecast.Gateway.generate()
    x, _, scale = datas[0].test
    result = he_forecast.agreement(gateway, weights, x, scale, limit=15)
    assert result["windows"] == 15 and result["max_abs_diff_kwh"] < 1e-3
    assert result["query_bytes"] > 0 and result["ms_per_forecast_p50"] > 0


def test_utility_gets_public_material_only(trained):
    import tenseal as ts

    datas, weights, _ = trained
    gateway = he_forecast.Gateway.generate()
    assert not ts.context_from(gateway.public_context).has_secret_key()
    x, _, scale = datas[1].test
    ct = gateway.encrypt(x[0])
    with pytest.raises(ValueError, match="must not hold"):
        he_forecast.evaluate(gateway.context.serialize(save_secret_key=True), ct, weights)
    with pytest.raises(ValueError, match="must not hold"):
        he_forecast.Utility(gateway.context.serialize(save_secret_key=True))
    trip = he_forecast.round_trip(gateway, he_forecast.Utility(gateway.public_context), weights, x[0], float(scale[0]))
    assert trip["abs_diff_kwh"] < 1e-3
    np.testing.assert_allclose(trip["plaintext_kwh"], he_forecast.plain_forecast(weights, x[:1], scale[:1])[0])


def test_square_activation_mlp_under_ckks_agrees_with_plaintext(trained):
    datas, _, _ = trained
    report = he_forecast.train_federated(datas, rounds=1, epochs=1, model="square")
    weights = report["model_weights"]
    assert [w.shape for w in weights] == [(8, 40), (8,), (1, 8), (1,)]
    x, _, scale = datas[2].test
    result = he_forecast.agreement(he_forecast.Gateway.generate("square"), weights, x, scale, limit=2)
    assert result["max_abs_diff_kwh"] < 1e-3
