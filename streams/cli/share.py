"""`meterseal party`, `grant`, `share` and `export`: sharing sealed data with other parties (streams.share).

The owner registers parties and makes grants (keystore passphrase); a recipient makes its key pair and opens
bundles or follows a continuous share with its party key alone (METERSEAL_PARTY_PASSPHRASE), offline.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import sys
import time
from pathlib import Path

import click

from streams.cli.common import console, open_settings_store, party_passphrase, process_keys
from streams.cli.ledger import checked_text, trusted_verifiers
from streams.exceptions import ShareError
from streams.settings import Settings
from streams.share import espi
from streams.share.grants import Grant, create_grant, get_grant, list_grants, revoke_grant
from streams.share.parties import PartyKey, PartyPublicKey, add_party, get_party, list_parties

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}$")
_fmt = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)


# --- parties ----------------------------------------------------------------------------------------------


@click.group("party")
def party_group() -> None:
    """Recipients of shares: their key pairs (made by them) and the owner's registry of them."""


@party_group.command("keygen")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for party.key (private, sealed) and party.pub (public).")
def party_keygen(out: Path) -> None:
    """Make a party key pair (HPKE ML-KEM-768+X25519); the private key is sealed with METERSEAL_PARTY_PASSPHRASE."""
    key_path, pub_path = PartyKey.generate().save(out, party_passphrase(confirm=True))
    console.print(f"wrote {key_path} (private: keep it) and {pub_path} (public: give it to the data owner)")
    click.echo(PartyPublicKey.parse(pub_path.read_text()).fingerprint)


@party_group.command("add")
@click.argument("name")
@click.option("--public-key", "public_key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The party's party.pub (optional for a third party that only wants ESPI feeds).")
@click.option("--redirect-uri", help="Register NAME as an OAuth 2.0 client (Connect My Data) with this exact "
              "redirect URI (https, or http on loopback).")
@click.option("--notify-uri", help="Where signed ESPI BatchList notifications are POSTed.")
@click.option("--scope", default="FB=1_3_4_5_13_14_39;IntervalDuration=900;BlockDuration=daily;HistoryLength=34128000",
              show_default=True, help="The widest ESPI scope the party may ask for (HistoryLength in seconds).")
