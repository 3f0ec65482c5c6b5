"""``meterseal console``: serve the web console; ``meterseal console user add|list|remove``: its accounts."""

from __future__ import annotations

import os
import sys

import click

from streams import capabilities
from streams.cli.common import console, passphrase_for
from streams.console.users import ROLES, UserStore
from streams.exceptions import MeterSealError
from streams.settings import Settings


@click.group("console", invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. The console holds the owner key: bind beyond loopback only behind TLS.")
@click.option("--port", type=int, default=8800, show_default=True)
@click.option("--oidc-issuer", envvar="METERSEAL_OIDC_ISSUER", help="OpenID Connect issuer URL (optional login).")
@click.option("--oidc-client-id", envvar="METERSEAL_OIDC_CLIENT_ID")
@click.option("--oidc-role-claim", envvar="METERSEAL_OIDC_ROLE_CLAIM", default="meterseal_role", show_default=True,
              help="ID-token claim that names the role.")
@click.pass_context
def console_group(ctx: click.Context, host: str, port: int, oidc_issuer: str | None, oidc_client_id: str | None,
                  oidc_role_claim: str) -> None:
    """The web console: pages per role (operator, customer, auditor, analyst, admin), live alerts, JSON API.

    It unlocks the keystore with METERSEAL_PASSPHRASE (the data owner's trust zone) and enforces every
    access rule on the server. Accounts: `meterseal console user add NAME --role ROLE`.
    """
    if ctx.invoked_subcommand is not None:
        return
    settings: Settings = ctx.obj
    from streams.console.server import serve

    oidc = None
    if oidc_issuer:
        from streams.console.oidc import OidcConfig

        secret = os.environ.get("METERSEAL_OIDC_CLIENT_SECRET")
        if not oidc_client_id or not secret:
            raise click.ClickException("OIDC needs --oidc-client-id and METERSEAL_OIDC_CLIENT_SECRET")
        oidc = OidcConfig(oidc_issuer, oidc_client_id, secret, role_claim=oidc_role_claim)
    if not UserStore.for_data_dir(settings.data_dir).list() and oidc is None:
        console.print("[yellow]no console accounts yet[/]: add one with `meterseal console user add NAME --role admin`")
    try:
        serve(settings, lambda: passphrase_for(settings), host=host, port=port, oidc=oidc, registry=capabilities.registry(),
              ready=lambda url: console.print(f"[green]console[/] on {url} (Ctrl-C to stop)"))
    except MeterSealError as exc:
        raise click.ClickException(str(exc)) from exc


@console_group.group("user")
def user_group() -> None:
    """Console accounts (Argon2id password hashes in <data-dir>/console/users.json)."""


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--meter", "meters", multiple=True, help="A customer's meter id (repeatable): its whole scope.")
@click.option("--oidc-subject", help="Log in through the identity provider as this `sub` (no local password).")
@click.pass_obj
def user_add(settings: Settings, name: str, role: str, meters: tuple[str, ...], oidc_subject: str | None) -> None:
    """Add an account; the password comes from METERSEAL_USER_PASSWORD or a prompt (12+ characters)."""
    password = None
    if oidc_subject is None:
        password = os.environ.get("METERSEAL_USER_PASSWORD")
        if not password:
            if not sys.stdin.isatty():
                raise click.ClickException("no password: set METERSEAL_USER_PASSWORD (no terminal to ask on)")
            password = click.prompt(f"Password for {name}", hide_input=True, confirmation_prompt=True)
    try:
        user = UserStore.for_data_dir(settings.data_dir).add(name, role, password=password, meters=meters,
                                                             subject=oidc_subject)
    except MeterSealError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"added {user.name} ({user.role}{', meters ' + ', '.join(user.meters) if user.meters else ''})")


@user_group.command("list")
@click.pass_obj
def user_list(settings: Settings) -> None:
    """Accounts with their roles and meters (never a hash)."""
    for user in UserStore.for_data_dir(settings.data_dir).list():
        login = f"oidc:{user.subject}" if user.subject else "password"
        click.echo(f"{user.name}\t{user.role}\t{','.join(user.meters) or '-'}\t{login}")


@user_group.command("remove")
@click.argument("name")
@click.pass_obj
def user_remove(settings: Settings, name: str) -> None:
    """Remove an account; its sessions end at their next request."""
    try:
        UserStore.for_data_dir(settings.data_dir).remove(name)
    except MeterSealError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"removed {name}")
