"""A reading's proof from the device to the signed ledger, and its check by a third party, offline.

The owner makes it (``device_proof``: ``meterseal ledger prove RECORD_ID --device``, the customer's console page):
the record as the store holds it (clear columns and envelope), its ledger leaf, an RFC 6962 inclusion proof to
the newest signed checkpoint of its log, and the record's own key (derived for this one record from its DEK and,
envelope v3, its subject's key: never either key itself). Whoever holds it checks (``check_device_proof``),
trusting only the device's public key and the ledger's verifier key:

1. the checkpoint note is signed by the ledger key(s) they trust;
2. the leaf, recomputed from the record's columns and envelope, is included in that checkpoint's tree;
3. the record key opens the envelope (its commitment and the clear columns, bound in as associated data);
4. inside is reading schema v3 with the device fields: the KEY_ID is the SHA-256 of *their* copy of the device
   key, the signature verifies over the signed payload bytes with it, and the payload says what the sealed
   reading says (meter, time, kWh, register, region, category, counter).

So the reading was signed by that device and is, unchanged, in the log the ledger key signed. An unsigned reading
has no device proof: it is marked as not device-signed.
"""

from __future__ import annotations

import base64
from typing import Any, Sequence

import orjson

import schemas
from ledger import leaf as leaf_codec
from ledger.checkpoint import Checkpoint
from ledger.exceptions import LedgerError, NoteError, ProofError
from ledger.hashing import leaf_hash
from ledger.note import Verifier, open_note
from ledger.verify import verify_inclusion

from streams.crypto import envelope as env
from streams.devices.keys import DeviceError, DevicePublicKey
from streams.exceptions import InvalidEnvelope, InvalidInput
from streams.seal import SIGNED_VERSION, record_aad
from streams.unseal import record_key_of as _record_key_of
from streams.validate import utc_ts

FORMAT = "meterseal-device-proof/1"
ROW_FIELDS = leaf_codec.FIELDS + ("topic_partition",)
COMPARED = ("meter_id", "kwh", "register_kwh", "region", "category")


def record_key_of(keyring: Any, row: dict[str, Any]) -> bytes:
    """The record key of a stored row (envelope v2: from its DEK; v3: its DEK and its subject's key), from the
    owner's ``Keyring`` — through ``streams.unseal.record_key_of``, the one derivation every share uses."""
    return _record_key_of(keyring, row)


def check_signed_reading(plain: dict[str, Any], key: DevicePublicKey) -> dict[str, Any]:
    """That an opened reading (schema v3) was signed by ``key`` and says what its signed payload says; returns
    what was checked. ``DeviceError`` naming the first check that fails."""
    device = plain.get("device")
    if device is None:
        raise DeviceError("the reading is not device-signed")
    if device["kid"] != key.kid:
        raise DeviceError(f"the reading was signed by key {device['kid']}, not by the key given ({key.kid})")
    if device["alg"] != key.alg:
        raise DeviceError(f"the reading's signature is {device['alg']}, the key given is {key.alg}")
    payload, sig = bytes(device["payload"]), bytes(device["sig"])
    if not key.verify(payload, sig):
        raise DeviceError("the signature does not verify over the signed payload with the key given")
    try:
        signed = orjson.loads(payload)
        if type(signed) is not dict:
            raise ValueError("not an object")
        same = (all(_same(signed.get(f), plain.get(f)) for f in COMPARED) and utc_ts(signed.get("ts")) == plain["ts"]
                and signed.get("device_seq") == device["seq"])
    except (ValueError, InvalidInput) as exc:
        raise DeviceError(f"the signed payload is not a reading ({exc})") from None
    if not same:
        raise DeviceError("the sealed reading does not say what the device signed")
    return {"meter_id": plain["meter_id"], "ts": plain["ts"], "kwh": plain["kwh"],
            "register_kwh": plain["register_kwh"], "kid": key.kid, "alg": key.alg, "device_seq": device["seq"]}


def _same(signed: Any, sealed: Any) -> bool:
    """A signed payload's field against the sealed reading's (numbers as the validator read them: floats)."""
    if isinstance(sealed, float):
        return type(signed) in (int, float) and float(signed) == sealed
    return isinstance(signed, (str, int)) and not isinstance(signed, bool) and str(signed).strip() == sealed


