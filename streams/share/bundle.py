"""Share bundles: exactly the records of one grant, verifiable offline by the recipient.

Export (the owner, ``export_bundle``): every in-scope record as the store holds it (clear columns and the
original envelope), its ledger leaf index and an RFC 6962 inclusion proof to a signed checkpoint of its log
(the checkpoint notes travel in the bundle), the consent-log leaves that made (and, if so, revoked) the
grant with their proofs, and — HPKE-sealed to the party's public key with ``info`` bound to the grant id —
each record's own key (envelope v2). Never a DEK. A grant with ``fields`` gets the projected values
re-sealed instead of record keys (so left-out fields never leave the owner); the recipient still checks
the record *set* against the ledger, and the values are attested by the owner's signature over the bundle.

Open (the recipient, ``open_bundle``: party key and trusted verifier keys, no owner secret): checks every
checkpoint signature and every inclusion proof, opens the record keys, checks each against its envelope's
commitment and opens the record (its record id and clear columns are bound in as associated data), checks
that it is in the grant's scope, and checks the owner's signature over the whole bundle. The first failure
raises ``ShareError`` naming what failed.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import gzip
import hashlib
import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ledger import leaf as leaf_codec
from ledger.checkpoint import Checkpoint
from ledger.exceptions import NoteError, ProofError
from ledger.hashing import leaf_hash
from ledger.note import Signer, Verifier, open_note, sign

import schemas
from streams.crypto import envelope as env
from streams.devices.keys import DeviceError, DevicePublicKey
from streams.devices.proof import check_signed_reading
from streams.devices.registry import list_devices
from streams.exceptions import InvalidEnvelope, ShareError
from streams.seal import record_aad
from streams.unseal import record_key_of
from streams.store.base import Store, open_store
from streams.validate import BILL_COLUMNS
from streams.share.grants import LOG_PARTITION, LOG_TABLE, Grant, consent_rows, get_grant
from streams.share.parties import PartyKey, PartyPublicKey
from streams.share.proofs import InclusionChecker, NodeTable, Tree

FORMAT = "meterseal-share/1"
ROW_FIELDS = leaf_codec.FIELDS + ("topic_partition",)
CONSENT_FIELDS = leaf_codec.CONSENT_EVENT_FIELDS
GRANT_PUBLIC = ("grant_id", "party", "party_fingerprint", "kind", "start", "end", "meters", "accounts", "region",
                "fields", "purpose", "expires_at", "created_at")


def _info(grant_id: str) -> bytes:
    return b"meterseal/share/v1|" + grant_id.encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _table(kind: str) -> str:
    return "bills" if kind == "bill" else "readings"


def source_fields(kind: str, plain: dict[str, Any]) -> dict[str, Any]:
    """A decoded record under its source's field names: a bill under the seed CSV's headers."""
    if kind != "bill":  # (a signed reading's device fields are checked and shown apart: ``_device``)
        return {k: v for k, v in plain.items() if k not in ("label", "device")}
    out = {}
    for name, header in BILL_COLUMNS.items():
        value = plain[name]
        out[header] = int(value) if isinstance(value, float) and value.is_integer() else value
    return out


def _digest(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "attestation"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _attestation_text(doc: dict[str, Any]) -> str:
    return f"meterseal share attestation v1\n{doc['grant_id']}\n{len(doc['records'])}\n{_digest(doc)}\n"


# --- export (the owner) ------------------------------------------------------------------------------


def scope_rows(store_dir: Path | str, grant: Grant, reader: Any) -> list[dict[str, Any]]:
    """The stored rows in ``grant``'s scope (a ``streams.query.Reader`` with the index key makes the tokens)."""
    from streams.store.query import Query

    start, end = dt.date.fromisoformat(grant.start), dt.date.fromisoformat(grant.end)
    queries = ([Query(start=start, end=end, meter=m) for m in grant.meters]
               + [Query(start=start, end=end, account=a) for a in grant.accounts]
               + ([Query(start=start, end=end, region=grant.region)] if grant.region else []))
    seen: dict[str, dict[str, Any]] = {}
    for query in queries:
        for row in reader.search(query, kinds=[grant.kind]):
            seen.setdefault(row["record_id"], row)
    return sorted(seen.values(), key=lambda r: (r["topic_partition"], r["leaf_index"]))


