"""`meterseal subject`: a data subject's data — erasing it (GDPR Art. 17) by crypto-shredding."""

from __future__ import annotations

import json
import sys

import click

from streams import capabilities
from streams.cli.common import console, open_settings_store, process_keys
from streams.erasure.job import Owner, erase
from streams.erasure.subjects import Reach
from streams.exceptions import MeterSealError
from streams.settings import Settings


@click.group("subject")
def subject_group() -> None:
    """A data subject's data: erase a customer (a meter or an account) everywhere meterseal holds it."""


@subject_group.command("erase")
@click.option("--meter", help="Erase the customer of this meter (and every account its records name).")
@click.option("--account", help="Erase this account (and every meter its records name).")
@click.option("--reason", default="unspecified", show_default=True,
              help="A reason code, logged in clear (e.g. gdpr-art17, customer-request): never a name or free text.")
@click.option("--yes", is_flag=True, help="Do not ask before erasing (needed when not on a terminal).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def subject_erase(settings: Settings, meter: str | None, account: str | None, reason: str, yes: bool, fmt: str) -> None:
    """Erase a customer: fence it, destroy its subject keys (every copy of its records anywhere becomes unreadable),
    delete its records, dead letters and tokens, revoke grants naming it, drop what every capability holds of it,
    and log the erasure (its leaf names no person). The ledger stays checkable: the records' leaves stay as
    hashes. A job cut short finishes when run again; erasing again says when it was erased.

    \b
    Erasing a meter erases its customer: the accounts its records name (whose subject keys sealed them) and
    those accounts' other meters. You are shown the reach before anything changes.
    """
    if (meter is None) == (account is None):
        raise click.UsageError("give exactly one of --meter ID or --account ID")
    kind, subject_id = ("meter", meter) if meter is not None else ("account", account)
    keys = process_keys(settings, "admin")  # a passphrase keystore, or a key service's admin token
    unlocked = keys.unlocked()

    def confirm(reach: Reach) -> bool:
        what = f"{len(reach.meters)} meter(s) {', '.join(sorted(reach.meters))}"
        if reach.accounts:
            what += f" and {len(reach.accounts)} account(s) {', '.join(sorted(reach.accounts))}"
        console.print(f"erasing {kind} {subject_id} reaches {what}")
        if yes:
            return True
        if not sys.stdin.isatty():
            raise MeterSealError("not on a terminal: pass --yes to erase without being asked")
        return click.confirm("Erase them? This cannot be undone", default=False, err=True)

    report = erase(open_settings_store(settings), owner=Owner(unlocked.index_key, unlocked.dek_unwrap),
                   signers=[keys.signer()], registry=capabilities.registry(), kind=kind,
                   subject_id=subject_id, reason=reason, grace_s=settings.erasure_grace_s, data_dir=settings.data_dir,
                   extra={"settings": settings, "connect_public_url": settings.connect_public_url}, confirm=confirm,
                   progress=lambda stage, detail: console.print(f"erasure: {stage} done — {detail}"))
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    elif report.get("already_erased"):
        click.echo(report["detail"] + f" (at {report['erased_at']}, erasure log leaf {report['leaf_index']})")
    else:
        records = ", ".join(f"{n} {t}" for t, n in report["records"].items())
        click.echo(f"erased {kind} {subject_id}: {records}; {report['subject_key_objects']} subject-key object(s) "
                   f"destroyed; {report['grants_revoked']} grant(s) revoked; erasure log leaf {report['leaf_index']} "
                   f"(erasure {report['erasure_id']})")
