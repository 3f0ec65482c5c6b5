"""Forecaster benchmarks, each measured beside its baselines in one run.

``meterseal bench forecaster`` (``bench_forecaster``): model variants, centralized and in plaintext (the
model choice, not the federation, is what is measured): the UCI household series cut into ``meters``
meters (``streams.ingest.sources.uci_readings``), ``days`` days each, each meter's windows split chronologically
80/20 (``fl.task``); MAE in kWh on the held-out windows, beside persistence (next interval = last).

``meterseal bench fl`` (``bench_federated``): the federated forecaster the way it runs for real — a store
sealed by the worker's pipeline, each region's client opening only its region with its region key —
with FedAvg and FedProx, beside persistence, local-only and centralized training.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from fl import task

VARIANTS = (  # (interval minutes, lookback intervals, parts of the last interval, training loss)
    (60, 24, 0, "mse"), (60, 24, 0, "l1"), (60, 168, 0, "l1"), (60, 24, 4, "l1"), (60, 24, 12, "l1"), (240, 42, 0, "l1"),
)


def _series(meters: int, days: int) -> list[list[tuple[float, float]]]:
    from streams.ingest.sources import uci_readings

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
    for minutes, lookback, recent, loss in VARIANTS:
        start = time.perf_counter()
        parts = [task.split(*task.windows(s, step_s=minutes * 60, lookback=lookback, recent=recent)) for s in series]
        (xtr, ytr, _), (xte, yte, ste) = (tuple(np.concatenate([p[k][i] for p in parts]) for i in range(3))
                                          for k in (0, 1))
        actual = yte * ste
        persistence = float(np.abs(xte[:, lookback - 1] * ste - actual).mean())
        # a stronger naive forecast where the parts are known: the last part, as a rate, for the whole interval
        last_part = float(np.abs(xte[:, lookback + recent - 1] * ste - actual).mean()) if recent else None
        maes = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            model = _MLP(xtr.shape[1])
            task.train(model, xtr, ytr, epochs=epochs, loss=loss, seed=seed)
            maes.append(float(np.abs(task.predict(model, xte, ste) - actual).mean()))
        mae = sum(maes) / len(maes)
        rows.append({"interval_min": minutes, "lookback": lookback, "recent_parts": recent, "loss": loss,
                     "test_windows": int(len(yte)), "mae_kwh": round(mae, 4), "persistence_mae_kwh": round(persistence, 4),
                     "better_than_persistence_pct": round(100 * (1 - mae / persistence), 1),
                     "last_part_mae_kwh": None if last_part is None else round(last_part, 4),
                     "better_than_last_part_pct": None if last_part is None else round(100 * (1 - mae / last_part), 1),
                     "seed_range_pct": [round(100 * (1 - max(maes) / persistence), 1),
                                        round(100 * (1 - min(maes) / persistence), 1)],
                     "seconds": round(time.perf_counter() - start, 1)})
        progress(f"{minutes} min, lookback {lookback}, {recent} parts, {loss}: MAE {mae:.4f} vs persistence "
                 f"{persistence:.4f}")
    return {"meters": meters, "days": days, "epochs": epochs, "seeds": seeds, "variants": rows,
            "note": "centralized, plaintext UCI fleet; chronological 80/20 split per meter; MLP 2x32 over the "
                    "lookback (scaled by its mean) + the last interval's parts + hour/weekday; persistence (next = last interval) "
                    "and, with parts, last part (next = the last part's rate) on the same held-out windows"}


def build_uci_store(data_dir: Any, passphrase: str, *, meters: int, days: int, regions: tuple[str, ...],
                    partitions: int = 4, chunk: int = 20_000,
                    progress: Callable[[int], None] = lambda n: None) -> Any:
    """A keystore with a key per region and a store of ``meters`` UCI meters × ``days`` days of minute
    readings, sealed by the worker's own pipeline (validation, tokens, per-region DEKs and grants, ledger)
    without a broker: the store a fleet's workers would have written. Returns the ``Settings``."""
    import json
    from pathlib import Path

    from streams.keys.keystore import Keystore
    from streams.pipeline import Pipeline
    from streams.seal import Sealed, Source
    from streams.settings import Settings
    from streams.ingest.sources import uci_readings
    from streams.store.segments import SegmentStore

    data_dir = Path(data_dir)
    keystore = Keystore.init(data_dir, passphrase)
    for region in regions:
        keystore.add_region(passphrase, region)
    keys = keystore.unlock(passphrase)
    settings = Settings.from_env({}, data_dir=data_dir, regions=",".join(regions), passphrase=passphrase,
                                 partitions=partitions)
    pipeline = Pipeline(settings, keys.index_key, keystore.owner_public, SegmentStore(settings.store_dir),
                        region_keys=lambda: Keystore.load(data_dir).region_publics(keys.index_key))
    states: dict = {}
    pending: dict[int, list] = {}
    offsets = [0] * partitions
    done = 0

    def flush(partition: int) -> None:
        pipeline.store_sealed("readings", partition, pending.pop(partition, []))

    for reading in uci_readings(meters=meters, limit=meters * days * 1440, regions=regions):
        partition = int(reading["meter_id"].rsplit("-", 1)[1]) % partitions
        outcome = pipeline.seal_reading(json.dumps(reading).encode(), Source("readings.raw", partition, offsets[partition]),
                                        states)
        if not isinstance(outcome, Sealed):
            raise RuntimeError(f"UCI reading rejected: {outcome.record.get('reason')}")
        pending.setdefault(partition, []).append((offsets[partition], outcome.record))
        offsets[partition] += 1
        done += 1
        if len(pending[partition]) >= chunk:
            flush(partition)
        if done % chunk == 0:
            progress(done)
    for partition in list(pending):
        flush(partition)
    progress(done)
    return settings


