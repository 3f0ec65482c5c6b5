"""`meterseal connect`: the reference third-party client of Connect My Data (streams.connect.client).

    meterseal connect NAME --client-id ID --client-secret SECRET --authorize-url URL [--redirect-uri URI]
    meterseal connect fetch [NAME] --format espi|json -o FILE
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from streams.cli.common import console

_DIR = click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
                    default=Path("meterseal-connect"), show_default=True,
                    help="Where the third party keeps its saved connections (tokens; mode 0600).")


class _Group(click.Group):
    """``connect NAME ...`` runs ``connect authorize NAME ...``; ``connect fetch`` is a subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["authorize", *args]
        return super().parse_args(ctx, args)


@click.group("connect", cls=_Group)
def connect_group() -> None:
    """The reference third-party client: authorize with PKCE over a loopback redirect, then fetch ESPI feeds."""


@connect_group.command("authorize")
@click.argument("name")
@click.option("--client-id", required=True)
@click.option("--client-secret", required=True, envvar="METERSEAL_CONNECT_CLIENT_SECRET")
@click.option("--authorize-url", required=True, help="The custodian's /oauth/authorize URL.")
@click.option("--redirect-uri", default="http://127.0.0.1:8765/callback", show_default=True,
              help="The redirect URI registered for this client (a loopback listener answers it).")
@click.option("--scope", help="ESPI scope to ask for (default: interval data every 15 min, 13 months back).")
@click.option("--timeout", type=float, default=300.0, show_default=True)
@_DIR
def connect_authorize(name: str, client_id: str, client_secret: str, authorize_url: str, redirect_uri: str,
                      scope: str | None, timeout: float, directory: Path) -> None:
    """Print the authorization link, wait for the customer's consent, exchange the code and save the tokens."""
    from streams.connect.client import SCOPE, authorize, save

    def show(link: str) -> None:
        click.echo(f"open this link in a browser and consent:\n{link}")

    token = authorize(client_id=client_id, client_secret=client_secret, authorize_url=authorize_url,
                      redirect_uri=redirect_uri, scope=scope or SCOPE, open_link=show, timeout_s=timeout)
    path = save(directory, name, client_id=client_id, client_secret=client_secret, authorize_url=authorize_url,
                token=token)
    console.print(f"connected: tokens saved to {path}; subscription {token.get('resourceURI')}")


@connect_group.command("fetch")
@click.argument("name", required=False)
@click.option("--format", "fmt", type=click.Choice(["espi", "json"]), default="espi", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--published-min", help="Only intervals from this xs:dateTime on.")
@click.option("--published-max", help="Only intervals up to this xs:dateTime.")
@_DIR
def connect_fetch(name: str | None, fmt: str, output: Path, published_min: str | None, published_max: str | None,
                  directory: Path) -> None:
    """Pull the subscription's feed (refreshing the tokens when needed) as ESPI XML or JSON readings."""
    from streams.connect.client import fetch, load, save
    from streams.share.espi import parse_feed

    name, doc = load(directory, name)
    params = {k: v for k, v in (("published-min", published_min), ("published-max", published_max)) if v}
    data, token = fetch(doc, params=params)
    if token is not doc["token"]:
        save(directory, name, client_id=doc["client_id"], client_secret=doc["client_secret"],
             authorize_url=doc["token_url"], token=token)
    if fmt == "espi":
        output.write_bytes(data)
        console.print(f"{len(data):,} bytes of ESPI written to {output}")
    else:
        rows = parse_feed(data)
        output.write_text(json.dumps(rows, indent=1))
        console.print(f"{len(rows)} interval reading(s) written to {output}")
