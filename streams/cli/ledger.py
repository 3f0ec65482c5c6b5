"""``meterseal ledger ...``: audit the store against its Merkle logs, and make and check inclusion proofs."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import click

from ledger.checkpoint import Checkpoint
from ledger.exceptions import LedgerError, NoteError, ProofError
from ledger.hashing import leaf_hash
from ledger.note import Verifier, open_note
from ledger.verify import verify_inclusion

from streams import capabilities
from streams.keys.keystore import Keystore
from streams.settings import Settings
from streams.cli.common import open_settings_store
from streams.exceptions import StoreError
from streams.store.audit import audit_store, find_record, logs, proof_bundle


@click.group("ledger")
def ledger_group() -> None:
    """The tamper-evident ledger: an RFC 6962 Merkle log per table and partition, with signed checkpoints."""


def trusted_verifiers(vkeys: tuple[str, ...], settings: Settings | None) -> list[Verifier]:
    """The checkpoint keys to check: those given with --vkey, else the keystore's (Ed25519 and ML-DSA-65)."""
    if vkeys:
        try:
            return [Verifier.from_vkey(v) for v in vkeys]
        except NoteError as exc:
            raise click.ClickException(f"--vkey: {exc}") from None
    if settings is None or not Keystore.exists(settings.data_dir):
        raise click.ClickException("give the verifier key(s) you trust with --vkey (the ones in a bundle are not trusted)")
    return Keystore.load(settings.data_dir).ledger_verifiers


def checked_text(verifiers: list[Verifier]) -> str:
    return ", ".join(f"{v.name} ({v.algorithm})" for v in verifiers)


@ledger_group.command("verify")
@click.option("--vkey", "vkeys", multiple=True, help="Checkpoint verifier key; repeat for both (default: the keystore's).")
@click.pass_obj
def verify_cmd(settings: Settings, vkeys: tuple[str, ...]) -> None:
    """Recompute every log from the store, check every checkpoint; exit 1 naming the first tampered record."""
    verifiers = trusted_verifiers(vkeys, settings)
    confirmed = _confirm_with_service(settings) if not vkeys else []
    results = audit_store(open_settings_store(settings), verifiers, registry=capabilities.registry())
    problems = [f for _, findings in results for f in findings]
    leaves = sum(s.leaves for s, _ in results)
    signed = sum(s.signed_size for s, _ in results)
    if problems:
        first = problems[0]
        click.echo(f"TAMPERED: {first}", err=True)
        for f in problems[1:20]:
            click.echo(f"  also: {f}", err=True)
        sys.exit(1)
    redacted = sum(s.redacted for s, _ in results)
    erasure = next((s for s, _ in results if s.log.split("/")[-2] == "erasure"), None)
    click.echo(f"ok: {len(results)} logs, {leaves} leaves ({signed} under signed checkpoints), "
               f"{sum(s.checkpoints for s, _ in results)} checkpoints verified; keys checked: {checked_text(verifiers)}"
               + (f"; the key service holds them ({', '.join(confirmed)})" if confirmed else ""))
    if redacted:
        click.echo(f"{redacted} leaves redacted by {erasure.leaves if erasure else 0} erasure and retention run(s): "
                   "their records were deleted on purpose, their hashes and tombstones checked")


def _confirm_with_service(settings: Settings) -> list[str]:
    """With a key service's keystore and a token (the auditor's policy reads the checkpoint keys), the keystore's
    vkeys are first confirmed against the keys the service holds; without a token, the keystore's are trusted."""
    import os

    keystore = Keystore.load(settings.data_dir)
    credentials = {"openbao": ("BAO_TOKEN", "VAULT_TOKEN"), "pkcs11": ("METERSEAL_PKCS11_PIN",)}
    if keystore.kms is None or not any(os.environ.get(v) for v in credentials.get(keystore.kms["provider"], ())):
        return []
    from streams.cli.common import process_keys

    return process_keys(settings, "auditor", check=True).check_verifiers()


@ledger_group.command("checkpoints")
@click.pass_obj
def checkpoints_cmd(settings: Settings) -> None:
    """List the signed checkpoints in the data directory."""
    store = open_settings_store(settings)
    for table, p in logs(store):
        for note in store.checkpoint_store(table, p).all():
            cp = Checkpoint.from_note(note)
            click.echo(f"{table}\tp{p}\tsize={cp.size}\troot={cp.root.hex()}")


@ledger_group.command("records")
@click.option("--limit", type=int, default=10, show_default=True)
@click.pass_obj
def records_cmd(settings: Settings, limit: int) -> None:
    """Record ids with their log and leaf index (use one with `ledger prove`)."""
    store = open_settings_store(settings)
    shown = 0
    for table, p in logs(store):
        for row in store.rows(table, p)[: max(0, limit - shown)]:
            click.echo(f"{row['record_id']}\t{table}\tp{p}\tleaf {row['leaf_index']}")
            shown += 1


