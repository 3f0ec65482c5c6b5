"""Federated rounds in one process, with Flower's own client and strategy classes.

Each region is a Flower ``NumPyClient`` holding only its region's windows; the server side is Flower's
``FedAvg`` or ``FedProx`` strategy, whose ``aggregate_fit`` combines the clients' weights by example
count. The same run measures the baselines on the same held-out windows: persistence (next = last),
local-only (each region trains alone), and centralized (one model on every region's data, the upper
bound a federation can approach).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch
from flwr.client import NumPyClient
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAvg, FedProx

from fl import task
from fl.data import RegionData


class RegionClient(NumPyClient):
    """One region: trains the global model on its own windows, evaluates it on its own held-out ones."""

    def __init__(self, data: RegionData, *, epochs: int = 2, lr: float = 3e-3, seed: int = 0,
                 model_fn: Callable[[], torch.nn.Module] = task.Forecaster) -> None:
        self.data, self.epochs, self.lr, self.seed = data, epochs, lr, seed
        self.model = model_fn()

    def get_parameters(self, config):
        return task.get_weights(self.model)

    def fit(self, parameters, config):
        task.set_weights(self.model, parameters)
        x, y, _ = self.data.train
        loss = task.train(self.model, x, y, epochs=self.epochs, lr=self.lr,
                          proximal_mu=float(config.get("proximal_mu", 0.0)), seed=self.seed + int(config.get("round", 0)))
        return task.get_weights(self.model), len(y), {"train_loss": loss}

    def evaluate(self, parameters, config):
        task.set_weights(self.model, parameters)
        x, y, s = self.data.test
        m = task.metrics(y * s, task.predict(self.model, x, s))
        return m["rmse"] ** 2, len(y), {k: float(v) for k, v in m.items()}


def _mean_loss(metrics: list[tuple[int, dict]]) -> dict[str, float]:
    n = sum(k for k, _ in metrics)
    return {"train_loss": sum(k * m["train_loss"] for k, m in metrics) / n if n else float("nan")}


def _pooled(datas: list[RegionData], forecasts: list[np.ndarray]) -> dict[str, float]:
    actual = np.concatenate([d.test[1] * d.test[2] for d in datas])
    return task.metrics(actual, np.concatenate(forecasts))


def _round3(m: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in m.items()}


def run(datas: list[RegionData], *, rounds: int = 3, strategy: str = "fedavg", proximal_mu: float = 0.01,
        epochs: int = 2, lr: float = 3e-3, seed: int = 0, baselines: bool = True,
        progress: Callable[[str], None] | None = None,
        on_round: Callable[[int, list[np.ndarray], dict[str, Any]], dict[str, Any]] | None = None,
        model_fn: Callable[[], torch.nn.Module] = task.Forecaster) -> dict[str, Any]:
    """``rounds`` federated rounds over ``datas`` (one per region); returns the JSON history.

    ``on_round(round, global weights, metrics)`` is called after each round (to save the model version);
    what it returns is added to that round's history entry.
    """
    datas = [d for d in datas if len(d.train[1])]
    if not datas:
        raise ValueError("no region has enough readings to make a forecasting window")
    torch.manual_seed(seed)
    global_model = model_fn()
    params = ndarrays_to_parameters(task.get_weights(global_model))
    options = {"initial_parameters": params, "fit_metrics_aggregation_fn": _mean_loss}
    if strategy == "fedprox":
        server = FedProx(proximal_mu=proximal_mu, **options)
    elif strategy == "fedavg":
        server = FedAvg(**options)
    else:
        raise ValueError(f"unknown strategy {strategy!r} (fedavg or fedprox)")
    clients = [RegionClient(d, epochs=epochs, lr=lr, seed=seed, model_fn=model_fn) for d in datas]
    history = []
    for r in range(1, rounds + 1):
        t = time.perf_counter()
        config = {"round": r, "proximal_mu": proximal_mu if strategy == "fedprox" else 0.0}
        results = []
        for client in clients:
            weights, n, metrics = client.fit(parameters_to_ndarrays(params), config)
            results.append((None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(weights), n, metrics)))
        params, fit_metrics = server.aggregate_fit(r, results, [])
        weights = parameters_to_ndarrays(params)
        task.set_weights(global_model, weights)
        per_region = {c.data.region: _round3(c.evaluate(weights, {})[2]) for c in clients}
        overall = _pooled(datas, [task.predict(global_model, d.test[0], d.test[2]) for d in datas])
        history.append({"round": r, **_round3(overall), "train_loss": round(fit_metrics["train_loss"], 5),
                        "per_region": per_region, "seconds": round(time.perf_counter() - t, 2)})
        if on_round:
            history[-1].update(on_round(r, weights, {k: history[-1][k] for k in ("mae", "rmse", "r2")}))
        if progress:
            progress(f"round {r}: MAE {overall['mae']:.4f} RMSE {overall['rmse']:.4f} R² {overall['r2']:.3f}")
    report: dict[str, Any] = {"strategy": strategy, "regions": {d.region: {"records": d.records, "meters": d.meters,
                                                                        "train_windows": int(len(d.train[1])),
                                                                        "test_windows": int(len(d.test[1]))} for d in datas},
                              "rounds": history, "model_weights": weights}
    if baselines:
        report["baselines"] = measure_baselines(datas, epochs=epochs * rounds, lr=lr, seed=seed, model_fn=model_fn)
    return report


def measure_baselines(datas: list[RegionData], *, epochs: int, lr: float, seed: int,
                      model_fn: Callable[[], torch.nn.Module] = task.Forecaster) -> dict[str, Any]:
    """Persistence, local-only and centralized, on the same held-out windows as the federation
    (persistence = the last input value: the last interval, or the previous bill)."""
    persistence = _pooled(datas, [task.persistence(d.test[0], d.test[2]) for d in datas])
    local = []
    for d in datas:
        torch.manual_seed(seed)
        model = model_fn()
        task.train(model, d.train[0], d.train[1], epochs=epochs, lr=lr, seed=seed)
        local.append(task.predict(model, d.test[0], d.test[2]))
    torch.manual_seed(seed)
    central = model_fn()
    x = np.concatenate([d.train[0] for d in datas])
    y = np.concatenate([d.train[1] for d in datas])
    task.train(central, x, y, epochs=epochs, lr=lr, seed=seed)
    return {"persistence": _round3(persistence), "local_only": _round3(_pooled(datas, local)),
            "centralized": _round3(_pooled(datas, [task.predict(central, d.test[0], d.test[2]) for d in datas]))}