def device_proof(store: Any, table: str, row: dict[str, Any], *, keyring: Any, vkey: str) -> dict[str, Any]:
    """The device proof of a stored reading (``table``, ``row``: ``streams.store.audit.find_record``), with the
    owner's ``keyring`` (``streams.keys.keyring.Keyring``). ``DeviceError`` for a reading that is not
    device-signed."""
    from streams.store.audit import proof_bundle

    if table != "readings" or row.get("schema_version") != SIGNED_VERSION:
        raise DeviceError(f"record {row['record_id']} is not device-signed (it arrived unsigned): there is no "
                          "device proof; `meterseal ledger prove` proves its inclusion")
    key = record_key_of(keyring, row)
    plain = _open(row, key)
    device = plain["device"]
    doc = proof_bundle(store, table, row, vkey=vkey)
    doc.update({
        "format": FORMAT,
        "row": {k: (_b64(row[k]) if k == "envelope" else row.get(k)) for k in ROW_FIELDS},
        "record_key": key.hex(),
        "device": {"kid": device["kid"], "alg": device["alg"], "seq": device["seq"], "sig": _b64(device["sig"]),
                   "payload": _b64(device["payload"])},
        "reading": {k: plain[k] for k in ("meter_id", "ts", "kwh", "register_kwh")}})
    return doc


def _open(row: dict[str, Any], key: bytes) -> dict[str, Any]:
    body = env.open_with_record_key(key, row["envelope"], aad=record_aad(row))
    return schemas.decode_body(body, schemas.get("reading", row["schema_version"]), schemas.get("reading"))


def _b64(data: bytes) -> str:
    return base64.b64encode(bytes(data)).decode()


def check_device_proof(doc: dict[str, Any], *, verifiers: Sequence[Verifier],
                       device_key: DevicePublicKey) -> dict[str, Any]:
    """Check a device proof offline with the ledger key(s) and the device key one trusts; returns what it proves
    (meter, time, kWh, KEY_ID, counter, log, leaf). ``DeviceError`` naming the first check that fails."""
    if not verifiers:
        raise DeviceError("give the ledger verifier key(s) you trust (the proof's own vkey is not trusted)")
    try:
        if doc.get("format") != FORMAT:
            raise DeviceError(f"not a device proof ({FORMAT}): make one with `meterseal ledger prove ID --device`")
        text, names = open_note(doc["checkpoint"], list(verifiers))
        missing = sorted({v.name for v in verifiers} - set(names))
        if missing:
            raise NoteError(f"no valid signature by {', '.join(missing)}")
        cp = Checkpoint.parse(text)
        row = {k: doc["row"][k] for k in ROW_FIELDS}
        row["envelope"] = base64.b64decode(row["envelope"], validate=True)
        leaf = leaf_codec.encode(row)
        if base64.b64decode(doc["leaf"], validate=True) != leaf:
            raise ProofError("the leaf is not the encoding of the record")
        if not cp.origin.endswith(f"/readings/{int(row['topic_partition'])}"):
            raise ProofError(f"the checkpoint is for log {cp.origin}, not the record's "
                             f"readings/{row['topic_partition']}")
        if cp.size != doc["tree_size"] or row["leaf_index"] != doc["index"]:
            raise ProofError("tree size or leaf index do not match the checkpoint and the record")
        verify_inclusion(leaf_hash(leaf), row["leaf_index"], cp.size, [bytes.fromhex(h) for h in doc["audit_path"]],
                         cp.root)
        plain = _open(row, bytes.fromhex(doc["record_key"]))
    except DeviceError:
        raise
    except InvalidEnvelope:
        raise DeviceError("the record key does not open the record (altered, or a key for another record)") from None
    except (LedgerError, NoteError, ProofError) as exc:
        raise DeviceError(f"ledger: {exc}") from None
    except (KeyError, ValueError, TypeError, schemas.SchemaError) as exc:
        raise DeviceError(f"the proof is malformed ({type(exc).__name__}: {exc})") from None
    checked = check_signed_reading(plain, device_key)
    return {**checked, "record_id": row["record_id"], "log": f"readings/{row['topic_partition']}",
            "leaf_index": row["leaf_index"], "tree_size": cp.size, "origin": cp.origin, "ledger_keys": sorted(names)}
