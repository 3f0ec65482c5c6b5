"""Moving keys: a passphrase keystore's into a key service (``keys migrate --to-kms``), and stored DEKs to a
service key's newest version after a rotation (``keys rewrap``).

**Migration** keeps every secret that names data and re-wraps the rest: the index key stays the same (every
token, record id and subject key hangs on it) and is wrapped by the service; the checkpoint keys are imported
into it (every log's name hashes the Ed25519 key, so a new key would rename every log); every stored DEK is
unwrapped with the old owner keys and wrapped by the service; region keys' owner copies are sealed under it.
Then every record and dead letter is opened through the new keys — only if all open is the new keystore
written, and the old one (owner private keys under a passphrase) retired: removed, or moved where ``keep_old``
says. The key log keeps each DEK's original wrap (it is the ledger's record of the DEK's creation): once the
old keystore is gone, those wraps open for no one.

**Re-wrapping** asks the service to move each stored wrap to the key's newest version (the DEK never leaves
it); a passphrase keystore moves DEKs wrapped for an older owner key to the active one. New wraps go to
``kms/wraps/`` in the store (``streams.keys.keyring.put_wrap``), which readers look in first.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from streams.crypto.envelope import DataKey, open_with
from streams.crypto.tokens import BlindIndex
from streams.exceptions import KeyServiceError, KeystoreError
from streams.keys.keyring import Keyring, current_wrap, put_wrap
from streams.keys.keystore import FILENAME
from streams.kms.access import ProcessKeys, connect, write_service_keystore
from streams.kms.service import DEK, INDEX, LEDGER, LEDGER_PQ, ServiceUnwrap, region_aad, seal_secret
from streams.kms.uri import LOCAL, KmsUri
from streams.seal import dlq_aad
from streams.unseal import SEALED_COLUMNS, open_table


def rewrap_all(store: Any, keys: ProcessKeys, *, progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Move every stored DEK's wrap to the newest version of the key that wraps it (``moved``), leave those
    already there (``newest``); a DEK wrapped for another key is an error naming it."""
    if keys.local:
        refs = {r.fingerprint: r for r in keys.service.wrapping_keys()}
    else:
        refs = {keys.ref(DEK).fingerprint: keys.ref(DEK)}
    counts = {"moved": 0, "newest": 0}
    for n, key_hex in enumerate(store.dek_ids(), 1):
        record = current_wrap(store, key_hex)
        ref = refs.get(record["owner_fingerprint"])
        if ref is None:
            raise KeystoreError(f"DEK {key_hex} is wrapped for key {record['owner_fingerprint'][:16]}…, not one of "
                                f"this keystore's: re-wrapping stopped (nothing else changed for it)")
        new = keys.service.rewrap(ref, bytes.fromhex(key_hex), record["wrapped"])
        if new is None:
            counts["newest"] += 1
        else:
            active = keys.keystore.owner_public if keys.local else ref
            put_wrap(store, {**_fields(record), "scheme": active.scheme, "owner_fingerprint": active.fingerprint,
                             "wrapped": new, "rewrapped_at_ms": int(time.time() * 1000)})
            counts["moved"] += 1
        if progress:
            progress(n)
    return counts


def _fields(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in ("key_id", "scheme", "owner_fingerprint", "wrapped", "created_at_ms", "worker")
            if k in record}


def verify_opens(store: Any, keyring: Keyring, index_key: bytes, *, chunk: int = 50_000) -> dict[str, int]:
    """Open every reading, bill and dead letter of ``store`` with ``keyring`` (its DEKs, and its subject keys for
    version-3 records; readings and bills also rechecked against the index); ``InvalidEnvelope`` or a
    ``KeyServiceError`` at the first that does not open."""
    index = BlindIndex(index_key)
    counts = {}
    for table in ("readings", "bills"):
        if store.is_empty(table):
            counts[table] = 0
            continue
        data = store.arrow(table).select(list(SEALED_COLUMNS))
        counts[table] = 0
        for batch in data.to_batches(max_chunksize=chunk):
            import pyarrow as pa

            counts[table] += len(open_table(pa.Table.from_batches([batch]), keyring, index))
    counts["dlq"] = 0
    if not store.is_empty("dlq"):
        for row in store.arrow("dlq").select(["dlq_id", "envelope"]).to_pylist():
            open_with(keyring, row["envelope"], aad=dlq_aad(row["dlq_id"]))
            counts["dlq"] += 1
    return counts


