"""`meterseal keys`: make, inspect and rotate the keystore; region keys."""

from __future__ import annotations

import json
from pathlib import Path

import click

from streams.cli.common import console, open_settings_store, passphrase_for, region_passphrase
from streams.settings import Settings

from streams.keys.keystore import Keystore
from streams.keys.owner import HPKE, RSA


@click.group()
def keys() -> None:
    """Make, inspect and rotate the keystore (owner key pair + index key)."""


@keys.command("init")
@click.option("--scheme", type=click.Choice(["rsa", "hpke"]), default="rsa", show_default=True,
              help="How DEKs are wrapped: RSA-OAEP-3072/SHA-256, or HPKE with hybrid ML-KEM-768+X25519.")
@click.option("--force", is_flag=True, help="Replace an existing keystore (records sealed for it become unreadable).")
@click.pass_obj
def keys_init(settings: Settings, scheme: str, force: bool) -> None:
    """Create the keystore in the data directory."""
    store = Keystore.init(settings.data_dir, passphrase_for(settings, confirm=True),
                          scheme=RSA if scheme == "rsa" else HPKE, force=force)
    console.print(f"keystore created at {store.path} (owner key {store.owner_public.fingerprint[:16]}…, {store.owner_public.scheme})")


@keys.command("show")
@click.option("--public", "public", is_flag=True,
              help="Print the ledger checkpoint verifier keys (signed-note vkeys: Ed25519, then ML-DSA-65), one a line.")
@click.option("--owner", "owner", is_flag=True, help="Print the active owner public key (PEM) instead.")
@click.pass_obj
def keys_show(settings: Settings, public: bool, owner: bool) -> None:
    """Describe the keystore: owner keys, schemes, fingerprints, ledger key. Shows no secrets."""
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
    """Add a new owner key pair; new DEKs are wrapped for it once workers restart. Old keys stay for reading."""
    store = Keystore.load(settings.data_dir)
    new = store.rotate_owner(passphrase_for(settings), scheme={"rsa": RSA, "hpke": HPKE}.get(scheme))
    console.print(f"new active owner key {new.fingerprint[:16]}… ({new.scheme}); restart workers to use it")


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
    from streams.keys.keyring import Keyring
    from streams.keys.regions import check_region_name, grant_existing

    check_region_name(region)
    store = Keystore.load(settings.data_dir)
    passphrase = passphrase_for(settings)
    file_passphrase = region_passphrase(confirm=True)
    key = store.add_region(passphrase, region, replace=replace)
    path = key.save(out or settings.data_dir / "regions" / f"{region}.key", file_passphrase)
    console.print(f"region {region}: key {key.fingerprint[:16]}… ({key.pair.scheme}), key file {path} — hand it to "
                  "the region with its passphrase; workers grant the region's new DEKs from their next DEK on")
    data = open_settings_store(settings) if settings.store_location != settings.store_dir or \
        (settings.store_dir / "readings").exists() or (settings.store_dir / "bills").exists() else None
    if data is not None and not (data.is_empty("readings") and data.is_empty("bills")):
        unlocked = store.unlock(passphrase)
        keyring = Keyring(data, unlocked.unwrappers(), index_key=unlocked.index_key)
        written, refused = grant_existing(data, keyring, key)
        _report_grants(region, written, refused)


@keys_region.command("export")
@click.argument("region")
@click.option("--out", type=click.Path(path_type=Path), help="Region key file to write. [default: <data-dir>/regions/<region>.key]")
@click.pass_obj
def keys_region_export(settings: Settings, region: str, out: Path | None) -> None:
    """Write REGION's key file from the owner's keystore (sealed under METERSEAL_REGION_PASSPHRASE)."""
    key = Keystore.load(settings.data_dir).region_key(passphrase_for(settings), region)
    path = key.save(out or settings.data_dir / "regions" / f"{region}.key", region_passphrase(confirm=True))
    console.print(f"region {region}: key file {path} (key {key.fingerprint[:16]}…)")


@keys_region.command("grant")
@click.argument("region")
@click.pass_obj
def keys_region_grant(settings: Settings, region: str) -> None:
    """Grant REGION's key every stored DEK that sealed only REGION's records (after `store rebuild`, or for
    DEKs made before the region had a key). DEKs shared with other regions are refused and counted."""
    from streams.keys.keyring import Keyring
    from streams.keys.regions import grant_existing

    store = Keystore.load(settings.data_dir)
    passphrase = passphrase_for(settings)
    key = store.region_key(passphrase, region)
    data = open_settings_store(settings)
    unlocked = store.unlock(passphrase)
    keyring = Keyring(data, unlocked.unwrappers(), index_key=unlocked.index_key)
    _report_grants(region, *grant_existing(data, keyring, key))


def _report_grants(region: str, written: int, refused: list[str]) -> None:
    console.print(f"region {region}: {written} stored DEK(s) granted")
    if refused:
        console.print(f"[yellow]warning:[/] {len(refused)} DEK(s) also sealed other regions' records and were not "
                      f"granted (sealed before DEKs were kept per region); {region}'s key cannot open those records")

