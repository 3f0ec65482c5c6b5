"""`meterseal store rollup`: the rollups' owner-side commands (``streams.rollups``)."""

from __future__ import annotations

import json

import click

from streams.cli.common import console, open_settings_store, process_keys
from streams.exceptions import MeterSealError
from streams.settings import Settings


@click.group()
def rollup() -> None:
    """Hourly and daily rollups: rebuild them from the raw rows, or check them against the raw rows."""


def _owner(settings: Settings):
    """The owner's keys (a passphrase keystore, or a key service's admin token), the store, its keyring, the index."""
    from streams.crypto.tokens import BlindIndex

    keys = process_keys(settings, "admin")
    unlocked = keys.unlocked()
    store = open_settings_store(settings)
    return keys, unlocked, store, unlocked.keyring(store), BlindIndex(unlocked.index_key)


@rollup.command("rebuild")
@click.pass_obj
def rollup_rebuild(settings: Settings) -> None:
    """Recompute every partition's rollups from its stored readings (opened with the owner key) and replace the
    rollup rows and state. Stop the workers first."""
    import schemas
    from streams.pipeline import Pipeline
    from streams.rollups.rebuild import rebuild

    keys, unlocked, store, keyring, index = _owner(settings)
    pipeline = Pipeline(settings.replace(rollups=True), unlocked.index_key, keys.dek_maker(), store, keys.signer())
    done = rebuild(store, pipeline.rollups, keyring, index, locked=pipeline.locked,
                   progress=lambda line: console.print(line))
    for _, wrapped in pipeline.take_new_keys():  # the rollups' new DEKs: stored already, now leaves of the key log
        pipeline.store_key(schemas.encode("wrapped_key", wrapped), 0)
    pipeline.checkpoint_due(force=True)
    click.echo(json.dumps(done, indent=2))


@rollup.command("check")
@click.pass_obj
def rollup_check(settings: Settings) -> None:
    """Compare the rollups with a recomputation from the stored readings; exit 1 naming the first differences.
    Cells the workers have not closed yet (the last hour, or until METERSEAL_ROLLUP_IDLE_S passes) differ."""
    from streams.rollups.rebuild import check
    from streams.store.base import connect

    _, _, store, keyring, index = _owner(settings)
    problems = check(store, connect(store), keyring, index)
    if problems:
        for line in problems[:20]:
            click.echo(line, err=True)
        raise MeterSealError(f"{len(problems)} rollup cell(s) differ from the raw rows: "
                             "`meterseal store rollup rebuild` recomputes them")
    click.echo("ok: the rollups equal a recomputation from the raw rows")
