"""What the command modules share: the stderr console, passphrase prompts, the shared output helper."""

from __future__ import annotations

import datetime as dt
import json
import sys

import click
from rich.console import Console

from streams.settings import Settings

console = Console(stderr=True, soft_wrap=True)  # messages are single lines, never re-wrapped


def open_settings_store(settings: Settings, *, create: bool = False):
    """The store ``settings`` name: ``METERSEAL_STORE`` (a directory or ``s3://BUCKET/PREFIX`` with
    ``METERSEAL_CATALOG``), by default ``<data-dir>/store``."""
    from streams.store.base import open_store

    return open_store(settings.store_location, catalog=settings.catalog, work_dir=settings.store_dir, create=create)


def passphrase_for(settings: Settings, *, confirm: bool = False) -> str:
    """METERSEAL_PASSPHRASE, else a prompt on a terminal, else a clear error."""
    if settings.passphrase:
        return settings.passphrase
    if sys.stdin.isatty():
        return click.prompt("Keystore passphrase", hide_input=True, confirmation_prompt=confirm)
    raise click.ClickException("no passphrase: set METERSEAL_PASSPHRASE (no terminal to ask on)")


def process_keys(settings: Settings, role: str, *, check: bool = False):
    """The owner's keys as this command may use them (``streams.kms.access.open_keys``): a passphrase keystore
    asks for METERSEAL_PASSPHRASE only when a secret is needed; a key service's keystore needs none."""
    from streams.kms.access import open_keys

    return open_keys(settings, role=role, passphrase=lambda: passphrase_for(settings), check=check)


def region_passphrase(*, confirm: bool = False) -> str:
    """METERSEAL_REGION_PASSPHRASE, else a prompt on a terminal, else a clear error."""
    import os

    if os.environ.get("METERSEAL_REGION_PASSPHRASE"):
        return os.environ["METERSEAL_REGION_PASSPHRASE"]
    if sys.stdin.isatty():
        return click.prompt("Region key passphrase", hide_input=True, confirmation_prompt=confirm)
    raise click.ClickException("no region passphrase: set METERSEAL_REGION_PASSPHRASE (no terminal to ask on)")


def print_result(result: dict, fmt: str) -> None:
    """A flat result dict as JSON or as aligned `key  value` lines."""
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            click.echo(f"{key:>24}  {value}")


def party_passphrase(*, confirm: bool = False) -> str:
    """METERSEAL_PARTY_PASSPHRASE, else a prompt on a terminal, else a clear error (a recipient's key file)."""
    import os

    if os.environ.get("METERSEAL_PARTY_PASSPHRASE"):
        return os.environ["METERSEAL_PARTY_PASSPHRASE"]
    if sys.stdin.isatty():
        return click.prompt("Party key passphrase", hide_input=True, confirmation_prompt=confirm)
    raise click.ClickException("no party passphrase: set METERSEAL_PARTY_PASSPHRASE (no terminal to ask on)")


def parse_day(_ctx, _param, value: str | None) -> dt.date | None:
    """click callback: a YYYY-MM-DD option as a date (None when not given), else a clear usage error."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a YYYY-MM-DD date") from None
