"""Encrypted forecasts: a linear forecaster over ``fl.task``'s features, trained by the same federated
rounds, evaluated by the utility on a CKKS ciphertext (TenSEAL) that only the customer can decrypt.

**Parties and keys.**

- *Customer's gateway* (``Gateway``): makes the CKKS key pair, computes its recent window's features
  (``fl.task.windows``: the last 24 intervals and the last one's 12 parts, each scaled by the window's
  mean, plus calendar), encrypts the feature vector, and keeps the scale (the window's mean) to itself.
  It sends the public context (parameters, public key, Galois keys for the slot sum — no secret key) once,
  then one ciphertext per forecast.
- *Utility* (``evaluate``): holds the model in the clear and only public key material; computes
  ``w . x + b`` on the ciphertext (plaintext-ciphertext products and a rotation sum) and returns a
  ciphertext. It learns nothing about the window or the forecast.
- The gateway decrypts and multiplies by its scale: the forecast in kWh.

**Why linear.** CKKS evaluates additions and multiplications only; a ReLU MLP (``fl.task.Forecaster``) is
not a polynomial. A linear model costs one multiplicative level, so poly modulus 8192 with a 60+40+60-bit
coefficient modulus (160 <= 218 bits: 128-bit security) suffices; a square-activation MLP needs three
levels (mm, square, dot), which at 128-bit security needs poly modulus 16384. Its accuracy against the
federated MLP and persistence is measured in ``meterseal bench privacy``.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from fl import task

POLY_MODULUS = 8192
COEFF_BITS = (60, 40, 60)
SCALE_BITS = 40


class LinearForecaster(nn.Module):
    """next interval / window mean = w . features + b (the HE-friendly model)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(task.WIDTH, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def _ts():
    import tenseal as ts

    return ts


def linear_parts(weights: Sequence[np.ndarray]) -> tuple[list[float], float]:
    """(w, b) of a ``LinearForecaster``'s weights as plain floats."""
    w, b = weights
    return np.asarray(w, dtype=np.float64).reshape(-1).tolist(), float(np.asarray(b).reshape(-1)[0])


def plain_forecast(weights: Sequence[np.ndarray], x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The same model in plaintext (float64), in kWh."""
    w, b = linear_parts(weights)
    return (np.asarray(x, dtype=np.float64) @ np.asarray(w) + b) * np.asarray(scale, dtype=np.float64)


@dataclass
class Gateway:
    """The customer's side: the CKKS secret key never leaves it."""

    context: Any = field(repr=False)
    public_context: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> "Gateway":
        ts = _ts()
        context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=POLY_MODULUS, coeff_mod_bit_sizes=list(COEFF_BITS))
        context.global_scale = 2 ** SCALE_BITS
        context.generate_galois_keys()
        public = context.copy()
        public.make_context_public()
        return cls(context, public.serialize(save_galois_keys=True))

    def encrypt(self, features: np.ndarray) -> bytes:
        """One window's features (already scaled by the window mean, which stays here) as a CKKS ciphertext."""
        return _ts().ckks_vector(self.context, np.asarray(features, dtype=np.float64).tolist()).serialize()

    def decrypt(self, result: bytes, scale: float) -> float:
        """The forecast in kWh: the decrypted scaled forecast times this window's mean."""
        return float(_ts().ckks_vector_from(self.context, result).decrypt()[0]) * float(scale)


class Utility:
    """The utility's side for one customer: the customer's public context, loaded once (parameters, public
    key, Galois keys; no secret key)."""

    def __init__(self, public_context: bytes) -> None:
        self.context = _ts().context_from(public_context)
        if self.context.has_secret_key():
            raise ValueError("the utility must not hold the customer's secret key: pass the public context")

    def evaluate(self, ciphertext: bytes, weights: Sequence[np.ndarray]) -> bytes:
        """``w . x + b`` on the encrypted window."""
        w, b = linear_parts(weights)
        return (_ts().ckks_vector_from(self.context, ciphertext).dot(w) + b).serialize()


def evaluate(public_context: bytes, ciphertext: bytes, weights: Sequence[np.ndarray]) -> bytes:
    """The utility's side in one call (loads the public context each time; ``Utility`` keeps it)."""
    return Utility(public_context).evaluate(ciphertext, weights)


def round_trip(gateway: Gateway, utility: Utility, weights: Sequence[np.ndarray], features: np.ndarray,
               scale: float) -> dict[str, Any]:
    """One encrypted forecast: encrypt (gateway) -> evaluate (utility) -> decrypt (gateway), with timings and
    sizes, beside the plaintext forecast of the same model."""
    t0 = time.perf_counter()
    ct = gateway.encrypt(features)
    t1 = time.perf_counter()
    result = utility.evaluate(ct, weights)
    t2 = time.perf_counter()
    kwh = gateway.decrypt(result, scale)
    t3 = time.perf_counter()
    plain = float(plain_forecast(weights, features[None, :], np.asarray([scale]))[0])
    return {"encrypted_kwh": kwh, "plaintext_kwh": plain, "abs_diff_kwh": abs(kwh - plain),
            "encrypt_ms": (t1 - t0) * 1e3, "evaluate_ms": (t2 - t1) * 1e3, "decrypt_ms": (t3 - t2) * 1e3,
            "total_ms": (t3 - t0) * 1e3, "query_bytes": len(ct), "result_bytes": len(result),
            "public_context_bytes": len(gateway.public_context)}


def train_federated(datas: list, *, rounds: int = 5, epochs: int = 2, seed: int = 0,
                    baselines: bool = False) -> dict[str, Any]:
    """The linear model trained by the same in-process federated rounds as ``meterseal fl run``
    (Flower's FedAvg over one client per region, ``fl.rounds.run``); returns that report (weights in
    ``model_weights``)."""
    from fl import rounds as fl_rounds

    return fl_rounds.run(datas, rounds=rounds, epochs=epochs, seed=seed, baselines=baselines,
                         model_fn=LinearForecaster, lr=1e-2)


def agreement(gateway: Gateway, weights: Sequence[np.ndarray], x: np.ndarray, scale: np.ndarray,
              *, limit: int | None = None) -> dict[str, Any]:
    """Encrypted vs plaintext forecasts of the same model on held-out windows: max |difference| (kWh),
    latency per forecast, and sizes."""
    n = len(x) if limit is None else min(limit, len(x))
    t0 = time.perf_counter()
    utility = Utility(gateway.public_context)  # once per customer: the context arrives once
    load_ms = (time.perf_counter() - t0) * 1e3
    diffs, times, trips = [], [], []
    for i in range(n):
        trip = round_trip(gateway, utility, weights, x[i], float(scale[i]))
        diffs.append(trip["abs_diff_kwh"])
        times.append(trip["total_ms"])
        trips.append(trip)
    return {"windows": n, "max_abs_diff_kwh": max(diffs) if diffs else float("nan"),
            "mean_abs_diff_kwh": float(np.mean(diffs)) if diffs else float("nan"),
            "ms_per_forecast_p50": float(np.median(times)) if times else float("nan"),
            "evaluate_ms_p50": float(np.median([t["evaluate_ms"] for t in trips])) if trips else float("nan"),
            "query_bytes": trips[0]["query_bytes"] if trips else 0,
            "result_bytes": trips[0]["result_bytes"] if trips else 0,
            "public_context_bytes": len(gateway.public_context), "utility_context_load_ms": load_ms}


def forecast_from_store(store_dir: Any, owner: Any, *, meter: str, regions: Sequence[str], rounds: int = 3,
                        step_s: float = 3600.0) -> dict[str, Any]:
    """``meterseal forecast --encrypted --meter ID``: train the linear model by federated rounds over the
    store's regions (each region's client opens its own readings, ``owner`` = the data owner's keys, as
    ``meterseal fl run`` does), then one encrypted round trip for the meter's most recent window."""
    from fl.data import region_data, region_readings
    from streams.store.query import Reader

    from ..exceptions import MeterSealError

    reader = Reader(store_dir, owner)
    readings = {region: region_readings(reader, region) for region in regions}
    mine = sorted(((r["ts"], r) for rs in readings.values() for r in rs if r["meter_id"] == meter), key=lambda p: p[0])
    if not mine:
        raise MeterSealError(f"no readings of meter {meter!r} in the store")
    series = [(dt.datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp(), r["kwh"])
              for _, r in mine]
    x, y, scale = task.windows(series, step_s=step_s)
    if not len(y):
        raise MeterSealError(f"meter {meter!r} has fewer than {task.LOOKBACK + 1} consecutive intervals: no window")
    datas = [region_data(rs, region, step_s=step_s) for region, rs in readings.items() if rs]
    report = train_federated(datas, rounds=rounds)
    weights = report["model_weights"]
    gateway = Gateway.generate()
    trip = round_trip(gateway, Utility(gateway.public_context), weights, x[-1], float(scale[-1]))
    return {"meter": meter, "region": mine[-1][1]["region"], "window_end": mine[-1][0],
            "actual_kwh": float(y[-1] * scale[-1]), **trip, "target_abs_diff_kwh": 1e-3,
            "model": "linear over fl.task features (federated, FedAvg)", "rounds": rounds,
            "held_out_mae_kwh": report["rounds"][-1]["mae"],
            "parties": {"gateway": "CKKS secret key; encrypts the window, keeps its mean; decrypts",
                        "utility": "model weights + public context only; evaluates w.x+b on the ciphertext"}}