def export_bundle(store_dir: Path | str | Store, grant_id: str, *, owner: Any, signer: Signer | Sequence[Signer],
                  now: float | None = None) -> tuple[bytes, dict[str, Any]]:
    """The share bundle of an active grant (JSON bytes) and a summary. ``owner`` is the unlocked keystore
    (``UnlockedKeys``: index key to find the records, the owner's keyring to unwrap their DEKs);
    ``signer`` the ledger key(s) that sign the bundle's attestation."""
    from streams.store.query import Reader

    now = time.time() if now is None else now
    signers = list(signer) if isinstance(signer, (list, tuple)) else [signer]
    store = open_store(store_dir, create=False)  # a directory, s3://... or a Store: one store for every read
    grant = get_grant(store, grant_id, index_key=owner.index_key, now=now)
    grant.check_active(now=now)
    if not grant.party_public_key:
        raise ShareError(f"grant {grant.grant_id}: party {grant.party} registered no public key, so it gets no "
                         "bundle (ESPI feeds only): register it again with `meterseal party add --public-key`")
    recipient = PartyPublicKey.parse(grant.party_public_key)
    if recipient.fingerprint != grant.party_fingerprint:
        raise ShareError(f"grant {grant.grant_id}: its party key does not match its fingerprint")
    reader = Reader(store, keys=owner)
    rows = scope_rows(store, grant, reader)
    unsigned = [r for r in rows if r.get("leaf_index") is None]
    if unsigned:
        raise ShareError(f"{len(unsigned)} records in scope have no ledger leaf yet: try again in a few seconds")
    plains = reader.open_many(rows)  # owner-side check: every record opens and its id rechecks
    keyring = reader.keyring  # the same DEKs again: unwrapped once
    signers_of = {p["device"]["kid"] for p in plains if p.get("device")} if grant.fields is None else set()
    devices = {d.kid: _b64(d.public_key.spki) for d in list_devices(store, index_key=owner.index_key)
               if d.kid in signers_of} if signers_of else {}

    nodes, checkpoints, records, secrets = NodeTable(), [], [], []
    by_log: dict[tuple[str, int], list[int]] = {}
    for i, row in enumerate(rows):
        by_log.setdefault((_table(row["kind"]), row["topic_partition"]), []).append(i)
    entries: dict[int, dict[str, Any]] = {}
    for (table, p), indexes in sorted(by_log.items()):
        note, tree = _newest_tree(store, table, p, max(rows[i]["leaf_index"] for i in indexes))
        checkpoints.append(note)
        for i in indexes:
            row = rows[i]
            entries[i] = {"log": f"{table}/{p}", "checkpoint": len(checkpoints) - 1,
                          "row": {k: (_b64(row[k]) if k == "envelope" else row.get(k)) for k in ROW_FIELDS},
                          "path": nodes.refs(tree.path(row["leaf_index"]))}
    for i, (row, plain) in enumerate(zip(rows, plains)):
        records.append(entries[i])
        if grant.fields is None and env.version_of(row["envelope"]) != env.VERSION:
            secrets.append({"key": record_key_of(keyring, row).hex()})
        else:  # projected (or sealed before per-record keys): the values, re-sealed to the party
            values = source_fields(row["kind"], plain)
            if grant.fields is not None:
                values = {f: values[f] for f in grant.fields if f in values}
            secrets.append({"values": values})

    consent = []
    events = [r for r in consent_rows(store) if r["grant_id"] == grant.grant_id]
    if events:
        note, tree = _newest_tree(store, LOG_TABLE, LOG_PARTITION, max(r["leaf_index"] for r in events))
        checkpoints.append(note)
        for r in events:
            consent.append({"checkpoint": len(checkpoints) - 1, "path": nodes.refs(tree.path(r["leaf_index"])),
                            "row": {k: (_b64(r[k]) if k == "body" else r[k]) for k in CONSENT_FIELDS}})

    payload = json.dumps({"grant_id": grant.grant_id, "records": secrets}, separators=(",", ":")).encode()
    public = {k: v for k, v in grant.to_dict().items() if k in GRANT_PUBLIC}
    doc = {"format": FORMAT, "grant_id": grant.grant_id, "grant": public, "exported_at": _iso(now),
           "projected": grant.fields is not None, "checkpoints": checkpoints,
           "nodes": [n.hex() for n in nodes.nodes], "records": records, "consent": consent, "devices": devices,
           "sealed": _b64(recipient.seal(payload, info=_info(grant.grant_id)))}
    doc["attestation"] = sign(_attestation_text(doc), *signers)
    data = json.dumps(doc, separators=(",", ":")).encode()
    summary = {"grant_id": grant.grant_id, "party": grant.party, "records": len(records),
               "record_keys": sum("key" in s for s in secrets), "projected": sum("values" in s for s in secrets),
               "logs": len(by_log), "bytes": len(data)}
    return data, summary


def _newest_tree(store: Store, table: str, partition: int, max_leaf: int) -> tuple[str, Tree]:
    notes = store.checkpoint_store(table, partition).all()
    if not notes or Checkpoint.from_note(notes[-1]).size <= max_leaf:
        raise ShareError(f"records of {table}/p{partition} up to leaf {max_leaf} are not under a signed checkpoint "
                         "yet: try again in a few seconds (the worker signs every METERSEAL_CHECKPOINT_S)")
    note = notes[-1]
    cp = Checkpoint.from_note(note)
    hashes = store.hash_store(table, partition).read()
    tree = Tree(hashes[: cp.size])
    if tree.root() != cp.root:
        raise ShareError(f"the ledger of {table}/p{partition} does not reproduce its checkpoint: run "
                         "`meterseal ledger verify` before sharing")
    return note, tree


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- open (the recipient) ------------------------------------------------------------------------------


