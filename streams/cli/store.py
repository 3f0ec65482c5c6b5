"""`meterseal store`: the sealed store in the data directory."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from streams.cli.common import console, passphrase_for
from streams.exceptions import MeterSealError
from streams.settings import Settings

from streams.ingest.broker import resolve
from streams.keys.keystore import Keystore


@click.group()
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
    from streams.pipeline import Pipeline
    from streams.store.rebuild import rebuild
    from streams.store.segments import SegmentStore

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

