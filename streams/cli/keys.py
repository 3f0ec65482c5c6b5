"""`meterseal keys`: make, inspect and rotate the keystore (or the key service's keys), re-wrap and migrate; region keys."""

from __future__ import annotations

import json
from pathlib import Path

import click

from streams.cli.common import console, open_settings_store, passphrase_for, process_keys, region_passphrase
from streams.settings import Settings

from streams.keys.keystore import Keystore
from streams.keys.owner import HPKE, RSA


@click.group()
def keys() -> None:
    """Make, inspect and rotate the keystore (owner key pair + index key)."""


@keys.command("init")
@click.option("--scheme", type=click.Choice(["rsa", "hpke"]), default="rsa", show_default=True,
              help="How DEKs are wrapped: RSA-OAEP-3072/SHA-256, or HPKE with hybrid ML-KEM-768+X25519.")
@click.option("--kms", "kms_uri", help="Keep the keys in a key service instead: openbao://HOST:PORT/MOUNT/KEY or "
              "pkcs11:module=PATH;token=LABEL;key=LABEL (no passphrase; no private key on disk). [env METERSEAL_KMS]")
@click.option("--force", is_flag=True, help="Replace an existing keystore (records sealed for it become unreadable).")
@click.pass_obj
def keys_init(settings: Settings, scheme: str, kms_uri: str | None, force: bool) -> None:
    """Create the keystore in the data directory (a passphrase keystore, or one whose keys a key service holds)."""
    from streams.kms.uri import LOCAL, parse

    uri = parse(kms_uri or settings.kms)
    if uri.provider != LOCAL:
        from streams.kms.access import init_kms

        store, created = init_kms(settings.data_dir, uri, force=force)
        console.print(f"keystore created at {store.path}: its keys stay in {uri} — "
                      + ", ".join(f"{alias} {state}" for alias, state in created.items()))
        _audit_note(store, uri)
        return
    store = Keystore.init(settings.data_dir, passphrase_for(settings, confirm=True),
                          scheme=RSA if scheme == "rsa" else HPKE, force=force)
    console.print(f"keystore created at {store.path} (owner key {store.owner_public.fingerprint[:16]}…, {store.owner_public.scheme})")


def _audit_note(store: Keystore, uri) -> None:
    """Say whether OpenBao's audit device is on (every unwrap attributable to the token that made it)."""
    if uri.provider != "openbao":
        return
    from streams.kms.access import connect

    devices = connect(uri).audit_devices()
    if devices is None:
        console.print("this token may not list OpenBao's audit devices: make sure one is on "
                      "(`bao audit enable file file_path=...`, README: Keys in a KMS)")
    elif not devices:
        console.print("[yellow]warning:[/] no OpenBao audit device is on: unwraps are not recorded by the service; "
                      "enable one with `bao audit enable file file_path=/var/log/openbao/audit.log`")
    else:
        console.print(f"OpenBao audit device(s) on: {', '.join(devices)}")


@keys.command("show")
@click.option("--public", "public", is_flag=True,
              help="Print the ledger checkpoint verifier keys (signed-note vkeys: Ed25519, then ML-DSA-65), one a line.")
@click.option("--owner", "owner", is_flag=True, help="Print the active owner public key (PEM) instead.")
@click.pass_obj
def keys_show(settings: Settings, public: bool, owner: bool) -> None:
    """Describe the keystore: owner keys (or the key service and its keys), fingerprints, ledger key. No secrets."""
    store = Keystore.load(settings.data_dir)
    if owner:
        click.echo(store.owner_public.pem(), nl=False)
    elif public:
        for verifier in store.ledger_verifiers:
            click.echo(verifier.vkey)
    else:
        pq = store.ledger_pq_verifier
        click.echo(json.dumps({**store.describe(), "ledger_vkey": store.ledger_verifier.vkey,
                               # its vkey is ~2,600 characters: `keys show --public` prints it
                               "ledger_pq_key": {"name": pq.name, "algorithm": pq.algorithm,
                                                 "key_hash": pq.key_hash.hex()} if pq else None}, indent=2))


@keys.command("rotate")
@click.option("--scheme", type=click.Choice(["rsa", "hpke"]), help="Scheme of the new owner key (default: same).")
@click.pass_obj
def keys_rotate(settings: Settings, scheme: str | None) -> None:
    """Add a new owner key pair (a passphrase keystore) or a new version of the service's DEK-wrapping key; new
    DEKs are wrapped with it, old ones keep opening. `meterseal keys rewrap` then moves stored DEKs to it."""
    store = Keystore.load(settings.data_dir)
    if store.kms is not None:
        keys = process_keys(settings, "admin")
        if not hasattr(keys.service, "rotate"):
            raise click.ClickException(f"{keys.location}: PKCS#11 keys have no versions; rotate by migrating to a new "
                                       "key label (`meterseal keys migrate`)")
        version = keys.service.rotate()
        console.print(f"{keys.location}: DEK-wrapping key now at version {version}; new DEKs use it at once, stored "
                      "ones keep opening; `meterseal keys rewrap` moves them to it")
        return
    new = store.rotate_owner(passphrase_for(settings), scheme={"rsa": RSA, "hpke": HPKE}.get(scheme))
    console.print(f"new active owner key {new.fingerprint[:16]}… ({new.scheme}); restart workers to use it")


@keys.command("rewrap")
@click.pass_obj
def keys_rewrap(settings: Settings) -> None:
    """Move every stored DEK's wrap to the newest key: the service key's newest version (the DEKs never leave the
    service), or a passphrase keystore's active owner key. Readers use the new wraps at once."""
    from streams.kms.migrate import rewrap_all

    keys = process_keys(settings, "admin")
    store = open_settings_store(settings)
    counts = rewrap_all(store, keys)
    console.print(f"{counts['moved']} DEK(s) re-wrapped to the newest key, {counts['newest']} already there")


