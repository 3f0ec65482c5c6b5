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


def federate(settings: Settings, *, rounds: int = 3, strategy: str = "fedavg", proximal_mu: float = 0.01,
             epochs: int = 2, interval: str = "auto", say=print, status=None) -> dict:
    """One federated run over the store's regions, as the data owner: each region's client opens only its
    region's readings; every round's global model is saved and its hash appended to the ledger."""
    import contextlib

    from streams.cli import passphrase_for
    from streams.keystore import Keystore
    from streams.query import Reader
    from streams.store import SegmentStore

    from . import plot, provenance, rounds as fed
    from .data import region_data, region_readings

    keystore = Keystore.load(settings.data_dir)
    keys = keystore.unlock(passphrase_for(settings))
    reader = Reader(settings.store_dir, keys)
    with (status or (lambda _: contextlib.nullcontext()))("each region's client reads and opens its readings"):
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
    signer = keystore.ledger_signer(passphrase_for(settings))
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{strategy}-{os.urandom(2).hex()}"

    def save(round_: int, weights, metrics: dict) -> dict:
        row = provenance.record_model(store, signer, weights, run_id=run_id, round_=round_, strategy=strategy,
                                      metrics=metrics)
        return {"model_sha256": row["model_sha256"], "ledger_leaf": row["leaf_index"]}

    report = fed.run(datas, rounds=rounds, strategy=strategy, proximal_mu=proximal_mu, epochs=epochs,
                     progress=say, on_round=save)
    report.pop("model_weights")
    report["interval_min"] = minutes
    report["run_id"] = run_id
    out = provenance.run_dir(store, run_id)
    (out / "history.json").write_text(json.dumps(report, indent=2))
    plot.plot_history(report, out / "metrics.png")
    say(f"models, history.json and metrics.png in {out}; each model's SHA-256 is a leaf of the ledger's "
        "model log (meterseal ledger verify checks them)")
    return report


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

    err = Console(stderr=True)
    report = federate(settings, rounds=rounds, strategy=strategy, proximal_mu=proximal_mu, epochs=epochs,
                      interval=interval, say=err.print, status=err.status)
    minutes = report["interval_min"]
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


@fl_group.command("schedule")
@click.option("--every-min", type=float, default=60.0, show_default=True,
              help="Run when this many minutes passed since the last run (and some region has new readings); 0: never by time.")
@click.option("--after-readings", type=int, default=0, show_default=True,
              help="Run as soon as some region has this many new readings since the last run; 0: never by count.")
@click.option("--rounds", type=int, default=3, show_default=True)
@click.option("--strategy", type=click.Choice(["fedavg", "fedprox"]), default="fedavg", show_default=True)
@click.option("--poll-s", type=float, default=10.0, show_default=True, help="How often to look at the store.")
@click.option("--max-runs", type=int, default=0, help="Stop after this many runs (0: run until stopped).")
@click.pass_obj
def fl_schedule(settings: Settings, every_min: float, after_readings: int, rounds: int, strategy: str,
                poll_s: float, max_runs: int) -> None:
    """Periodic federated runs driven by the stream: the store's per-region reading counts (read without
    opening anything) decide when the next run is due. Runs as the data owner (it needs the passphrase),
    beside the workers, which never hold the owner's key; `crontab` with `meterseal fl run` also works.
    """
    from rich.console import Console

    from .schedule import due, region_counts

    err = Console(stderr=True)
    last_at, last_counts, runs = time.monotonic(), {}, 0
    err.print(f"fl schedule: every {every_min:g} min or after {after_readings} new readings per region; "
              f"looking at {settings.store_dir} every {poll_s:g} s")
    while not max_runs or runs < max_runs:
        counts = region_counts(settings.store_dir)
        reason = due(time.monotonic() - last_at, counts, last_counts, every_s=every_min * 60,
                     after_readings=after_readings)
        if reason:
            err.print(f"fl schedule: run {runs + 1} ({reason})")
            try:
                report = federate(settings, rounds=rounds, strategy=strategy, say=err.print)
                last = report["rounds"][-1]
                err.print(f"fl schedule: run {report['run_id']}: MAE {last['mae']:.4f} RMSE {last['rmse']:.4f} "
                          f"R² {last['r2']:.3f}, model {last['model_sha256'][:16]}… in the ledger")
            except click.ClickException as exc:
                err.print(f"fl schedule: skipped: {exc.message}")
            last_at, last_counts, runs = time.monotonic(), counts, runs + 1
            continue
        time.sleep(poll_s)