@dataclass
class OpenedShare:
    grant: dict[str, Any]
    records: list[dict[str, Any]]
    checked_keys: list[str]
    verifiable_fields: list[str]
    attested_fields: list[str]
    consent: list[dict[str, Any]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)


def open_bundle(data: bytes, *, party: PartyKey, verifiers: Sequence[Verifier]) -> OpenedShare:
    """Check and open a bundle with the recipient's ``party`` key and the checkpoint keys it trusts."""
    if not verifiers:
        raise ShareError("give the checkpoint verifier key(s) you trust (--vkey): the bundle's own are not trusted")
    try:
        if data[:2] == b"\x1f\x8b":  # written as FILE.gz
            data = gzip.decompress(data)
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} bundle")
        grant, grant_id = doc["grant"], doc["grant_id"]
        nodes = [bytes.fromhex(h) for h in doc["nodes"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ShareError(f"bundle is malformed: {exc}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise ShareError(f"bundle is not readable gzip: {exc}") from None
    if grant.get("grant_id") != grant_id:
        raise ShareError("bundle is malformed: its grant id and its grant disagree")

    checked: set[str] = set()
    cps = []
    for i, note in enumerate(doc["checkpoints"]):
        try:
            text, names = _open_by_all(note, verifiers)
            cps.append(Checkpoint.parse(text))
        except (NoteError, TypeError, AttributeError) as exc:
            raise ShareError(f"checkpoint {i} of the bundle: {exc} (forged, altered, or signed by a key you did "
                             "not give with --vkey)") from None
        checked.update(names)

    checker = InclusionChecker()

    def included(leaf: bytes, entry: dict[str, Any], what: str, log: str) -> None:
        try:
            cp = cps[entry["checkpoint"]]
            table, partition = log.split("/")
            if not cp.origin.startswith("meterseal/") or not cp.origin.endswith(f"/{table}/{int(partition)}"):
                raise ProofError(f"its checkpoint is for log {cp.origin}, not {log}")
            checker.check((cp.origin, cp.size, cp.root), leaf_hash(leaf), entry["row"]["leaf_index"], cp.size,
                          [nodes[j] for j in entry["path"]], cp.root)
        except (ProofError, ValueError, IndexError, KeyError, TypeError) as exc:
            raise ShareError(f"{what}: inclusion proof does not verify against its signed checkpoint ({exc})") from None

    rows = []
    for n, entry in enumerate(doc["records"]):
        try:
            row = {k: entry["row"][k] for k in ROW_FIELDS}
            row["envelope"] = base64.b64decode(row["envelope"], validate=True)
            what = f"record {n} ({row['record_id']}, leaf {row['leaf_index']} of {entry['log']})"
        except (KeyError, ValueError, TypeError) as exc:
            raise ShareError(f"record {n} of the bundle is malformed: {exc}") from None
        included(leaf_codec.encode(row), entry, what, entry["log"])
        if entry["log"].split("/")[0] != _table(row["kind"]) or str(row["topic_partition"]) != entry["log"].split("/")[1]:
            raise ShareError(f"{what}: it claims another log than its row's")
        rows.append((what, row))

    consent = []
    for n, entry in enumerate(doc.get("consent", [])):
        try:
            row = dict(entry["row"])
            row["body"] = base64.b64decode(row["body"], validate=True)
        except (KeyError, ValueError, TypeError) as exc:
            raise ShareError(f"consent event {n} of the bundle is malformed: {exc}") from None
        what = f"consent event {n} ({row.get('event')}, leaf {row.get('leaf_index')} of {LOG_TABLE}/{LOG_PARTITION})"
        included(leaf_codec.encode_consent_event(row), entry, what, f"{LOG_TABLE}/{LOG_PARTITION}")
        if row["grant_id"] != grant_id:
            raise ShareError(f"{what}: it is about another grant")
        consent.append({"event": row["event"], "leaf_index": row["leaf_index"], "at": _iso(row["at_ms"] / 1000),
                        "verified": True})

    try:
        payload = json.loads(party.open(base64.b64decode(doc["sealed"], validate=True), info=_info(grant_id)))
    except (ValueError, KeyError, TypeError) as exc:
        raise ShareError(f"the sealed record keys are malformed: {exc}") from None
    secrets = payload.get("records")
    if payload.get("grant_id") != grant_id or not isinstance(secrets, list) or len(secrets) != len(rows):
        raise ShareError("the sealed record keys do not match the bundle's records (count or grant)")

    out = []
    projected_fields: set[str] = set()
    full = 0
    for (what, row), secret in zip(rows, secrets):
        if "key" in secret:
            try:
                body = env.open_with_record_key(bytes.fromhex(secret["key"]), row["envelope"], aad=record_aad(row))
                plain = _decoder(row["kind"], row["schema_version"])(body)
            except (InvalidEnvelope, ValueError, TypeError, KeyError) as exc:
                raise ShareError(f"{what}: does not open with its record key (altered, or a key for another "
                                 "record)") from exc
            values = source_fields(row["kind"], plain)
            device = _device(what, plain, doc.get("devices") or {})
            full += 1
        else:
            values = dict(secret.get("values") or {})
            projected_fields.update(values)
            device = ()  # projected: the signed payload holds every field, so it does not travel
        check_scope(what, grant, row, values)
        out.append({**values, "record_id": row["record_id"], "leaf_index": row["leaf_index"],
                    "log": f"{_table(row['kind'])}/{row['topic_partition']}", "verified": True,
                    **({} if device == () else {"device": device})})

    try:
        text, names = _open_by_all(doc["attestation"], verifiers)
    except (NoteError, KeyError, TypeError, AttributeError) as exc:
        raise ShareError(f"the owner's signature over the bundle does not verify: {exc}") from None
    if text != _attestation_text(doc):
        raise ShareError("the owner's signature over the bundle does not cover these bytes (altered after export)")
    checked.update(names)
    all_fields = sorted({k for r in out for k in r} - {"record_id", "leaf_index", "log", "verified", "device"})
    verifiable = all_fields if full == len(out) else []
    attested = sorted(projected_fields)
    return OpenedShare(grant, out, sorted(checked), verifiable, attested, consent,
                       sorted({r["log"] for r in out}))


def _device(what: str, plain: dict[str, Any], keys: dict[str, str]) -> dict[str, Any] | None:
    """A reading's device signature checked with the device key the bundle carries (its KEY_ID is its SHA-256, so
    the key cannot be swapped; whose key it is the recipient may check against its own copy): ``{kid, alg, seq,
    verified}``; None for a reading that is not device-signed. ``ShareError`` if the signature does not hold."""
    device = plain.get("device")
    if device is None:
        return None
    try:
        key = DevicePublicKey.parse(base64.b64decode(keys[device["kid"]], validate=True))
        checked = check_signed_reading(plain, key)
    except (KeyError, ValueError, DeviceError) as exc:
        raise ShareError(f"{what}: its device signature does not verify ({exc})") from None
    return {"kid": checked["kid"], "alg": checked["alg"], "seq": checked["device_seq"], "verified": True}


@functools.lru_cache(maxsize=None)
def _decoder(kind: str, version: int):
    """The record body decoder of (kind, writer schema version), read as the newest version."""
    fast = schemas.fast_reader(kind, version)
    if fast is not None:
        return fast
    writer, reader = schemas.get(kind, version), schemas.get(kind)
    return lambda body: schemas.decode_body(body, writer, reader)


def _open_by_all(note: str, verifiers: Sequence[Verifier]) -> tuple[str, list[str]]:
    """``open_note``, and every key the recipient trusts must have signed (not just one of them)."""
    text, names = open_note(note, list(verifiers))
    missing = sorted({v.name for v in verifiers} - set(names))
    if missing:
        raise NoteError(f"no valid signature by {', '.join(missing)}")
    return text, names


def check_scope(what: str, grant: dict[str, Any], row: dict[str, Any], values: dict[str, Any]) -> None:
    """A record outside the grant fails the bundle: wrong kind, region, meter, account or date."""
    kind = "bills" if row["kind"] == "bill" else "readings"
    if kind != grant["kind"]:
        raise ShareError(f"{what}: a {row['kind']} in a grant for {grant['kind']}")
    if grant.get("region") and row.get("region") != grant["region"]:
        raise ShareError(f"{what}: region {row.get('region')} is outside the grant")
    meter = values.get("meter_id", values.get("Meter No."))
    if grant.get("meters") and meter is not None and str(meter) not in grant["meters"]:
        raise ShareError(f"{what}: meter outside the grant")
    account = values.get("account_id", values.get("Account ID"))
    if grant.get("accounts") and account is not None and str(account) not in grant["accounts"]:
        raise ShareError(f"{what}: account outside the grant")
    when = values.get("ts", values.get("Date"))
    if when is not None:
        day = _day_of(str(when))
        if not grant["start"] <= day <= grant["end"]:
            raise ShareError(f"{what}: date {day} is outside the grant's {grant['start']}..{grant['end']}")


def _day_of(text: str) -> str:
    if len(text) == 10:
        return text
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc)
    return value.date().isoformat()
