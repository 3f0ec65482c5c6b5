"""``meterseal console``: serve the web console; ``meterseal console user add|list|remove|passwd|role|sessions``:
its accounts."""

from __future__ import annotations

import os
import sys
import time

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


def _password(name: str) -> str:
    """From METERSEAL_USER_PASSWORD, else a prompt (twice) on a terminal."""
    password = os.environ.get("METERSEAL_USER_PASSWORD")
    if not password:
        if not sys.stdin.isatty():
            raise click.ClickException("no password: set METERSEAL_USER_PASSWORD (no terminal to ask on)")
        password = click.prompt(f"Password for {name}", hide_input=True, confirmation_prompt=True)
    return password


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--meter", "meters", multiple=True, help="A customer's meter id (repeatable): its whole scope.")
@click.option("--oidc-subject", help="Log in through the identity provider as this `sub` (no local password).")
@click.pass_obj
def user_add(settings: Settings, name: str, role: str, meters: tuple[str, ...], oidc_subject: str | None) -> None:
    """Add an account; the password comes from METERSEAL_USER_PASSWORD or a prompt (12+ characters)."""
    password = _password(name) if oidc_subject is None else None
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
    """Remove an account; its sessions end at once (a later account of the same name is another account)."""
    try:
        UserStore.for_data_dir(settings.data_dir).remove(name)
    except MeterSealError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"removed {name}; its console sessions have ended")


@user_group.command("passwd")
@click.argument("name")
@click.pass_obj
def user_passwd(settings: Settings, name: str) -> None:
    """A new password (METERSEAL_USER_PASSWORD or a prompt); the account's sessions end at once."""
    users = UserStore.for_data_dir(settings.data_dir)
    if users.get(name) is None:
        raise click.ClickException(f"no user {name!r} (meterseal console user list)")
    try:
        users.passwd(name, _password(name))
    except MeterSealError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"new password for {name}; its console sessions have ended")


@user_group.command("role")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--meter", "meters", multiple=True, help="A customer's meter id (repeatable): its whole scope.")
@click.pass_obj
def user_role(settings: Settings, name: str, role: str, meters: tuple[str, ...]) -> None:
    """Give an account another role (and meters); its sessions end at once."""
    try:
        user = UserStore.for_data_dir(settings.data_dir).set_role(name, role, meters=meters)
    except MeterSealError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{user.name} is now {user.role}{' of meters ' + ', '.join(user.meters) if user.meters else ''}; "
               "its console sessions have ended")


@user_group.command("sessions")
@click.argument("name")
@click.option("--end", is_flag=True, help="End every session of the account now, in every running console.")
@click.pass_obj
def user_sessions(settings: Settings, name: str, end: bool) -> None:
    """When the account's sessions were last ended; with --end, end them all now (sessions live in the
    console's memory: each ends at its next request, a live alert stream within 5 seconds)."""
    users = UserStore.for_data_dir(settings.data_dir)
    try:
        if end:
            users.end_sessions(name)
            click.echo(f"ended every console session of {name}")
            return
        ended = users.sessions_ended_at(name)
    except MeterSealError as exc:
        raise click.ClickException(str(exc)) from exc
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ended)) if ended else "never"
    click.echo(f"{name}: sessions last ended {when} (--end ends them all now)")
