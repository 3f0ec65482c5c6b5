"""``meterseal dp``: differentially private aggregates under persisted budgets (``streams.privacy.engine``)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from streams.cli.common import console, open_settings_store, parse_day, process_keys
from streams.settings import Settings

_fmt = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)


def _table(rows: list[dict[str, Any]], columns: list[str], title: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None)
    for c in columns:
        table.add_column(c, justify="right" if c not in ("region", "hour", "day", "analyst", "dataset", "meter_id",
                                                          "period", "bill_no", "meter_no") else "left")
    for r in rows:
        table.add_row(*[_cell(r.get(c)) for c in columns])
    Console(soft_wrap=True).print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value else f"{value:,.3f}"
    if isinstance(value, list):
        return " / ".join(_cell(v) for v in value)
    return "" if value is None else str(value)


def _signer_and_keys(settings: Settings):
    """The owner's keys (``streams.kms``) and their checkpoint signer (budget and release events are signed)."""
    keys = process_keys(settings, "console")
    return keys, keys.signer()


@click.group("dp")
def dp_group() -> None:
    """Differentially private aggregates of readings under per-analyst and per-data-set zCDP budgets.

    \b
    The data owner sets budgets and runs queries (the owner keys open the readings); an analyst gets
    only the noisy answers, their noise scales and 95 % intervals. Every spend is written to the store
    and to the ledger's privacy log before an answer is released; a query past either budget is refused
    (exit code 2) and releases nothing.
    """


@dp_group.group("budget")
def dp_budget() -> None:
    """Set and show privacy budgets (total rho, zero-concentrated DP)."""


@dp_budget.command("set")
@click.option("--analyst", help="Analyst whose total budget to set.")
@click.option("--dataset", help="Data set whose total budget (over all analysts) to set: `readings`.")
@click.option("--rho", type=float, required=True, help="Total zCDP rho (spends so far still count).")
@click.pass_obj
def dp_budget_set(settings: Settings, analyst: str | None, dataset: str | None, rho: float) -> None:
    """The data owner sets a budget (a ledgered event)."""
    from streams.privacy import engine

    _, signer = _signer_and_keys(settings)
    event = engine.set_budget(settings.store_dir, signer=signer, rho=rho, analyst=analyst, dataset=dataset)
    console.print(f"budget of {'analyst ' + analyst if analyst else 'data set ' + str(dataset)} set to rho {rho:g} "
                  f"(privacy log leaf {event['leaf_index']})")


@dp_budget.command("show")
@click.option("--analyst", help="Only this analyst.")
@_fmt
@click.pass_obj
def dp_budget_show(settings: Settings, analyst: str | None, fmt: str) -> None:
    """Budgets, spent and left, per analyst and per data set (with the (epsilon, 1e-6)-DP equivalent). No key needed."""
    from streams.privacy import engine

    status = engine.budget_status(settings.store_dir, default_dataset_rho=settings.dp_dataset_rho, analyst=analyst)
    if fmt == "json":
        click.echo(json.dumps(status, indent=2))
        return
    cols = ["rho_budget", "rho_spent", "rho_left", "epsilon_spent_at_delta_1e-6"]
    _table(status["analysts"], ["analyst", *cols, "releases"], "analysts")
    _table(status["datasets"], ["dataset", *cols], "data sets")


@dp_group.command("query")
@click.option("--analyst", required=True, help="Who asks: the spend is charged to this analyst and to the data set.")
@click.option("--metric", type=click.Choice(["sum", "mean", "count"]), required=True, help="kWh sum, mean kWh per reading, or readings.")
@click.option("--by", "by", default="region", show_default=True, type=click.Choice(["region", "region,hour", "region,day"]))
@click.option("--from", "start", required=True, callback=parse_day, help="First day, YYYY-MM-DD (UTC).")
@click.option("--to", "end", required=True, callback=parse_day, help="Last day, YYYY-MM-DD (UTC), inclusive.")
@click.option("--rho", type=float, default=0.1, show_default=True, help="zCDP cost of this query.")
@click.option("--clamp-kwh", type=float, help="Per-reading kWh bound. [env METERSEAL_DP_CLAMP_KWH; default 2.0]")
@click.option("--per-hour", type=int, help="Readings per meter per hour counted. [env METERSEAL_DP_PER_HOUR; default 4]")
@click.option("--hour-kwh", type=float, help="Clamp each meter's hourly kWh sum to [0, this] instead of each reading, "
              "reading the hourly rollups (no reading opened; tighter sensitivity for the same privacy).")
@_fmt
@click.pass_obj
def dp_query(settings: Settings, analyst: str, metric: str, by: str, start: dt.date, end: dt.date, rho: float,
             clamp_kwh: float | None, per_hour: int | None, hour_kwh: float | None, fmt: str) -> None:
    """Answer one DP query from the sealed store; prints each group's noisy value, noise scale and 95 % interval."""
    from streams.privacy import engine

    keys, signer = _signer_and_keys(settings)
    query = engine.DPQuery(metric=metric, by=tuple(by.split(",")), start=start, end=end, regions=settings.regions,
                           bounds=engine.Bounds(clamp_kwh=clamp_kwh or settings.dp_clamp_kwh,
                                                per_hour=per_hour or settings.dp_per_hour, hour_kwh=hour_kwh))
    answer = engine.answer_query(settings.store_dir, owner=keys.unlocked(), signer=signer,
                                 analyst=analyst, query=query, rho=rho, default_dataset_rho=settings.dp_dataset_rho,
                                 records=open_settings_store(settings))  # budgets stay in the data dir
    out = answer.to_dict()
    if fmt == "json":
        click.echo(json.dumps(out, indent=2))
        return
    _table(answer.rows, [*query.by, "value", "noise_scale", "low", "high"],
           f"{metric} of kWh by {by}, {start} to {end} (rho {answer.rho:g}, 95 % intervals)")
    console.print(f"bounds: {out['bounds']}; privacy unit: one meter; left: analyst rho "
                  f"{answer.remaining_analyst:.6g}, data set rho {answer.remaining_dataset:.6g}")