@click.option("--purpose", default="", help="Why the party asks (shown on the consent page).")
@click.option("--status", type=click.Choice(["production", "review"]), default="production", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def party_add(settings: Settings, name: str, public_key: Path | None, redirect_uri: str | None, notify_uri: str | None,
              scope: str, purpose: str, status: str, fmt: str) -> None:
    """Register a party (owner): its public key for bundles, and/or --redirect-uri for Connect My Data, which
    prints client_id and client_secret (shown once, stored only as a hash)."""
    key = PartyPublicKey.parse(public_key.read_text()) if public_key else None
    if redirect_uri is None:
        if key is None:
            raise click.UsageError("give --public-key FILE (bundles) and/or --redirect-uri URI (Connect My Data)")
        party = add_party(open_settings_store(settings), name, key)
        console.print(f"party {party.name} registered (key {party.fingerprint[:16]}…)")
        return
    from streams.connect.clients import register_client

    client, secret = register_client(open_settings_store(settings), name, redirect_uri=redirect_uri, scope=scope,
                                     public_key=key, notify_uri=notify_uri, status=status, purpose=purpose)
    _print_credentials(client, secret, fmt)


def _print_credentials(client, secret: str, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps({**client.public(), "client_secret": secret}, indent=2))
    else:
        click.echo(f"client_id\t{client.client_id}\nclient_secret\t{secret}")
    console.print("the client secret is shown this once and stored only as a hash: hand it to the party now")


@party_group.command("credentials")
@click.argument("name")
@click.option("--rotate", is_flag=True, required=True, help="Issue a new client secret (the old one stops working).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def party_credentials(settings: Settings, name: str, rotate: bool, fmt: str) -> None:
    """A new client secret for a third party (owner)."""
    from streams.connect.clients import rotate_secret

    client, secret = rotate_secret(open_settings_store(settings), name)
    _print_credentials(client, secret, fmt)


@party_group.command("status")
@click.argument("name")
@click.argument("status", type=click.Choice(["review", "production", "on-hold", "revoked"]))
@click.pass_obj
def party_status(settings: Settings, name: str, status: str) -> None:
    """Set a third party's status (ESPI ApplicationInformation): only production gets authorizations and data;
    revoked also revokes every authorization it holds, and tells it."""
    connect = _connect(settings)
    client, ended = connect.set_party_status(name, status)
    connect.outbox.run_due()
    console.print(f"party {client.name} is {client.status}" + (f"; {len(ended)} authorization(s) revoked" if ended else ""))


def _connect(settings: Settings):
    from streams.connect.notify import Outbox
    from streams.connect.service import Connect

    keys = _owner(settings)
    signer = keys.signer()
    return Connect(open_settings_store(settings), settings.data_dir, signer=signer,
                   index_key=keys.index_key(),
                   outbox=Outbox.for_data_dir(settings.data_dir, signer, base_s=settings.connect_retry_s, timeout_s=3),
                   public_url=settings.connect_public_url, meter_token=lambda m: _token(keys, m),
                   controller=f"{settings.app_id} data custodian")


def _token(keys, meter: str) -> str:
    from streams.crypto.tokens import BlindIndex

    return BlindIndex(keys.index_key()).meter(meter)


@party_group.command("list")
@_fmt
@click.pass_obj
def party_list(settings: Settings, fmt: str) -> None:
    """Registered parties."""
    parties = list_parties(open_settings_store(settings))
    if fmt == "json":
        click.echo(json.dumps([{k: v for k, v in p.to_dict().items() if k != "public_key"} for p in parties], indent=2))
        return
    for p in parties:
        click.echo(f"{p.name}\t{p.fingerprint[:16]}…\t{p.public_key.scheme}\tadded {_iso(p.added_at)}")


# --- grants ------------------------------------------------------------------------------------------------


@click.group("grant")
def grant_group() -> None:
    """Grants: what a party may receive and until when; each one and each revocation is a consent-log leaf."""


def _owner(settings: Settings):
    """The owner's keys (a passphrase keystore's, or a key service's: ``streams.kms``)."""
    return process_keys(settings, "console")


def _print_grant(grant: Grant, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps({k: v for k, v in grant.to_dict().items() if k != "party_public_key"}, indent=2))
    else:
        click.echo(f"{grant.grant_id}\t{grant.state}\t{grant.party}\t{grant.scope_text()}"
                   f"\tfields={','.join(grant.fields) if grant.fields else 'all'}\texpires={grant.expires_at or '-'}")


@grant_group.command("create")
@click.option("--to", "to", multiple=True, required=True,
              help="The party's name — and, as in `--from 2024-01-01 --to 2024-01-31`, the range's last day.")
@click.option("--party", help="The party's name (instead of the first --to).")
@click.option("--meter", "meters", multiple=True, help="A meter id (repeat for several).")
@click.option("--account", "accounts", multiple=True, help="An account id (repeat for several).")
@click.option("--region", help="Every meter of a region.")
@click.option("--from", "start", required=True, help="First day, YYYY-MM-DD.")
@click.option("--until", help="Last day, YYYY-MM-DD (or give it as the date --to).")
@click.option("--kind", type=click.Choice(["readings", "bills"]), default="readings", show_default=True)
@click.option("--fields", help="Comma-separated source field names to share (default: all), e.g. 'Meter No.,Date,Billed Unit'.")
@click.option("--purpose", default="", help="Why the party gets the data (kept in the consent log).")
@click.option("--expires", help="ISO-8601 date or time after which the grant releases nothing.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="json", show_default=True)
@click.pass_obj
def grant_create(settings: Settings, to: tuple[str, ...], party: str | None, meters: tuple[str, ...],
                 accounts: tuple[str, ...], region: str | None, start: str, until: str | None, kind: str,
                 fields: str | None, purpose: str, expires: str | None, fmt: str) -> None:
    """Grant a registered party a scope of readings or bills (owner; prints the grant with its grant_id)."""
    dates = [t for t in to if _DATE.match(t)]
    names = [t for t in to if not _DATE.match(t)]
    party_name = party or (names[0] if names else None)
    end = until or (dates[0] if dates else None)
    if party_name is None or end is None or len(names) + bool(party) > 1 or len(dates) + bool(until) > 1:
        raise click.UsageError("give the party once (--to NAME) and the last day once (--to YYYY-MM-DD)")
    keys = _owner(settings)
    store = open_settings_store(settings)
    grant = create_grant(store, signer=keys.signer(),
                         index_key=keys.index_key(), party=get_party(store, party_name),
                         start=start, end=end, kind=kind, meters=meters, accounts=accounts, region=region,
                         fields=None if fields is None else fields.split(","), purpose=purpose, expires_at=expires)
    _print_grant(grant, fmt)


@grant_group.command("list")
@click.option("--meter", "meters", multiple=True, help="Only grants naming this meter.")
@click.option("--party", help="Only this party's grants.")
@_fmt
@click.pass_obj
def grant_list(settings: Settings, meters: tuple[str, ...], party: str | None, fmt: str) -> None:
    """Every grant with its state (active, expired, revoked)."""
    keys = _owner(settings)
    grants = list_grants(open_settings_store(settings), index_key=keys.index_key(), meters=meters or None,
                         party=party)
    if fmt == "json":
        click.echo(json.dumps([{k: v for k, v in g.to_dict().items() if k != "party_public_key"} for g in grants],
                              indent=2))
    else:
        for g in grants:
            _print_grant(g, fmt)


@grant_group.command("show")
@click.argument("grant_id")
@click.pass_obj
def grant_show(settings: Settings, grant_id: str) -> None:
    """One grant, with the consent-log leaves where it began (and ended)."""
    keys = _owner(settings)
    _print_grant(get_grant(open_settings_store(settings), grant_id, index_key=keys.index_key()), "json")


@grant_group.command("revoke")
@click.argument("grant_id")
@click.option("--reason", default="", help="Kept in the consent log.")
@click.pass_obj
def grant_revoke(settings: Settings, grant_id: str, reason: str) -> None:
    """Revoke a grant: nothing more is released under it (forward-only: what was shared stays shared). A third
    party's authorization also loses its tokens, and the party is sent a signed notice."""
    keys = _owner(settings)
    store = open_settings_store(settings)
    grant = get_grant(store, grant_id, index_key=keys.index_key())
    if grant.client_id:
        connect = _connect(settings)
        grant = connect.revoke(grant_id, by="operator" + (f": {reason}" if reason else ""))
        client = connect.find_client(grant.client_id)
        if client is not None and client.notify_uri:
            delivered = connect.outbox.run_due()  # one quick try; the console's notifier retries for 24 h
            console.print(f"third party {grant.party} {'told' if delivered else 'will be told (queued)'}")
        else:
            console.print(f"third party {grant.party} registered no notify-uri: its next call answers 401")
    else:
        grant = revoke_grant(store, grant_id, signer=keys.signer(),
                             index_key=keys.index_key(), reason=reason)
    console.print(f"grant {grant.grant_id} revoked at {grant.revoked_at} (consent-log leaf {grant.revoked_leaf})")


@grant_group.command("receipt")
@click.argument("grant_id")
@click.option("--format", "fmt", type=click.Choice(["json"]), default="json", show_default=True)
@click.pass_obj
def grant_receipt(settings: Settings, grant_id: str, fmt: str) -> None:
    """The grant's consent receipts (Kantara v1.1 fields, consent-log leaf, inclusion proof, signed checkpoint):
    its consent, then its revocation or expiry. GRANT_ID may also name a refusal (the id of a consent-log
    'deny' event, `ledger`/console auditor page): its one denial receipt."""
    connect = _connect(settings)
    refused = next((d for d in connect.denials() if d["denial_id"] == grant_id), None)
    body = [connect.denial_receipt(refused)] if refused else connect.receipts(connect.grant(grant_id))
    click.echo(json.dumps(body, indent=2))


# --- shares ------------------------------------------------------------------------------------------------


@click.group("share")
def share_group() -> None:
    """Share bundles (export / open) and continuous shares (follow)."""


@share_group.command("export")
@click.argument("grant_id")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The bundle file (JSON; gzip-compressed when it ends in .gz).")
@click.pass_obj
def share_export(settings: Settings, grant_id: str, output: Path) -> None:
    """Write the share bundle of an active grant (owner): records, sealed record keys, proofs, checkpoints."""
    from streams.share.bundle import export_bundle

    keys = _owner(settings)
    started = time.perf_counter()
    data, summary = export_bundle(open_settings_store(settings), grant_id, owner=keys.unlocked(),
                                  signer=keys.signer())
    if output.suffix == ".gz":
        import gzip

        data = gzip.compress(data)
    output.write_bytes(data)
    console.print(f"bundle {output}: {summary['records']} record(s) ({summary['record_keys']} record keys, "
                  f"{summary['projected']} projected) from {summary['logs']} log(s), {len(data):,} bytes, "
                  f"{time.perf_counter() - started:.2f} s")


@share_group.command("open")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="Your party.key (METERSEAL_PARTY_PASSPHRASE opens it).")
@click.option("--vkey", "vkeys", multiple=True, help="A checkpoint verifier key you trust; repeat for both.")
@click.option("--format", "fmt", type=click.Choice(["json", "csv", "espi"]), default="json", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write here (default: stdout).")
def share_open(bundle: Path, key_path: Path, vkeys: tuple[str, ...], fmt: str, output: Path | None) -> None:
    """Check every proof and signature of a bundle offline and open its records (recipient; no owner secret)."""
    from streams.share.bundle import open_bundle

    party = PartyKey.load(key_path, party_passphrase())
    verifiers = trusted_verifiers(vkeys, None if vkeys else Settings.from_env())
    started = time.perf_counter()
    try:
        opened = open_bundle(bundle.read_bytes(), party=party, verifiers=verifiers)
    except ShareError as exc:
        click.echo(f"INVALID: {exc}", err=True)
        sys.exit(1)
    seconds = time.perf_counter() - started
    if fmt == "json":
        text = json.dumps({"grant": opened.grant, "keys_checked": checked_text([v for v in verifiers
                                                                                 if v.name in opened.checked_keys]),
                           "verifiable_fields": opened.verifiable_fields, "attested_fields": opened.attested_fields,
                           "consent": opened.consent, "records": opened.records}, indent=2)
    elif fmt == "csv":
        rows = [_flat_device(r) for r in opened.records]
        columns = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, columns)
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
    else:
        if not opened.records or any("kwh" not in r or "ts" not in r or "meter_id" not in r for r in opened.records):
            raise click.ClickException("--format espi needs readings with meter_id, ts and kwh")
        text = espi.feed(opened.records).decode()
    if output:
        output.write_text(text)
    else:
        click.echo(text, nl=not text.endswith("\n"))
    console.print(f"verified: {len(opened.records)} record(s) from {len(opened.logs)} log(s) in {seconds:.2f} s; "
                  f"keys checked: {checked_text([v for v in verifiers if v.name in opened.checked_keys])}; "
                  f"verifiable fields: {', '.join(opened.verifiable_fields) or 'none'}; attested by the owner: "
                  f"{', '.join(opened.attested_fields) or 'none'}")
    signed = sum(1 for r in opened.records if r.get("device"))
    if any("device" in r for r in opened.records):
        console.print(f"device signatures: {signed} reading(s) signed by their meter's key (verified), "
                      f"{sum(1 for r in opened.records if 'device' in r) - signed} not device-signed")


def _flat_device(record: dict) -> dict:
    """A record for CSV: its device signature as ``device_kid`` (empty: not device-signed) and ``device_seq``."""
    if "device" not in record:
        return record
    device = record["device"] or {}
    out = {k: v for k, v in record.items() if k != "device"}
    out["device_signed"] = bool(device)
    out["device_kid"], out["device_seq"] = device.get("kid", ""), device.get("seq", "")
    return out


@share_group.command("follow")
@click.argument("grant_id")
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--idle", type=float, help="Stop after this many seconds without a message (default: run until Ctrl-C).")
@click.option("--max-records", type=int, help="Stop after this many records.")
@click.pass_obj
def share_follow(settings: Settings, grant_id: str, key_path: Path, idle: float | None, max_records: int | None) -> None:
    """Print a continuous share's readings as they arrive, one JSON line each (recipient)."""
    from streams.ingest.broker import bootstrap_servers, consume, ensure_topics, resolve
    from streams.share.continuous import open_message, topic_of

    party = PartyKey.load(key_path, party_passphrase())
    bootstrap = bootstrap_servers(resolve(settings.broker, settings.data_dir))
    ensure_topics(bootstrap, 1, [topic_of(grant_id)])
    seen = 0
    for msg in consume(bootstrap, topic_of(grant_id), idle=idle, stop=lambda: max_records is not None and seen >= max_records):
        try:
            records = open_message(msg.value(), party=party, grant_id=grant_id)
        except ShareError as exc:
            console.print(f"[bold red]skipped a message at offset {msg.offset()}:[/] {exc}")
            continue
        for record in records:
            click.echo(json.dumps(record))
            seen += 1
        sys.stdout.flush()


# --- Green Button ------------------------------------------------------------------------------------------


@click.group("export")
def export_group() -> None:
    """Export the owner's data in standard formats."""


@export_group.command("espi")
@click.option("--meter", "meters", multiple=True, required=True, help="Meter id (repeat for several).")
@click.option("--from", "start", required=True, help="First day, YYYY-MM-DD.")
@click.option("--to", "end", required=True, help="Last day, YYYY-MM-DD.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.pass_obj
def export_espi(settings: Settings, meters: tuple[str, ...], start: str, end: str, output: Path) -> None:
    """Green Button "Download My Data": the meters' readings as an ESPI Atom feed (owner)."""
    from streams.store.query import Query, Reader

    keys = _owner(settings)
    reader = Reader(open_settings_store(settings), keys.unlocked())
    first, last = (dt.date.fromisoformat(d) for d in (start, end))
    rows = []
    for meter in meters:
        rows += reader.open_hits(reader.search(Query(meter=meter, start=first, end=last), kinds=["readings"]))
    output.write_bytes(espi.feed(rows))
    console.print(f"{len(rows)} reading(s) of {len(meters)} meter(s) written to {output} (ESPI, Wh)")


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")
