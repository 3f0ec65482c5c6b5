"""``meterseal bench forecaster``: forecaster variants against persistence, measured in one run.

Centralized and in plaintext (the model choice, not the federation, is what is measured): the UCI
household series cut into ``meters`` meters (``streams.sources.uci_readings``), ``days`` days each,
each meter's windows split chronologically 80/20 (``fl.task``); MAE in kWh on the held-out windows,
beside persistence (next interval = last) on the same windows.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from . import task

VARIANTS = (  # (interval minutes, lookback intervals, training loss)
    (60, 24, "mse"), (60, 24, "l1"), (60, 168, "l1"), (240, 42, "l1"),
)


def _series(meters: int, days: int) -> list[list[tuple[float, float]]]:
    from streams.sources import uci_readings

    out: dict[str, list[tuple[float, float]]] = {}
    for r in uci_readings(meters=meters, limit=meters * days * 1440):
        out.setdefault(r["meter_id"], []).append((dt.datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp(),
                                                  r["kwh"]))
    return [sorted(s) for s in out.values()]


class _MLP(nn.Module):
    def __init__(self, width: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def bench_forecaster(*, meters: int = 10, days: int = 60, epochs: int = 10, seeds: int = 3,
                     progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Each variant trained with ``seeds`` seeds (the spread between seeds is as large as between some
    variants): MAE is the mean over seeds, with the best and worst seed's gain over persistence."""
    series = _series(meters, days)
    rows = []
    for minutes, lookback, loss in VARIANTS:
        start = time.perf_counter()
        parts = [task.split(*task.windows(s, step_s=minutes * 60, lookback=lookback)) for s in series]
        (xtr, ytr, _), (xte, yte, ste) = (tuple(np.concatenate([p[k][i] for p in parts]) for i in range(3))
                                          for k in (0, 1))
        actual = yte * ste
        persistence = float(np.abs(xte[:, lookback - 1] * ste - actual).mean())
        maes = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            model = _MLP(xtr.shape[1])
            task.train(model, xtr, ytr, epochs=epochs, loss=loss, seed=seed)
            maes.append(float(np.abs(task.predict(model, xte, ste) - actual).mean()))
        mae = sum(maes) / len(maes)
        rows.append({"interval_min": minutes, "lookback": lookback, "loss": loss, "test_windows": int(len(yte)),
                     "mae_kwh": round(mae, 4), "persistence_mae_kwh": round(persistence, 4),
                     "better_than_persistence_pct": round(100 * (1 - mae / persistence), 1),
                     "seed_range_pct": [round(100 * (1 - max(maes) / persistence), 1),
                                        round(100 * (1 - min(maes) / persistence), 1)],
                     "seconds": round(time.perf_counter() - start, 1)})
        progress(f"{minutes} min, lookback {lookback}, {loss}: MAE {mae:.4f} vs persistence {persistence:.4f}")
    return {"meters": meters, "days": days, "epochs": epochs, "seeds": seeds, "variants": rows,
            "note": "centralized, plaintext UCI fleet; chronological 80/20 split per meter; MLP 2x32 over the "
                    "lookback (scaled by its mean) + hour/weekday; persistence on the same held-out windows"}
