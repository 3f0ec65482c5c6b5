"""``meterseal alerts`` (the alerts topic, live or past) and ``meterseal eval anomalies``."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

import click

from streams.anomaly.feed import follow_alerts, parse_since
from streams.ingest.broker import resolve
from streams.settings import Settings

_COLUMNS = ("detected", "severity", "kind", "meter_tok", "ts", "region", "score", "reason")
_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def _row(alert: dict[str, Any]) -> dict[str, Any]:
    detected = dt.datetime.fromtimestamp(alert["detected_at_ms"] / 1000, dt.timezone.utc)
    return {"detected": detected.strftime("%Y-%m-%d %H:%M:%S"), **{k: alert.get(k) for k in _COLUMNS[1:]},
            "score": f"{alert['score']:.2f}"}


def _table(rows: list[dict[str, Any]], title: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for c in _COLUMNS:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*(str(r[c]) if r[c] is not None else "" for c in _COLUMNS), style=_STYLE.get(r["severity"]))
    return table


@click.group("alerts", invoke_without_command=True)
@click.option("--follow", "-f", is_flag=True, help="Keep showing new alerts as they arrive (Ctrl-C to stop).")
@click.option("--since", help="Only alerts detected since then: 15m, 2h, 1d, or an ISO-8601 time.")
@click.option("--kind", multiple=True, help="Only these kinds (spike, theft, flatline, rollback, negative); repeatable.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="json: one alert per line, as on the topic.")
@click.option("--last", type=int, default=50, show_default=True, help="Rows kept on screen with --follow (table).")
@click.pass_context
def alerts_cmd(ctx: click.Context, follow: bool, since: str | None, kind: tuple[str, ...], fmt: str, last: int) -> None:
    """Anomaly alerts from the alerts topic: spikes, theft, stuck meters, register rollbacks.

    Meters appear as tokens (``meterseal search --meter ID`` computes one); consumption values are
    in alerts only when the worker runs with METERSEAL_ALERT_VALUES=1. Subcommands: ``silence`` (mute alerts
    for a while, with a reason), ``history`` (the store's alert history).
    """
    if ctx.invoked_subcommand is not None:
        return
    settings: Settings = ctx.obj
    try:
        start = parse_since(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    wanted = set(kind)

    def keep(a: dict[str, Any]) -> bool:
        return (start is None or a["detected_at_ms"] >= start * 1000) and (not wanted or a["kind"] in wanted)

    bootstrap = resolve(settings.broker, settings.data_dir)
    stream = (a for a in follow_alerts(bootstrap, idle=None if follow else 2.0) if keep(a))
    if fmt == "json":
        for a in stream:
            click.echo(json.dumps(a))
        return
    from rich.console import Console
    from rich.live import Live

    console = Console()
    rows: list[dict[str, Any]] = []
    if not follow:
        rows = [_row(a) for a in stream]
        console.print(_table(rows, f"{len(rows)} alert(s)"))
        return
    try:
        with Live(_table(rows, "waiting for alerts…"), console=console, refresh_per_second=4) as live:
            count = 0
            for a in stream:
                count += 1
                rows = (rows + [_row(a)])[-last:]
                live.update(_table(rows, f"{count} alert(s), newest last — Ctrl-C to stop"))
    except KeyboardInterrupt:
        pass


@click.group("eval")
def eval_group() -> None:
    """Evaluations on real data, each beside its baseline in the same run."""


@eval_group.command("anomalies")
@click.option("--limit", type=int, default=200_000, show_default=True, help="UCI readings replayed (≥ 200k for the headline figure).")
@click.option("--meters", type=int, default=5, show_default=True, help="Fleet size the UCI household series is cut into.")
@click.option("--rate", type=float, default=0.001, show_default=True, help="Chance per reading that an anomaly starts.")
@click.option("--seed", type=int, default=3, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def eval_anomalies(settings: Settings, limit: int, meters: int, rate: float, seed: int, fmt: str) -> None:
    """Online detector vs batch Isolation Forest on the real UCI stream with labelled injected anomalies.

    Precision is over flagged readings, recall over anomalies (composite F-score); overall figures
    from a stream with every kind injected, per-kind figures from one kind at a time. Isolation
    Forest gets the true anomaly share as its contamination, which production would not know.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from streams.anomaly.evaluate import evaluate
    from streams.ingest import sources
    from streams.pipeline import tune_gc

    err = Console(stderr=True)
    with err.status("reading the UCI stream"):
        readings = list(sources.uci_readings(meters=meters, limit=limit or None, regions=settings.regions))
    tune_gc()  # the worker's garbage-collector setting, so the detector's speed is the worker's
    with Progress(TextColumn("replaying 5 labelled streams"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err) as bar:
        task = bar.add_task("", total=5 * len(readings))
        report = evaluate(readings, rate=rate, seed=seed, progress=lambda: bar.advance(task))
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{report['readings']:,} UCI readings, {report['meters']} meters, anomalies injected at rate {rate}",
                  title_justify="left")
    for c in ("method", "kind", "anomalies", "found", "false alarms", "precision", "recall", "F1", "median delay"):
        table.add_column(c, justify="left" if c in ("method", "kind") else "right")
    for method in ("online", "isolation_forest"):
        result = report[method]
        for kind, r in (("all", result), *result["per_kind"].items()):
            delay = "" if r["delay_s_median"] is None else f"{r['delay_s_median']:.0f} s"
            table.add_row(method if kind == "all" else "", kind, str(r["anomalies"]), str(r["found"]), str(r["false_alarms"]),
                          f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", delay,
                          style="bold" if kind == "all" else None)
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    click.echo(f"online detector: {report['online']['readings_per_s']:,} readings/s (features + rules + model, one core)")
