"""The ``meterseal`` command. Every flag maps to one ``Settings`` field; see ``meterseal --help``."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path

import click

from streams.cli.alerts import alerts_cmd, eval_group
from streams.cli.silence import history_cmd as alert_history_cmd
from streams.cli.silence import silence as silence_cmd
from streams.cli.bench import bench
from streams.cli.common import console, passphrase_for
from streams.cli.connect import connect_group
from streams.cli.console import console_group
from streams.cli.demo import demo
from streams.cli.device import device_group
from streams.cli.dp import dp_group
from streams.cli.fl import fl_group
from streams.cli.he import bill_cmd, forecast_cmd
from streams.cli.ingest import ingest
from streams.cli.keys import keys
from streams.cli.ledger import ledger_group
from streams.cli.mqtt import bridge_group, mqtt_group, simulate_group
from streams.cli.search import search_cmd, sql_cmd
from streams.cli.share import export_group, grant_group, party_group, share_group
from streams.cli.store import store
from streams.cli.subject import subject_group
from streams.exceptions import KeyServiceDenied, KeyServiceUnavailable, MeterSealError
from streams.ingest.broker import BROKER_FILE, EmbeddedBroker, ensure_topics
from streams.settings import Settings


EXIT_NOPERM, EXIT_CONFIG = 77, 78  # sysexits.h: a key service refused us / cannot be reached (try again)


class _Group(click.Group):
    """Turns meterseal's own errors into one clear line and an exit code, not a traceback: 78 when the key service
    cannot be reached (a supervisor retries), 77 when it refuses, 2 otherwise."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MeterSealError as exc:
            console.print(f"[bold red]error:[/] {exc}")
            sys.exit(EXIT_CONFIG if isinstance(exc, KeyServiceUnavailable) else
                     EXIT_NOPERM if isinstance(exc, KeyServiceDenied) else 2)


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

    run_worker(settings, lambda: passphrase_for(settings))  # asked only by a passphrase keystore


@main.command()
@click.pass_obj
def status(settings: Settings) -> None:
    """Counts in the store: sealed readings (and how many their meter signed) and bills, dead letters by rule, DEKs."""
    from streams.cli.common import open_settings_store
    from streams.store.base import connect

    store = open_settings_store(settings)
    con = connect(store)
    out = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("readings", "bills", "dlq")}
    out["dlq_by_rule"] = dict(con.execute("SELECT rule, count(*) FROM dlq GROUP BY rule ORDER BY 2 DESC").fetchall())
    # reading schema v3 carries the meter's verified signature (streams.devices); v1/v2: not device-signed
    out["readings_device_signed"] = con.execute("SELECT count(*) FROM readings WHERE schema_version = 3").fetchone()[0]
    out["deks"] = len(store.dek_ids())
    click.echo(json.dumps(out, indent=2))



main.add_command(keys)
main.add_command(ingest)
main.add_command(store)
main.add_command(demo)
main.add_command(bench)
main.add_command(connect_group)
main.add_command(ledger_group)
main.add_command(alerts_cmd)
alerts_cmd.add_command(silence_cmd)
alerts_cmd.add_command(alert_history_cmd)
main.add_command(eval_group)
main.add_command(fl_group)  # torch and flwr are imported only when `meterseal fl run` runs
main.add_command(search_cmd)
main.add_command(sql_cmd)
main.add_command(party_group)
main.add_command(grant_group)
main.add_command(share_group)
main.add_command(export_group)
main.add_command(console_group)
main.add_command(dp_group)
main.add_command(bill_cmd)
main.add_command(forecast_cmd)
main.add_command(subject_group)
main.add_command(device_group)
main.add_command(bridge_group)
main.add_command(simulate_group)
main.add_command(mqtt_group)