@ledger_group.command("prove")
@click.argument("record_id")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the bundle here (default: stdout).")
@click.option("--device", is_flag=True, help="The proof from the device: the record, its record key and the meter's "
              "signature, checked offline with the device's public key and the ledger vkey (owner's passphrase).")
@click.pass_obj
def prove_cmd(settings: Settings, record_id: str, output: Path | None, device: bool) -> None:
    """A JSON inclusion-proof bundle for RECORD_ID against the newest checkpoint that covers it."""
    keystore = Keystore.load(settings.data_dir)
    store = open_settings_store(settings)
    found = find_record(store, record_id)
    if found is None:
        raise click.ClickException(f"no record {record_id} in {settings.store_location}")
    try:
        if device:
            from streams.cli.common import process_keys
            from streams.devices.keys import DeviceError
            from streams.devices.proof import device_proof

            keyring = process_keys(settings, "console").unlocked().keyring(store)  # the owner's: passphrase or KMS
            try:
                bundle = device_proof(store, *found, keyring=keyring, vkey=keystore.ledger_verifier.vkey)
            except DeviceError as exc:
                raise click.ClickException(str(exc)) from None
            click.echo(f"record {record_id}: signed by device {bundle['device']['kid']} ({bundle['device']['alg']}, "
                       f"device_seq {bundle['device']['seq']}); signature {bundle['device']['sig']}", err=True)
        else:
            bundle = proof_bundle(store, *found, vkey=keystore.ledger_verifier.vkey)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    text = json.dumps(bundle, indent=2)
    if output:
        output.write_text(text + "\n")
        click.echo(f"proof written to {output}", err=True)
    else:
        click.echo(text)


@ledger_group.command("verify-proof")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--vkey", "vkeys", multiple=True,
              help="A verifier key you trust; repeat for both (default: the keystore's, if there is one).")
@click.option("--device-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="For a device proof (`prove --device`): the device's public key you trust (PEM).")
def verify_proof_cmd(bundle: Path, vkeys: tuple[str, ...], device_key: Path | None) -> None:
    """Check a proof bundle offline: signature, leaf hash, audit path. Needs only the public key(s); a device
    proof also the device's key, and then shows the reading was signed by it."""
    data = json.loads(bundle.read_text())
    verifiers = trusted_verifiers(vkeys, None if vkeys else Settings.from_env())
    if data.get("format", "").startswith("meterseal-device-proof"):
        from streams.devices.keys import DeviceError, DevicePublicKey
        from streams.devices.proof import check_device_proof

        if device_key is None:
            raise click.ClickException("a device proof is checked against the device's public key you trust: "
                                       "--device-key FILE (the proof's own claims are not trusted)")
        try:
            got = check_device_proof(data, verifiers=verifiers, device_key=DevicePublicKey.read(device_key))
        except DeviceError as exc:
            click.echo(f"INVALID: {exc}", err=True)
            sys.exit(1)
        click.echo(f"ok: record {got['record_id']} ({got['meter_id']} at {got['ts']}, {got['kwh']} kWh) was signed by "
                   f"device {got['kid']} ({got['alg']}, device_seq {got['device_seq']}) and is leaf "
                   f"{got['leaf_index']} of {got['origin']} (size {got['tree_size']}), signed; keys checked: "
                   f"{checked_text(verifiers)} and the device key")
        return
    try:
        text, names = open_note(data["checkpoint"], verifiers)
        missing = sorted({v.name for v in verifiers} - set(names))
        if missing:
            raise NoteError(f"no valid signature by {', '.join(missing)}")
        cp = Checkpoint.parse(text)
        leaf = base64.b64decode(data["leaf"], validate=True)
        if leaf_hash(leaf).hex() != data["leaf_hash"]:
            raise ProofError("leaf_hash is not the hash of leaf")
        if cp.size != data["tree_size"]:
            raise ProofError("tree_size does not match the checkpoint")
        verify_inclusion(leaf_hash(leaf), data["index"], cp.size, [bytes.fromhex(h) for h in data["audit_path"]], cp.root)
    except (LedgerError, NoteError, ProofError, KeyError, ValueError) as exc:
        click.echo(f"INVALID: {exc}", err=True)
        sys.exit(1)
    click.echo(f"ok: record {data['record_id']} is leaf {data['index']} of {cp.origin} (size {cp.size}), signed; "
               f"keys checked: {checked_text(verifiers)}")
