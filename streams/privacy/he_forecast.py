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

**Models.** CKKS evaluates additions and multiplications only; a ReLU MLP (``fl.task.Forecaster``) is not a
polynomial. ``LinearForecaster`` costs one multiplicative level: poly modulus 8192 with a 60+40+60-bit
coefficient modulus (160 <= 218 bits: 128-bit security). ``SquareMLP`` (40 -> 8 -> x² -> 1) needs three
levels (mm, square, dot): poly modulus 16384, 60+40+40+40+60 bits (<= 438), and relinearisation keys. Both
are measured against the federated ReLU MLP and persistence in ``meterseal bench privacy`` (the square
MLP was no more accurate than the linear model there, at ~30x the latency: linear is the default).
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

SCALE_BITS = 40


class LinearForecaster(nn.Module):
    """next interval / window mean = w . features + b (the HE-friendly model)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(task.WIDTH, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class SquareMLP(nn.Module):
    """features -> ``hidden`` units -> x² -> 1: the smallest MLP CKKS can evaluate (a polynomial of degree 2)."""

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.hidden, self.out = nn.Linear(task.WIDTH, hidden), nn.Linear(hidden, 1)
        with torch.no_grad():  # start near a linear model: small hidden weights keep x² tame while training
            self.hidden.weight.mul_(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x) ** 2).squeeze(-1)


# CKKS parameters per model: poly modulus, coefficient modulus bits (<= 218 at 8192 and <= 438 at 16384 for
# 128-bit security, HomomorphicEncryption.org), levels used: linear 1 (dot); square MLP 3 (mm, square, dot)
PARAMS = {"linear": (8192, (60, 40, 60)), "square": (16384, (60, 40, 40, 40, 60))}


def kind_of(weights: Sequence[np.ndarray]) -> str:
    return "linear" if len(weights) == 2 else "square"


def _ts():
    import tenseal as ts

    return ts


def linear_parts(weights: Sequence[np.ndarray]) -> tuple[list[float], float]:
    """(w, b) of a ``LinearForecaster``'s weights as plain floats."""
    w, b = weights
    return np.asarray(w, dtype=np.float64).reshape(-1).tolist(), float(np.asarray(b).reshape(-1)[0])


def plain_forecast(weights: Sequence[np.ndarray], x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The same model in plaintext (float64), in kWh."""
    x = np.asarray(x, dtype=np.float64)
    if kind_of(weights) == "linear":
        w, b = linear_parts(weights)
        y = x @ np.asarray(w) + b
    else:
        w1, b1, w2, b2 = (np.asarray(a, dtype=np.float64) for a in weights)
        y = ((x @ w1.T + b1) ** 2) @ w2.reshape(-1) + b2.reshape(-1)[0]
    return y * np.asarray(scale, dtype=np.float64)


@dataclass
class Gateway:
    """The customer's side: the CKKS secret key never leaves it."""

    context: Any = field(repr=False)
    public_context: bytes = field(repr=False)

    @classmethod
    def generate(cls, model: str = "linear") -> "Gateway":
        ts = _ts()
        poly, bits = PARAMS[model]
        context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=poly, coeff_mod_bit_sizes=list(bits))
        context.global_scale = 2 ** SCALE_BITS
        context.generate_galois_keys()
        if model == "square":
            context.generate_relin_keys()
        public = context.copy()
        public.make_context_public()
        return cls(context, public.serialize(save_galois_keys=True, save_relin_keys=model == "square"))

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
        """``w . x + b`` (linear) or ``w2 . (W1 x + b1)² + b2`` (square MLP) on the encrypted window."""
        x = _ts().ckks_vector_from(self.context, ciphertext)
        if kind_of(weights) == "linear":
            w, b = linear_parts(weights)
            return (x.dot(w) + b).serialize()
        w1, b1, w2, b2 = (np.asarray(a, dtype=np.float64) for a in weights)
        hidden = (x.mm(w1.T.tolist()) + b1.tolist()).square()
        return (hidden.dot(w2.reshape(-1).tolist()) + float(b2.reshape(-1)[0])).serialize()


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


def train_federated(datas: list, *, rounds: int = 5, epochs: int = 2, seed: int = 0, baselines: bool = False,
                    model: str = "linear") -> dict[str, Any]:
    """The linear model trained by the same in-process federated rounds as ``meterseal fl run``
    (Flower's FedAvg over one client per region, ``fl.rounds.run``); returns that report (weights in
    ``model_weights``)."""
    from fl import rounds as fl_rounds

    return fl_rounds.run(datas, rounds=rounds, epochs=epochs, seed=seed, baselines=baselines,
                         model_fn=LinearForecaster if model == "linear" else SquareMLP,
                         lr=1e-2 if model == "linear" else 3e-3)


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
                        step_s: float = 3600.0, model: str = "linear") -> dict[str, Any]:
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
    report = train_federated(datas, rounds=rounds, model=model)
    weights = report["model_weights"]
    gateway = Gateway.generate(model)
    trip = round_trip(gateway, Utility(gateway.public_context), weights, x[-1], float(scale[-1]))
    return {"meter": meter, "region": mine[-1][1]["region"], "window_end": mine[-1][0],
            "actual_kwh": float(y[-1] * scale[-1]), **trip, "target_abs_diff_kwh": 1e-3,
            "model": f"{model} over fl.task features (federated, FedAvg)", "rounds": rounds,
            "held_out_mae_kwh": report["rounds"][-1]["mae"],
            "parties": {"gateway": "CKKS secret key; encrypts the window, keeps its mean; decrypts",
                        "utility": "model weights + public context only; evaluates the model on the ciphertext"}}
