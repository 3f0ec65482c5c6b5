"""``meterseal alerts silence`` and ``meterseal alerts history``: silences and the alert history in the store."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import time

import click

from streams.cli.common import open_settings_store
from streams.exceptions import MeterSealError
from streams.settings import Settings


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def recent_labels(store, *, hours: float = 24.0) -> list[dict[str, str]]:
    """The labels of the alerts of the last ``hours`` in the history (what a new silence is checked against)."""
    from streams.notify.dispatch import labels_of
    from streams.notify.history import search
    from streams.store.base import connect

    rows = search(connect(store), since_ms=int((time.time() - hours * 3600) * 1000), limit=100_000)
    return [labels_of({**r, "meter_tok": r["meter_tok"]}) for r in rows]


@click.group("silence", invoke_without_command=True)
@click.option("--matcher", "-m", "matchers", multiple=True, help="label=value or label!=value over kind, severity, "
              "region, meter (a meter token); repeat for several (all must match).")
@click.option("--for", "duration", default="2h", show_default=True, help="How long: 30m, 2h, 1d.")
@click.option("--reason", help="Why (required): who is on it, what is being done.")
@click.option("--by", "by", default=None, help="Who silences [default: your login name].")
@click.pass_context
def silence(ctx: click.Context, matchers: tuple[str, ...], duration: str, reason: str | None, by: str | None) -> None:
    """Mute the alerts matching every --matcher for a while (--for), with a --reason; notifications leave them out
    until the silence ends. Without options: list the silences. A silence that matches no alert of the last
    24 hours is made, with a warning."""
    if ctx.invoked_subcommand is not None:
        return
    from streams.notify import silences
    from streams.notify.rules import duration as parse_duration

    settings: Settings = ctx.obj
    store = open_settings_store(settings)
    if not matchers:
        now = time.time()
        for s in silences.load_all(store.blobs):
            state = "active" if s.active(now) else "expired" if s.ends_at <= now else "pending"
            click.echo(f"{s.id}  {state:7}  until {_when(s.ends_at)}  {' '.join(s.matchers)}  by {s.created_by}: {s.reason}")
        return
    if not reason:
        raise click.BadParameter("say why (who is on it, what is being done)", param_hint="--reason")
    try:
        seconds = parse_duration(duration, "--for")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--for") from None
    made = silences.create(store.blobs, matchers=matchers, duration_s=seconds, reason=reason,
                           created_by=by or getpass.getuser())
    hits = silences.matching(made.matchers, recent_labels(store))
    click.echo(json.dumps({"id": made.id, "matchers": list(made.matchers), "until": _when(made.ends_at),
                           "matches_recent_alerts": hits}))
    if hits == 0:
        click.echo("warning: this silence matches none of the alerts of the last 24 hours (check the matchers: "
                   "kind, severity, region, meter)", err=True)


@silence.command("expire")
@click.argument("silence_id")
@click.pass_obj
def silence_expire(settings: Settings, silence_id: str) -> None:
    """End a silence now (it stays on record)."""
    from streams.notify import silences

    ended = silences.expire(open_settings_store(settings).blobs, silence_id)
    click.echo(f"{ended.id} ended at {_when(ended.ends_at)}")


@click.command("history")
@click.option("--meter", help="A meter id (turned into its token here; needs METERSEAL_PASSPHRASE).")
@click.option("--region")
@click.option("--kind")
@click.option("--since", help="15m, 2h, 1d, or an ISO-8601 time.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.pass_obj
def history_cmd(settings: Settings, meter: str | None, region: str | None, kind: str | None, since: str | None,
                limit: int) -> None:
    """The alert history kept in the store, newest first, one JSON object per line."""
    from streams.anomaly.feed import parse_since
    from streams.notify.history import search
    from streams.store.base import connect

    index = None
    if meter:
        from streams.cli.common import process_keys
        from streams.crypto.tokens import BlindIndex

        index = BlindIndex(process_keys(settings, "reader").index_key())
    try:
        start = parse_since(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    store = open_settings_store(settings)
    if store.is_empty("alerts"):
        raise MeterSealError("no alert history in this store yet (the worker keeps it as alerts arrive)")
    for row in search(connect(store), index=index, meter=meter, region=region, kind=kind,
                      since_ms=None if start is None else int(start * 1000), limit=limit):
        click.echo(json.dumps(row))
