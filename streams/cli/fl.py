"""``meterseal fl run``: federated rounds over the regions of the store, baselines in the same run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from streams.settings import Settings

from fl.federate import STEPS_MIN, federate
from streams.cli.common import open_settings_store, passphrase_for, region_passphrase


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
@click.option("--task", "task_name", type=click.Choice(["readings", "bills"]), default="readings", show_default=True,
              help="readings: the interval forecaster per region; bills: the prototype's TinyNet per bill category.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def fl_run(settings: Settings, rounds: int, strategy: str, proximal_mu: float, epochs: int, interval: str,
           task_name: str, fmt: str) -> None:
    """Run federated rounds in this process: one Flower client per region, each reading only its region.

    Reports MAE/RMSE/R² of the global model per round on held-out windows, and the baselines measured in
    the same run: persistence, local-only training per region, centralized training.
    """
    from rich.console import Console

    err = Console(stderr=True)
    report = federate(settings, rounds=rounds, strategy=strategy, proximal_mu=proximal_mu, epochs=epochs,
                      interval=interval, say=err.print, status=err.status, task_name=task_name,
                      passphrase=lambda: passphrase_for(settings))
    minutes = report["interval_min"]
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
        return
    what = f"{minutes}-minute forecasts" if minutes else "TinyNet, next bill's units from the previous bill's"
    click.echo(f"{strategy}, {what}, clients: " +
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

    from fl.schedule import due, region_counts

    err = Console(stderr=True)
    last_at, last_counts, runs = time.monotonic(), {}, 0
    err.print(f"fl schedule: every {every_min:g} min or after {after_readings} new readings per region; "
              f"looking at {settings.store_location} every {poll_s:g} s")
    store = open_settings_store(settings)
    while not max_runs or runs < max_runs:
        counts = region_counts(store)
        reason = due(time.monotonic() - last_at, counts, last_counts, every_s=every_min * 60,
                     after_readings=after_readings)
        if reason:
            err.print(f"fl schedule: run {runs + 1} ({reason})")
            try:
                report = federate(settings, rounds=rounds, strategy=strategy, say=err.print,
                                  passphrase=lambda: passphrase_for(settings))
                last = report["rounds"][-1]
                err.print(f"fl schedule: run {report['run_id']}: MAE {last['mae']:.4f} RMSE {last['rmse']:.4f} "
                          f"R² {last['r2']:.3f}, model {last['model_sha256'][:16]}… in the ledger")
            except click.ClickException as exc:
                err.print(f"fl schedule: skipped: {exc.message}")
            last_at, last_counts, runs = time.monotonic(), counts, runs + 1
            continue
        time.sleep(poll_s)


# --- a real Flower deployment: SuperLink, one SuperNode per region, `fl deploy` to run the app ---------

_PASS = dict(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})


def _flower_env() -> dict:
    """The environment for Flower's executables: this interpreter's bin directory first on PATH (the
    SuperLink starts `flower-superexec` and `flwr-serverapp` by name)."""
    import sys

    bin_dir = os.path.dirname(sys.executable)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def _exec(argv: list[str]) -> None:
    import sys

    bin_dir = os.path.dirname(sys.executable)
    env = _flower_env()
    os.execve(os.path.join(bin_dir, argv[0]), argv, env)


@fl_group.command("superlink", **_PASS)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=9093, show_default=True, help="The SuperLink's one HTTP API (Fleet, Control).")
@click.pass_obj
@click.pass_context
def fl_superlink(ctx: click.Context, settings: Settings, host: str, port: int) -> None:
    """Run a Flower SuperLink (the federation's server side) for meterseal's regions.

    Plain HTTP on loopback by default (``--insecure``); for regions on other machines pass Flower's TLS
    options through (``--ssl-certfile``, ``--ssl-keyfile``, ``--ssl-ca-certfile``). Its state is kept in
    ``<data dir>/fl/superlink.db``. It never installs packages at run time: the app runs in this environment.
    """
    state = settings.data_dir / "fl"
    state.mkdir(parents=True, exist_ok=True)
    tls = any(a.startswith("--ssl-") for a in ctx.args)
    _exec(["flower-superlink", *([] if tls else ["--insecure"]), "--host", host, "--port", str(port),
           "--database", str(state / "superlink.db"), "--disable-runtime-dependency-installation", *ctx.args])


@fl_group.command("supernode", **_PASS)
@click.option("--region", required=True, help="The region whose readings this node trains on (and only those).")
@click.option("--superlink", default="127.0.0.1:9093", show_default=True)
@click.option("--port", type=int, default=9094, show_default=True, help="This node's local API port (one per node on a host).")
@click.option("--region-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The region's key file (`meterseal keys region add`); its passphrase in METERSEAL_REGION_PASSPHRASE. "
                   "Without it the node needs the owner's keystore passphrase (METERSEAL_PASSPHRASE).")
@click.pass_obj
@click.pass_context
def fl_supernode(ctx: click.Context, settings: Settings, region: str, superlink: str, port: int,
                 region_key: Path | None) -> None:
    """Run a Flower SuperNode for one region, on that region's machine.

    Its ClientApp (``fl/client_app.py``) opens only this region's readings from the store in the data
    directory: with ``--region-key`` (the region's own capability, which opens no other region's records),
    or else with the owner's keystore (METERSEAL_PASSPHRASE).
    """
    if region not in settings.regions:
        raise click.ClickException(f"unknown region {region!r} (METERSEAL_REGIONS: {', '.join(settings.regions)})")
    config = f"region='{region}' data-dir='{settings.data_dir.resolve()}'"
    if region_key is not None:
        from streams.keys.regions import RegionKey

        key = RegionKey.load(region_key, region_passphrase())  # a wrong passphrase fails here, not in a round
        if key.region != region:
            raise click.ClickException(f"{region_key} is the key of region {key.region!r}, not {region!r}")
        config += f" region-key='{region_key.resolve()}'"
    tls = any(a.startswith("--root-certificates") for a in ctx.args)
    _exec(["flower-supernode", *([] if tls else ["--insecure"]), "--superlink", superlink, "--port", str(port),
           "--node-config", config, *ctx.args])


@fl_group.command("deploy")
@click.option("--superlink", default="127.0.0.1:9093", show_default=True)
@click.option("--rounds", type=int, default=3, show_default=True)
@click.option("--strategy", type=click.Choice(["fedavg", "fedprox"]), default="fedavg", show_default=True)
@click.option("--secagg", is_flag=True, help="Flower's SecAgg+: the server sees only the sum of the regions' updates.")
@click.option("--regions", "min_regions", type=int, default=2, show_default=True, help="Wait for this many SuperNodes.")
@click.option("--interval", type=int, default=60, show_default=True, help="Forecast interval in minutes.")
@click.option("--timeout", type=float, default=1800.0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def fl_deploy(superlink: str, rounds: int, strategy: str, secagg: bool, min_regions: int, interval: int,
              timeout: float, fmt: str) -> None:
    """Run the federated app on a SuperLink (`flwr run`) and print the per-round metrics the regions measured."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    app_dir = Path(__file__).resolve().parents[2]  # the source checkout (pyproject.toml with [tool.flwr.app])
    if "[tool.flwr.app]" not in ((app_dir / "pyproject.toml").read_text() if (app_dir / "pyproject.toml").exists() else ""):
        raise click.ClickException(f"no Flower app at {app_dir} (fl deploy runs from a meterseal source checkout)")
    with tempfile.TemporaryDirectory(prefix="meterseal-flwr-") as home:
        (Path(home) / "config.toml").write_text(f'[superlink]\ndefault = "meterseal"\n\n[superlink.meterseal]\n'
                                                f'address = "{superlink}"\ninsecure = true\n')
        config = (f"num-server-rounds={rounds} strategy='{strategy}' secagg={'true' if secagg else 'false'} "
                  f"min-regions={min_regions} interval-min={interval}")
        cmd = [os.path.join(os.path.dirname(sys.executable), "flwr"), "run", str(app_dir), "meterseal",
               "--run-config", config, "--stream"]
        done = subprocess.run(cmd, env={**_flower_env(), "FLWR_HOME": home}, capture_output=True, text=True,
                              timeout=timeout)
    line = next((x for x in done.stdout.splitlines() if "meterseal-history " in x), None)
    if done.returncode != 0 or line is None:
        raise click.ClickException(f"flwr run failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    history = json.loads(line.split("meterseal-history ", 1)[1])
    if fmt == "json":
        click.echo(json.dumps(history, indent=2))
        return
    click.echo(f"{history['strategy']}{' + SecAgg+' if history['secagg'] else ''}, federated evaluation on the regions:")
    for h in history["rounds"]:
        click.echo(f"  round {h['round']}: MAE {h['mae']:.4f} RMSE {h['rmse']:.4f} R² {h['r2']:.3f}")