@keys.command("migrate")
@click.option("--to-kms", "to_kms", required=True, help="The key service: openbao://HOST:PORT/MOUNT/KEY or "
              "pkcs11:module=PATH;token=LABEL;key=LABEL (the token or PIN of an admin).")
@click.option("--keep-old", type=click.Path(dir_okay=False, path_type=Path),
              help="Move the old passphrase keystore here instead of removing it (it still opens every record: keep "
                   "it offline, or do not keep it).")
@click.pass_obj
def keys_migrate(settings: Settings, to_kms: str, keep_old: Path | None) -> None:
    """Move a passphrase keystore's keys into a key service: the index key and checkpoint keys go in unchanged,
    every stored DEK (and region key) is re-wrapped there, every record is opened through the service — and only
    then is the new keystore written and the old one retired."""
    from streams.kms.migrate import migrate_to_kms
    from streams.kms.uri import parse

    old = process_keys(settings, "admin")
    done = migrate_to_kms(settings.data_dir, open_settings_store(settings), old, parse(to_kms), keep_old=keep_old,
                          progress=console.print)
    console.print(f"migrated to {to_kms}: {done['deks']} DEK(s) re-wrapped, records opened {done['records']}, old "
                  f"keystore {done['old_keystore']}; restart workers and consoles with their own tokens")
    if done["retired_pq_vkey"]:
        console.print("the service holds no ML-DSA-65 key: new checkpoints are signed with Ed25519 only; those signed "
                      "before still verify under the old ML-DSA-65 vkey (keep it):")
        click.echo(done["retired_pq_vkey"])


@keys.command("ledger-pq")
@click.pass_obj
def keys_ledger_pq(settings: Settings) -> None:
    """Give a keystore made before post-quantum checkpoints its ML-DSA-65 ledger key (new keystores have it);
    workers sign every checkpoint with it too after a restart."""
    verifier = Keystore.load(settings.data_dir).add_ledger_pq(passphrase_for(settings))
    console.print(f"ML-DSA-65 ledger key {verifier.name}; its vkey (give it to whoever verifies checkpoints):")
    click.echo(verifier.vkey)


@keys.group("region")
def keys_region() -> None:
    """Region keys: each region's Flower client opens its own region's records and nothing else.

    \b
    Trust model: the owner's keystore opens everything; a worker holds public keys only; a region holds
    its region key file (sealed under its own passphrase). No DEK seals two regions' records, and each
    region DEK is also wrapped for the region's key (a grant in <store>/grants/<region>/).
    """



@keys_region.command("add")
@click.argument("region")
@click.option("--out", type=click.Path(path_type=Path), help="Region key file to write. [default: <data-dir>/regions/<region>.key]")
@click.option("--replace", is_flag=True, help="Replace the region's key (grants for the old key stop opening).")
@click.pass_obj
def keys_region_add(settings: Settings, region: str, out: Path | None, replace: bool) -> None:
    """Make REGION's key: its public key goes in the keystore (workers grant it the region's new DEKs), its
    key file (for the region's machine) is sealed under METERSEAL_REGION_PASSPHRASE, and the region's DEKs
    already in the store are granted to it."""
    from streams.keys.regions import check_region_name, grant_existing

    check_region_name(region)
    keys = process_keys(settings, "admin")
    file_passphrase = region_passphrase(confirm=True)
    key = keys.add_region(region, replace=replace)
    path = key.save(out or settings.data_dir / "regions" / f"{region}.key", file_passphrase)
    console.print(f"region {region}: key {key.fingerprint[:16]}… ({key.pair.scheme}), key file {path} — hand it to "
                  "the region with its passphrase; workers grant the region's new DEKs from their next DEK on")
    data = open_settings_store(settings) if settings.store_location != settings.store_dir or \
        (settings.store_dir / "readings").exists() or (settings.store_dir / "bills").exists() else None
    if data is not None and not (data.is_empty("readings") and data.is_empty("bills")):
        written, refused = grant_existing(data, keys.keyring(data), key)
        _report_grants(region, written, refused)


@keys_region.command("export")
@click.argument("region")
@click.option("--out", type=click.Path(path_type=Path), help="Region key file to write. [default: <data-dir>/regions/<region>.key]")
@click.pass_obj
def keys_region_export(settings: Settings, region: str, out: Path | None) -> None:
    """Write REGION's key file from the owner's keystore (sealed under METERSEAL_REGION_PASSPHRASE)."""
    key = process_keys(settings, "admin").region_key(region)
    path = key.save(out or settings.data_dir / "regions" / f"{region}.key", region_passphrase(confirm=True))
    console.print(f"region {region}: key file {path} (key {key.fingerprint[:16]}…)")


@keys_region.command("grant")
@click.argument("region")
@click.pass_obj
def keys_region_grant(settings: Settings, region: str) -> None:
    """Grant REGION's key every stored DEK that sealed only REGION's records (after `store rebuild`, or for
    DEKs made before the region had a key). DEKs shared with other regions are refused and counted."""
    from streams.keys.regions import grant_existing

    keys = process_keys(settings, "admin")
    key = keys.region_key(region)
    data = open_settings_store(settings)
    _report_grants(region, *grant_existing(data, keys.keyring(data), key))


def _report_grants(region: str, written: int, refused: list[str]) -> None:
    console.print(f"region {region}: {written} stored DEK(s) granted")
    if refused:
        console.print(f"[yellow]warning:[/] {len(refused)} DEK(s) also sealed other regions' records and were not "
                      f"granted (sealed before DEKs were kept per region); {region}'s key cannot open those records")

