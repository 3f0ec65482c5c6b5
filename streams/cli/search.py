"""``meterseal search`` and ``meterseal sql``."""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Any

import click

from streams.cli.common import open_settings_store, parse_day, process_keys
from streams.keys.keystore import Keystore
from streams.store.query import Query, Reader
from streams.settings import Settings

_TABLE_COLUMNS = ("record_id", "kind", "meter_id", "ts", "kwh", "register_kwh", "Date", "Bill No.", "Meter No.",
                  "Billed Unit", "Total Due", "region", "Category", "category", "sealed_bytes", "ledger")
_SEALED_FIELDS = ("record_id", "kind", "region", "category", "key_id", "meter_tok", "account_tok", "day_tok",
                  "month_tok", "year_tok", "leaf_index")


def _reader(settings: Settings, *, sealed: bool) -> Reader:
    keys = process_keys(settings, "reader")
    store = open_settings_store(settings)
    keys.usage.attach(store)
    if sealed:  # tokens only: the index key, no owner key
        return Reader(store, index_key=keys.index_key())
    return Reader(store, keys.unlocked())


def _emit(records: list[dict[str, Any]], fmt: str, *, title: str = "", columns: list[str] | None = None,
          narrow: bool = False) -> None:
    """Print records as JSON lines, CSV or a table. ``columns``: their order (default: as first seen);
    ``narrow`` (search hits): a table keeps only the columns that identify a hit, as a terminal is narrow."""
    if fmt == "json":
        for r in records:
            click.echo(json.dumps(r, ensure_ascii=False, default=str))
        return
    if columns is None:
        columns = list(dict.fromkeys(k for r in records for k in r))
    if fmt == "table" and narrow and set(_TABLE_COLUMNS) & set(columns):
        columns = [c for c in _TABLE_COLUMNS if c in columns]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
        click.echo(out.getvalue(), nl=False)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(str(c), overflow="fold")
    for r in records:
        table.add_row(*(str(r.get(c, "")) for c in columns))
    Console().print(table)


_FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)


@click.command("search")
@click.option("--date", callback=parse_day, help="One day, YYYY-MM-DD.")
@click.option("--from", "start", callback=parse_day, help="First day of a range (with --to).")
@click.option("--to", "end", callback=parse_day, help="Last day of a range, inclusive.")
@click.option("--meter", help="Meter id (readings) or meter number (bills).")
@click.option("--account", help="Account id.")
@click.option("--region", help="Region (kept in clear).")
@click.option("--kind", type=click.Choice(["all", "readings", "bills"]), default="all", show_default=True)
@click.option("--sealed", is_flag=True, help="List hits sealed (tokens and ids) without opening them.")
@click.option("--verify", is_flag=True, help="Also check each hit's inclusion in its signed ledger log.")
@_FORMAT
@click.pass_obj
def search_cmd(settings: Settings, date, start, end, meter, account, region, kind, sealed, verify, fmt) -> None:
    """Find every matching record. Tokens are computed here from the index key; the store sees only tokens.

    Hits are opened (AEAD-verified) with the owner key and printed under the source's own field names
    (the 17 seed columns for bills), with their record_id; --sealed lists them without opening.
    """
    reader = _reader(settings, sealed=sealed)
    kinds = ["readings", "bills"] if kind == "all" else [kind]
    hits = reader.search(Query(date, start, end, meter, account, region), kinds=kinds)
    if sealed:
        records = [{k: h.get(k) for k in _SEALED_FIELDS} | {"sealed_bytes": len(h["envelope"])} for h in hits]
    else:
        records = [{"record_id": h["record_id"], **plain} for h, plain in zip(hits, reader.open_hits(hits))]
    if verify:
        from streams.store.audit import inclusion_status

        status = inclusion_status(reader.store, Keystore.load(settings.data_dir).ledger_verifier, hits)
        for record in records:
            record["ledger"] = status[record["record_id"]]
    _emit(records, fmt, title=f"{len(records)} match(es)", narrow=True)
    click.echo(f"{len(records)} match(es)", err=True)
    if verify and any(r["ledger"] == "TAMPERED" for r in records):
        click.echo("some hits are not in the signed ledger as stored: run `meterseal ledger verify`", err=True)
        sys.exit(1)


@click.command("sql")
@click.argument("statement")
@_FORMAT
@click.pass_obj
def sql_cmd(settings: Settings, statement: str, fmt: str) -> None:
    """Run SQL on the store: views readings, bills, dlq, readings_open, bills_open, the rollups usage_hourly_region,
    usage_hourly_meter and usage_daily_meter (and their tables rollup_region, rollup_meter); functions day_token(),
    month_token(), year_token(), meter_token(), account_token(), unseal(...)."""
    from streams.rollups.read import create_views

    reader = _reader(settings, sealed=False)
    con = reader.connect()
    create_views(con, min_meters=settings.rollup_min_meters, can_open=reader.can_open)
    cur = con.execute(statement)
    columns = [d[0] for d in cur.description] if cur.description else []
    records = [dict(zip(columns, row)) for row in cur.fetchall()]
    for r in records:
        for k, v in r.items():
            if isinstance(v, (bytes, bytearray)):
                r[k] = v.hex()
    _emit(records, fmt, columns=columns)
    if fmt == "table":
        click.echo(f"{len(records)} row(s)", err=True)
    sys.stdout.flush()
