"""``meterseal fl run``: federated rounds over the regions of the store, baselines in the same run."""

from __future__ import annotations

import json
import os
import time

import click

from streams.settings import Settings

STEPS_MIN = (60, 15, 5, 1)  # forecasting interval tried in turn until the store has enough windows


@click.group("fl")
def fl_group() -> None:
    """Federated learning of a consumption forecaster across regions (Flower)."""


@fl_group.command("run")
@click.option("--rounds", type=int, default=3, show_default=True)
@click.option("--strategy", type=click.Choice(["fedavg", "fedprox"]), default="fedavg", show_default=True)
@click.option("--mu", "proximal_mu", type=float, default=0.01, show_default=True, help="FedProx proximal term.")
@click.option("--epochs", type=int, default=2, show_default=True, help="Local epochs per round.")
@click.option("--interval", type=click.Choice(["auto", *map(str, STEPS_MIN)]), default="auto", show_default=True,
              help="Forecast interval in minutes; auto: the longest giving >= 200 training windows.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def fl_run(settings: Settings, rounds: int, strategy: str, proximal_mu: float, epochs: int, interval: str, fmt: str) -> None:
    """Run federated rounds in this process: one Flower client per region, each reading only its region.

    Reports MAE/RMSE/R² of the global model per round on held-out windows, and the baselines measured in
    the same run: persistence, local-only training per region, centralized training.
    """
    from rich.console import Console

    from streams.cli import passphrase_for
    from streams.keystore import Keystore
    from streams.query import Reader

    from streams.store import SegmentStore

    from . import plot, provenance, rounds as fed
    from .data import region_data, region_readings

    err = Console(stderr=True)
    keys = Keystore.load(settings.data_dir).unlock(passphrase_for(settings))
    reader = Reader(settings.store_dir, keys)
    with err.status("each region's client reads and opens its readings"):
        readings = {region: region_readings(reader, region) for region in settings.regions}
    steps = STEPS_MIN if interval == "auto" else (int(interval),)
    for minutes in steps:
        datas = [region_data(rs, region, step_s=minutes * 60) for region, rs in readings.items()]
        if sum(len(d.train[1]) for d in datas) >= 200 or minutes == steps[-1]:
            break
    if not any(len(d.train[1]) for d in datas):
        raise click.ClickException("the store has too few consecutive readings per meter for a forecasting window "
                                   "(ingest some: meterseal ingest uci)")
    store = SegmentStore(settings.store_dir)
    signer = Keystore.load(settings.data_dir).ledger_signer(passphrase_for(settings))
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{strategy}-{os.urandom(2).hex()}"

    def save(round_: int, weights, metrics: dict) -> dict:
        row = provenance.record_model(store, signer, weights, run_id=run_id, round_=round_, strategy=strategy,
                                      metrics=metrics)
        return {"model_sha256": row["model_sha256"], "ledger_leaf": row["leaf_index"]}

    report = fed.run(datas, rounds=rounds, strategy=strategy, proximal_mu=proximal_mu, epochs=epochs,
                     progress=lambda line: err.print(line), on_round=save)
    report.pop("model_weights")
    report["interval_min"] = minutes
    report["run_id"] = run_id
    out = provenance.run_dir(store, run_id)
    (out / "history.json").write_text(json.dumps(report, indent=2))
    plot.plot_history(report, out / "metrics.png")
    err.print(f"models, history.json and metrics.png in {out}; each model's SHA-256 is a leaf of the ledger's "
              "model log (meterseal ledger verify checks them)")
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{strategy}, {minutes}-minute forecasts, regions: " +
               ", ".join(f"{r} ({v['train_windows']}/{v['test_windows']} windows)" for r, v in report["regions"].items()))
    click.echo(f"{'':>14}  {'MAE':>9} {'RMSE':>9} {'R²':>7}")
    for h in report["rounds"]:
        click.echo(f"{'round ' + str(h['round']):>14}  {h['mae']:9.4f} {h['rmse']:9.4f} {h['r2']:7.3f}")
    for name, m in report["baselines"].items():
        click.echo(f"{name:>14}  {m['mae']:9.4f} {m['rmse']:9.4f} {m['r2']:7.3f}")
