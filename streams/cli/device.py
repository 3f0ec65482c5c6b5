"""`meterseal device`: the registry of meters' signing keys (streams.devices), and keys for simulators and trials."""

from __future__ import annotations

import json
from pathlib import Path

import click

from streams.cli.common import console, open_settings_store, process_keys
from streams.devices.keys import ALGS, DeviceError, DeviceKey, DevicePublicKey
from streams.devices.registry import add_device, list_devices, revoke_device
from streams.settings import Settings

_fmt = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)


@click.group("device")
def device_group() -> None:
    """Meters that sign their readings: register their public keys, list, revoke; keys for simulators."""


def _owner(settings: Settings) -> tuple[bytes, object]:
    """The index key and the ledger signer (a passphrase keystore's, or a key service's: ``streams.kms``)."""
    keys = process_keys(settings, "console")
    return keys.index_key(), keys.signer()


def _index_key(settings: Settings) -> bytes:
    return process_keys(settings, "console").index_key()


@device_group.command("keygen")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for the key files.")
@click.option("--alg", type=click.Choice(ALGS), default="ES256", show_default=True,
              help="ES256: ECDSA P-256 with SHA-256 (DLMS/COSEM suite 1, OCMF); Ed25519.")
@click.option("--meters", type=click.IntRange(min=1), help="One key per meter of `simulate meters --meters N`, "
              "named <meter id>.key/.pub (default: one key, device.key/.pub).")
def device_keygen(out: Path, alg: str, meters: int | None) -> None:
    """Make device key pairs (private key unencrypted, mode 0600: for simulators and trials) and print each KEY_ID."""
    from streams.mqtt.fleet import fleet_meters

    names = fleet_meters(meters) if meters else ["device"]
    for name in names:
        key = DeviceKey.generate(alg)
        key.save(out, name)
        if not meters:
            click.echo(key.public_key.kid)
    console.print(f"wrote {len(names)} {alg} key pair(s) to {out} (.key private, .pub public: register it with "
                  f"`meterseal device add --meter ID --public-key FILE`{' or --keys DIR' if meters else ''})")


@device_group.command("add")
@click.option("--meter", "meter_id", help="The meter the key belongs to.")
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The device's public key, PEM (ECDSA P-256 or Ed25519).")
@click.option("--keys", "keys_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Register every <meter id>.pub in this directory (what `keygen --meters N` wrote).")
@click.pass_obj
def device_add(settings: Settings, meter_id: str | None, public_key: Path | None, keys_dir: Path | None) -> None:
    """Register a device's public key for a meter (a signed leaf of the device log); prints its KEY_ID."""
    if keys_dir is None and not (meter_id and public_key):
        raise click.UsageError("give --meter ID --public-key FILE, or --keys DIR")
    pairs = [(p.stem, p) for p in sorted(keys_dir.glob("*.pub"))] if keys_dir else [(meter_id, public_key)]
    if not pairs:
        raise click.ClickException(f"no .pub files in {keys_dir}")
    index_key, signer = _owner(settings)
    store = open_settings_store(settings)
    for meter, path in pairs:
        try:
            device = add_device(store, signer=signer, index_key=index_key, meter_id=meter,
                                public_key=DevicePublicKey.read(path))
        except DeviceError as exc:
            raise click.ClickException(f"{path}: {exc}") from None
        if not keys_dir:
            click.echo(device.kid)
    console.print(f"{len(pairs)} device key(s) registered"
                  + (f" for meter {meter_id}" if meter_id and not keys_dir else ""))


@device_group.command("list")
@click.option("--meter", "meter_id", help="Only this meter's keys.")
@_fmt
@click.pass_obj
def device_list(settings: Settings, meter_id: str | None, fmt: str) -> None:
    """Registered device keys: KEY_ID, algorithm, meter, state."""
    devices = list_devices(open_settings_store(settings), index_key=_index_key(settings), meter_id=meter_id)
    if fmt == "json":
        click.echo(json.dumps([d.to_dict() for d in devices], indent=2))
        return
    for d in devices:
        state = "active" if d.active else f"revoked {d.revoked_at}" + (f" ({d.reason})" if d.reason else "")
        click.echo(f"{d.kid}\t{d.alg}\t{d.meter_id}\tadded {d.added_at}\t{state}")


@device_group.command("revoke")
@click.argument("kid", required=False)
@click.option("--meter", "meter_id", help="Revoke every active key of this meter.")
@click.option("--reason", default="", help="Kept in the device log (sealed with the meter id).")
@click.pass_obj
def device_revoke(settings: Settings, kid: str | None, meter_id: str | None, reason: str) -> None:
    """Revoke a device key (KID, or all of --meter's): its readings are dead letters (rule `device`) from now on."""
    if bool(kid) == bool(meter_id):
        raise click.UsageError("give a KID or --meter ID")
    index_key, signer = _owner(settings)
    store = open_settings_store(settings)
    kids = [kid] if kid else [d.kid for d in list_devices(store, index_key=index_key, meter_id=meter_id) if d.active]
    if not kids:
        raise click.ClickException(f"meter {meter_id} has no active device key")
    for k in kids:
        device = revoke_device(store, k, signer=signer, index_key=index_key, reason=reason)
        console.print(f"revoked {device.kid} (meter {device.meter_id}) at {device.revoked_at}; workers refuse its "
                      f"readings within METERSEAL_DEVICE_REFRESH_S ({settings.device_refresh_s:g} s)")