def bench_federated(*, meters: int = 10, days: int = 60, rounds: int = 5, epochs: int = 2,
                    regions: tuple[str, ...] = ("north", "south", "east", "west", "central"),
                    progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """The federated forecaster on a sealed UCI store, FedAvg and FedProx, through ``meterseal fl run``'s own
    path (each region's client opens only its region's readings with its region key), with the baselines
    of each run: persistence, local-only and centralized training on the same held-out windows."""
    import secrets
    import tempfile

    from fl.federate import federate

    with tempfile.TemporaryDirectory(prefix="meterseal-bench-fl-") as tmp:
        start = time.perf_counter()
        passphrase = secrets.token_urlsafe(16)
        settings = build_uci_store(tmp, passphrase, meters=meters, days=days, regions=regions,
                                   progress=lambda n: progress(f"sealed {n:,} readings"))
        build_s = time.perf_counter() - start
        runs = {}
        for strategy in ("fedavg", "fedprox"):
            start = time.perf_counter()
            report = federate(settings, rounds=rounds, strategy=strategy, epochs=epochs, interval="60", passphrase=passphrase,
                              say=lambda line: None if line.startswith("models,") else progress(line))  # (a temp dir)
            base = report["baselines"]
            last = report["rounds"][-1]
            runs[strategy] = {
                "rounds": [{k: h[k] for k in ("round", "mae", "rmse", "r2")} for h in report["rounds"]],
                "baselines": base,
                "better_than_persistence_pct": round(100 * (1 - last["mae"] / base["persistence"]["mae"]), 1),
                "above_centralized_pct": round(100 * (last["mae"] / base["centralized"]["mae"] - 1), 1),
                "capabilities": report["capabilities"], "seconds": round(time.perf_counter() - start, 1)}
        regions_info = report["regions"]
    return {"meters": meters, "days": days, "readings": meters * days * 1440, "rounds": rounds, "epochs": epochs,
            "build_s": round(build_s, 1), "regions": regions_info, "runs": runs,
            "note": "store sealed by the worker's pipeline without a broker; each region's client opens only its "
                    "region with its region key; hourly forecasts, chronological 80/20 split per meter; MAE of the "
                    "last round's global model vs persistence and centralized training measured in the same run "
                    "(centralized and local-only train rounds x epochs epochs)"}
