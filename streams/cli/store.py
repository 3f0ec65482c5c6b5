"""`meterseal store`: the sealed store in the data directory."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from streams import capabilities
from streams.cli.common import console, process_keys
from streams.exceptions import MeterSealError
from streams.settings import Settings

from streams.ingest.broker import resolve
from streams.keys.keystore import Keystore

from .rollup import rollup


@click.group()
def store() -> None:
    """The sealed store in the data directory."""


store.add_command(rollup)


@store.command("rebuild")
@click.option("--into", help="A new, empty store for the rebuilt records: a directory (default: "
              "<data-dir>/store-rebuilt-<time>) or s3://BUCKET/PREFIX (with METERSEAL_CATALOG and AWS_*).")
@click.pass_obj
def store_rebuild(settings: Settings, into: str | None) -> None:
    """Replay readings.sealed, bills.sealed, dlq and keys.deks from the broker into a fresh store.

    The result is a store like the one the worker wrote (same records, same ledger leaves). Point
    METERSEAL_STORE (or the data dir's store) at it once you have compared them.
    """
    from streams.pipeline import Pipeline
    from streams.store.base import is_remote, open_store
    from streams.store.rebuild import rebuild

    keys = process_keys(settings, "worker")  # a rebuild writes as a worker does: index key, checkpoint signer
    into = into or str(settings.data_dir / f"store-rebuilt-{time.strftime('%Y%m%dT%H%M%S')}")
    if not is_remote(into) and Path(into).exists() and any(Path(into).iterdir()):
        raise MeterSealError(f"{into} is not empty: rebuild into a new directory")
    target = open_store(into if is_remote(into) else Path(into), catalog=settings.catalog,
                        work_dir=settings.data_dir / "store-rebuild-work", create=True)
    if is_remote(into) and (target.log_keys() or not all(target.is_empty(t) for t in ("readings", "bills", "dlq"))):
        raise MeterSealError(f"{into} already holds records or ledger logs: rebuild into a new prefix")
    from streams.cli.common import open_settings_store
    from streams.store.migrate import carry_keys

    try:  # subject keys are on no topic: the rebuilt store takes them (and the erasure fence) from this one
        carried = carry_keys(open_settings_store(settings), target)
    except MeterSealError as exc:
        raise MeterSealError(f"the current store's subject keys could not be read ({exc}): without them the "
                             "rebuilt store's records cannot be opened") from exc
    console.print(f"subject keys and erasure fence carried over: {carried.objects} objects, {carried.hashes} log hashes")
    pipeline = Pipeline(settings, keys.index_key(), keys.dek_maker(), target, keys.signer())
    from rich.progress import Progress, SpinnerColumn, TextColumn

    with Progress(SpinnerColumn(), TextColumn("replaying sealed topics: {task.completed} messages"), console=console) as bar:
        task = bar.add_task("", total=None)
        written = rebuild(resolve(settings.broker, settings.data_dir), pipeline, on_message=lambda: bar.advance(task))
    click.echo(json.dumps({"into": str(into), **written}, indent=2))



@store.command("migrate")
@click.option("--to", "to", required=True, help="The destination: s3://BUCKET/PREFIX (with METERSEAL_CATALOG and AWS_*) "
              "or a directory.")
@click.pass_obj
def store_migrate(settings: Settings, to: str) -> None:
    """Copy this store (records, wrapped DEKs, grants, every log's hashes and checkpoints) to TO, then audit
    the copy against the source log by log. Running it again copies only what is missing."""
    from streams.cli.common import open_settings_store
    from streams.store.base import open_store
    from streams.store.migrate import migrate

    source = open_settings_store(settings)
    dest = open_store(to, catalog=settings.catalog, work_dir=settings.store_dir, create=True)
    verifier = Keystore.load(settings.data_dir).ledger_verifier
    report = migrate(source, dest, verifier, registry=capabilities.registry(), progress=lambda text: console.print(text))
    click.echo(json.dumps({"to": to, **report.__dict__}, indent=2))
    click.echo(f"ok: {report.logs} logs, {report.leaves} leaves verified in the copy; point METERSEAL_STORE at {to}",
               err=True)


@store.command("compact")
@click.option("--table", "tables", multiple=True, type=click.Choice(["readings", "bills", "dlq"]),
              help="Only this table (repeat for several; default all three).")
@click.option("--min-files", type=int, default=8, show_default=True,
              help="Rewrite a partition only when it holds at least this many data files.")
@click.pass_obj
def store_compact(settings: Settings, tables: tuple[str, ...], min_files: int) -> None:
    """Rewrite each partition's small files (one per streaming commit) of the S3 store's Iceberg tables as one
    file, while workers keep appending (an optimistic commit deleting exactly the files it read)."""
    from streams.cli.common import open_settings_store
    from streams.store.compact import compact_store

    report = compact_store(open_settings_store(settings), tables=tables or ("readings", "bills", "dlq"),
                           min_files=min_files, progress=lambda text: console.print(text))
    click.echo(json.dumps(report, indent=2))


@store.command("expire")
@click.option("--older-than", "older_than_s", type=float, default=None,
              help="Expire snapshots committed more than this many seconds ago [default: METERSEAL_SNAPSHOT_KEEP_S, 60].")
@click.option("--table", "tables", multiple=True, type=click.Choice(["readings", "bills", "dlq"]),
              help="Only this table (repeat for several; default all three).")
@click.pass_obj
def store_expire(settings: Settings, older_than_s: float | None, tables: tuple[str, ...]) -> None:
    """Drop old snapshots of the S3 store's Iceberg tables and delete the files only they used (manifest lists,
    merged or rewritten manifests, files compaction replaced). Every streaming commit adds a snapshot and each
    commit rewrites the list of them all, so commits slow down as it grows; workers do this every so often
    themselves (METERSEAL_SNAPSHOT_KEEP_S). Readers lose time travel to expired snapshots."""
    from streams.cli.common import open_settings_store
    from streams.store.expire import expire_store

    keep = settings.snapshot_keep_s if older_than_s is None else older_than_s
    if keep < 0:
        raise click.BadParameter("must be 0 or more seconds", param_hint="--older-than")
    report = expire_store(open_settings_store(settings), older_than_s=keep, tables=tables or ("readings", "bills", "dlq"),
                          progress=lambda text: console.print(text))
    if report is None:
        raise click.ClickException("another process is expiring this store's snapshots now: try again later")
    click.echo(json.dumps(report, indent=2))


@store.group("retention")
def retention_group() -> None:
    """How long each kind of data is kept (ISO 8601 durations such as P2Y, P400D): `show`, `set`."""


@retention_group.command("show")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def retention_show(settings: Settings, fmt: str) -> None:
    """Each kind's retention (the default unless set), and what the workers' daily run will delete before."""
    from streams.cli.common import open_settings_store
    from streams.erasure.retention import load_policy, parse_duration

    policy = load_policy(open_settings_store(settings))
    known = {kind.kind for kind in capabilities.registry().retained_kinds}
    rows = {kind: {**entry, "cutoff": _iso(parse_duration(entry["keep"]).before(time.time()))}
            for kind, entry in policy.items() if kind in known}
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    for kind, entry in rows.items():
        click.echo(f"{kind:10} keep {entry['keep']:8} ({'set' if entry['set'] else 'default'}): older than "
                   f"{entry['cutoff']} is deleted")


@retention_group.command("set")
@click.option("--kind", required=True, help="readings, bills, dlq, alerts (`retention show` lists them).")
@click.option("--keep", required=True, help="An ISO 8601 duration: P2Y, P400D, P1Y6M, PT12H.")
@click.pass_obj
def retention_set(settings: Settings, kind: str, keep: str) -> None:
    """Keep KIND for KEEP (measured back from now by each row's own time). Workers apply it daily
    (METERSEAL_RETENTION_EVERY_S); `meterseal store enforce-retention` applies it now."""
    from streams.cli.common import open_settings_store
    from streams.erasure.retention import set_policy

    policy = set_policy(open_settings_store(settings), kind, keep,
                        known=[k.kind for k in capabilities.registry().retained_kinds])
    click.echo(json.dumps({kind: policy[kind]}, indent=2))


@store.command("enforce-retention")
@click.option("--purge-keys-topic", is_flag=True,
              help="Also delete the destroyed DEKs from the broker's compacted keys.deks topic (tombstones; workers "
                   "do this after their own daily run). Needs the broker (METERSEAL_BROKER or the embedded one).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def store_enforce_retention(settings: Settings, purge_keys_topic: bool, fmt: str) -> None:
    """Delete now what the retention policy no longer covers, destroy the DEKs no remaining row uses, and log the
    run in the erasure log (the deleted records' leaves stay as hashes: `ledger verify` still passes)."""
    bootstrap = resolve(settings.broker, settings.data_dir) if purge_keys_topic else None  # no broker: say so first
    from streams.cli.common import open_settings_store
    from streams.erasure.retention import enforce

    keys = process_keys(settings, "admin")
    report = enforce(open_settings_store(settings), index_key=keys.index_key(),
                     signers=[keys.signer()], registry=capabilities.registry(),
                     dek_max_age_s=settings.dek_max_age_s, data_dir=settings.data_dir,
                     progress=lambda text: console.print(text))
    if bootstrap and report["destroyed_deks"]:
        from streams.ingest.broker import Producer

        producer = Producer(bootstrap)
        for key_id in report["destroyed_deks"]:
            producer.send("keys.deks", None, key_id.encode())
        producer.close()
        console.print(f"{len(report['destroyed_deks'])} destroyed DEK(s) deleted from keys.deks")
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    else:
        deleted = ", ".join(f"{n} {k}" for k, n in report["deleted"].items())
        click.echo(f"retention: {deleted}; erasure log leaf {report['leaf_index']}")


def _iso(ts: float) -> str:
    import datetime as dt

    if ts == float("-inf"):
        return "(nothing)"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
