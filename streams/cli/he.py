"""``meterseal bill --encrypted`` (BFV slab billing) and ``meterseal forecast --encrypted`` (CKKS): the
homomorphic parts of ``streams.privacy``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from streams.cli.common import console, open_settings_store, process_keys
from streams.cli.dp import _cell, _fmt, _table
from streams.settings import Settings


@click.command("bill")
@click.option("--encrypted", is_flag=True, help="Compute the bills under BFV (else: in the clear, by the same tariff).")
@click.option("--kind", type=click.Choice(["bills", "readings", "rollups"]), default="bills", show_default=True,
              help="Bill each stored bill's Billed Unit, each meter-month of readings, or of daily rollups (no reading opened).")
@click.option("--period", help="Only this month, YYYY-MM.")
@click.option("--tariff", "tariff_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Tariff TOML. [default: the BESCOM slabs, streams/privacy/bescom.toml]")
@_fmt
@click.pass_obj
def bill_cmd(settings: Settings, encrypted: bool, kind: str, period: str | None, tariff_path: Path | None, fmt: str) -> None:
    """Slab bills from the store; with --encrypted the billing side sees only BFV ciphertexts and public keys."""
    from streams.privacy import billrun, tariff

    keys = process_keys(settings, "reader")
    tar = tariff.load_tariff(tariff_path)
    usage = billrun.usage_from_store(open_settings_store(settings), keys.unlocked(), kind=kind, period=period)
    if encrypted:
        result = billrun.run_encrypted(usage, tar)
    else:
        result = billrun.run_clear(usage, tar)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        ident = ["bill_no", "meter_no"] if kind == "bills" else ["meter_id"]  # (readings and rollups: per meter-month)
        _table(result["rows"], [*ident, "period", "units_kwh", "amount_paise", "amount"], f"{tar.name}")
        if encrypted:
            f = result["figures"]
            console.print(f"{result['identical_to_clear']}/{result['customers']} identical to the clear bill to the paisa; "
                          f"{f['bills_per_s']:.0f} bills/s, billing side {f['billing_side_s'] * 1e3:.1f} ms, "
                          f"{f['usage_ciphertext_bytes_per_customer']:.0f} ciphertext bytes per customer")
    if encrypted and result["identical_to_clear"] != result["customers"]:
        raise click.ClickException("an encrypted bill differs from the clear computation")


@click.command("forecast")
@click.option("--encrypted", is_flag=True, required=True, help="Evaluate on a CKKS ciphertext of the meter's window.")
@click.option("--meter", required=True, help="Meter id.")
@click.option("--rounds", type=int, default=3, show_default=True, help="Federated rounds to train the model.")
@click.option("--model", type=click.Choice(["linear", "square"]), default="linear", show_default=True,
              help="Linear (CKKS poly modulus 8192) or a square-activation MLP (16384, ~30x slower).")
@_fmt
@click.pass_obj
def forecast_cmd(settings: Settings, encrypted: bool, meter: str, rounds: int, model: str, fmt: str) -> None:
    """One encrypted forecast round trip: gateway encrypts, utility evaluates, gateway decrypts."""
    from streams.privacy import he_forecast

    if not encrypted:
        raise click.UsageError("only --encrypted forecasts are served here (plaintext: `meterseal fl run`)")
    keys = process_keys(settings, "reader")
    out = he_forecast.forecast_from_store(open_settings_store(settings), keys.unlocked(), meter=meter,
                                          regions=settings.regions, rounds=rounds, model=model)
    if fmt == "json":
        click.echo(json.dumps(out, indent=2))
    else:
        for key, value in out.items():
            click.echo(f"{key:>22}  {_cell(value) if not isinstance(value, dict) else json.dumps(value)}")
