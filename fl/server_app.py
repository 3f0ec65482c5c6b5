"""The Flower ``ServerApp`` of a deployment: FedAvg or FedProx over the regions' SuperNodes, optionally with
SecAgg+ (the server aggregates masked updates and never sees one region's weights).

Run config (``[tool.flwr.app.config]`` in ``pyproject.toml``, override with ``flwr run -c``):
``num-server-rounds``, ``strategy`` (fedavg|fedprox), ``proximal-mu``, ``local-epochs``, ``interval-min``,
``secagg``, ``min-regions``, ``history`` (a path: the per-round metrics as JSON).
"""

from __future__ import annotations

import json
from pathlib import Path

from flwr.common import Context, ndarrays_to_parameters
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg, FedProx
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from fl import task


def _weighted(metrics: list[tuple[int, dict]]) -> dict[str, float]:
    n = sum(k for k, _ in metrics)
    keys = set.intersection(*(set(m) for _, m in metrics)) if metrics else set()
    return {key: sum(k * float(m[key]) for k, m in metrics) / n for key in keys} if n else {}


app = ServerApp()


@app.main()
def main(grid, context: Context) -> None:
    cfg = context.run_config
    regions = int(cfg.get("min-regions", 2))
    options = dict(initial_parameters=ndarrays_to_parameters(task.get_weights(task.Forecaster())),
                   min_fit_clients=regions, min_evaluate_clients=regions, min_available_clients=regions,
                   fit_metrics_aggregation_fn=_weighted, evaluate_metrics_aggregation_fn=_weighted,
                   on_fit_config_fn=lambda r: {"round": r, "proximal_mu": float(cfg.get("proximal-mu", 0.01))
                                               if cfg.get("strategy", "fedavg") == "fedprox" else 0.0})
    if cfg.get("strategy", "fedavg") == "fedprox":
        strategy = FedProx(proximal_mu=float(cfg.get("proximal-mu", 0.01)), **options)
    else:
        strategy = FedAvg(**options)
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=int(cfg.get("num-server-rounds", 3))),
                           strategy=strategy)
    if cfg.get("secagg", False):
        # every region holds a share of every other's mask key; any 2 of them can unmask a dropped region's
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=regions,
                                                                   reconstruction_threshold=max(2, regions - 1)))
    else:
        workflow = DefaultWorkflow()
    workflow(grid, legacy)
    # federated evaluation: each region's MAE/RMSE/R² of the global model on its held-out windows, weighted
    rounds = [{"round": r, **{k: round(v, 5) for k, v in m.items()}}
              for r, m in _by_round(legacy.history.metrics_distributed)]
    history = {"strategy": cfg.get("strategy", "fedavg"), "secagg": bool(cfg.get("secagg", False)), "rounds": rounds}
    print("meterseal-history " + json.dumps(history), flush=True)
    if cfg.get("history"):
        Path(str(cfg["history"])).write_text(json.dumps(history, indent=2))


def _by_round(metrics: dict[str, list[tuple[int, float]]]) -> list[tuple[int, dict[str, float]]]:
    out: dict[int, dict[str, float]] = {}
    for name, series in metrics.items():
        for r, value in series:
            out.setdefault(r, {})[name] = float(value)
    return sorted(out.items())