def migrate_to_kms(data_dir: Path | str, store: Any, old: ProcessKeys, uri: KmsUri, *, service: Any = None,
                   keep_old: Path | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Move the passphrase keystore of ``data_dir`` (``old``, unlocked with its passphrase) into the key service
    at ``uri``; returns what was done. Nothing in the store or the keystore changes unless every record opens
    through the service afterwards (the new wraps written before that are only read through a service keystore)."""
    say = progress or (lambda _text: None)
    if not old.local:
        raise KeystoreError(f"{old.keystore.path} already keeps its keys in {old.keystore.kms['uri']}")
    if uri.provider == LOCAL:
        raise KeystoreError("migrate --to-kms needs a key service URI (openbao://… or pkcs11:…)")
    data_dir = Path(data_dir)
    service = service or connect(uri)
    owner, ledger_signer = old.unlocked(), old.signer()
    for alias in (LEDGER, LEDGER_PQ):
        if service.has_key(alias):
            raise KeyServiceError(f"{service.location} already has a {alias} key: a migration imports this keystore's "
                                  "own checkpoint keys (every log is named by them); use another key name in the URI")
    created = service.create_keys((DEK, INDEX))
    say(f"service keys: {created}")
    signers = {s.scheme: s for s in (ledger_signer, *ledger_signer.cosigners)}
    created[LEDGER] = _import(service, LEDGER, signers["ed25519"])
    if "ml-dsa-65" in signers:
        created[LEDGER_PQ] = _import(service, LEDGER_PQ, signers["ml-dsa-65"])
    say(f"checkpoint keys imported: {created[LEDGER]}, ML-DSA-65: {created.get(LEDGER_PQ, 'none')}")
    dek_ref = service.resolve_alias(DEK)
    wraps = []
    for key_hex in store.dek_ids():
        record = current_wrap(store, key_hex)
        dek = owner.keyring(store)(bytes.fromhex(key_hex))
        wraps.append({**_fields(record), "scheme": dek_ref.scheme, "owner_fingerprint": dek_ref.fingerprint,
                      "wrapped": service.wrap(dek_ref, dek.key_id, dek.secret)})
    say(f"{len(wraps)} DEK(s) wrapped by the service")
    regions = _reseal_regions(old, service, dek_ref)
    names = {LEDGER: old.keystore.ledger_entry("ledger")["name"]}
    if old.keystore.ledger_entry("ledger_pq"):
        names[LEDGER_PQ] = old.keystore.ledger_entry("ledger_pq")["name"]
    staging = data_dir / "keystore-migrating"
    staging.mkdir(exist_ok=True)
    # a service without ML-DSA-65 (a PKCS#11 token): new checkpoints carry the Ed25519 signature only; those the old
    # ML-DSA-65 key co-signed still verify under its vkey, which the result gives (the keystore no longer lists it)
    pq = old.keystore.ledger_pq_verifier
    retired_pq = pq.vkey if pq is not None and created.get(LEDGER_PQ) != "imported" else None
    new_keystore = write_service_keystore(staging, uri, service, created=created, index_key=old.index_key(),
                                          ledger_names=names, regions=regions, force=True)
    # every record through the new keys, with the new wraps, before anything is kept
    new_index = service.unwrap(service.resolve_alias(INDEX), bytes.fromhex(new_keystore.index_wrap["key_id"]),
                               new_keystore.index_wrap["wrapped"])
    if new_index != old.index_key():
        raise KeyServiceError("the index key did not come back from the service unchanged: nothing was migrated")
    counts = verify_opens(store, Keyring(store, _Pending(ServiceUnwrap(service, [dek_ref]), wraps), index_key=new_index),
                          new_index)
    say(f"every record opens through the service: {counts}")
    for w in wraps:
        put_wrap(store, {**w, "rewrapped_at_ms": int(time.time() * 1000)})
    current = data_dir / FILENAME
    if keep_old is not None:
        os.replace(current, keep_old)
    os.replace(staging / FILENAME, current)  # without keep_old the passphrase-sealed owner keys are gone now
    staging.rmdir()
    return {"deks": len(wraps), "records": counts, "keys": created, "regions": sorted(regions or {}),
            "old_keystore": str(keep_old) if keep_old else "removed", "retired_pq_vkey": retired_pq}


class _Pending:
    """Unwraps each stored DEK from its new wrap, not yet kept: the check before the migration writes anything."""

    def __init__(self, unwrap: ServiceUnwrap, wraps: list[dict[str, Any]]) -> None:
        self.unwrap, self.wraps = unwrap, {w["key_id"]: w for w in wraps}

    def unwrap_dek(self, record: dict[str, Any]) -> DataKey:
        return self.unwrap.unwrap_dek(self.wraps[record["key_id"]])


def _import(service: Any, alias: str, signer: Any) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import mldsa
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if signer.scheme == "ed25519":
        key: Any = Ed25519PrivateKey.from_private_bytes(signer.private)
    else:
        key = mldsa.MLDSA65PrivateKey.from_seed_bytes(signer.private)
    pkcs8 = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        ref = service.import_signing_key(alias, pkcs8)
    except KeyServiceError as exc:
        if alias == LEDGER_PQ:
            return f"not imported ({exc})"
        raise
    if ref.public != signer.verifier.public:
        raise KeyServiceError(f"{service.location}: the imported {alias} key has another public key")
    return "imported"


def _reseal_regions(old: ProcessKeys, service: Any, dek_ref: Any) -> dict | None:
    """Each region's entry with its private key (the owner's copy) sealed by the service instead of the passphrase."""
    entries = old.keystore.region_entries()
    if not entries:
        return None
    passphrase = old.service.passphrase()
    out = {}
    for region, entry in entries.items():
        private = old.keystore.region_key(passphrase, region).pair.private
        out[region] = {**entry, "private": seal_secret(service, dek_ref, private, region_aad(region, entry["public"]))}
    return out
