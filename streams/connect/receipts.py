"""Consent receipts: the Kantara Initiative Consent Receipt v1.1 fields, plus the proof that the consent
event is in the ledger — its consent-log leaf, an RFC 6962 inclusion proof and the signed checkpoint.

One receipt per consent event: a grant (consent given), a denial (``denial_receipt``; its ``grant_id`` names
the refusal), a revocation (``endsReceipt`` names the grant's receipt) and an expiry (no leaf of its own: the expiry time is inside the grant's signed leaf, so it
carries that leaf's proof). ``piiPrincipalId`` is the blind-index token of the grant's first meter, never a
meter id. ``verify_receipt`` checks a receipt offline with trusted checkpoint keys.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any, Callable, Sequence

from ledger import leaf as leaf_codec
from ledger.checkpoint import Checkpoint
from ledger.exceptions import NoteError, ProofError
from ledger.hashing import leaf_hash
from ledger.note import Verifier, open_note
from ledger.verify import verify_inclusion
from streams.exceptions import ShareError
from streams.share.grants import LOG_PARTITION, LOG_TABLE, Grant, consent_rows
from streams.share.proofs import Tree
from streams.store.base import Store, open_store

VERSION = "KI-CR-v1.1.0"
_NS = uuid.UUID("3b0f2a52-6d1e-4a8e-9f3c-2a7d5c1e0b44")


def _proof(store: Store, leaf_index: int) -> tuple[str, list[str], int]:
    notes = store.checkpoint_store(LOG_TABLE, LOG_PARTITION).all()
    if not notes or Checkpoint.from_note(notes[-1]).size <= leaf_index:
        raise ShareError(f"consent leaf {leaf_index} is not under a signed checkpoint yet")
    note = notes[-1]
    cp = Checkpoint.from_note(note)
    tree = Tree(store.hash_store(LOG_TABLE, LOG_PARTITION).read()[: cp.size])
    if tree.root() != cp.root:
        raise ShareError("the consent log does not reproduce its checkpoint: run `meterseal ledger verify`")
    return note, [h.hex() for h in tree.path(leaf_index)], cp.size


def receipts(store_dir: Any, grant: Grant, *, principal: str, controller: str, jurisdiction: str = "",
             collection: str = "web form (OAuth 2.0 consent page)", now_iso: Callable[[], str] | None = None
             ) -> list[dict[str, Any]]:
    """The grant's receipts, oldest first: its consent, then its revocation or expiry if any."""
    store = open_store(store_dir, create=False)
    rows = {r["leaf_index"]: r for r in consent_rows(store) if r["grant_id"] == grant.grant_id}
    about = {"id": grant.grant_id, "party": grant.party, "purpose": grant.purpose, "client_id": grant.client_id,
             "scope": grant.scope, "meters": len(grant.meters), "state": grant.state, "termination": grant.expires_at}
    common = dict(principal=principal, controller=controller, jurisdiction=jurisdiction, collection=collection)
    given = _receipt(store, rows[grant.created_leaf], about, "consent", grant.created_at, **common)
    out = [given]
    if grant.revoked_leaf is not None:
        out.append(_receipt(store, rows[grant.revoked_leaf], about, "revocation", grant.revoked_at, **common,
                            ends=given["consentReceiptID"]))
    elif grant.state == "expired":
        out.append(_receipt(store, rows[grant.created_leaf], about, "expiry", grant.expires_at, **common,
                            ends=given["consentReceiptID"]))
    return out


def denial_receipt(store_dir: Any, denial: dict[str, Any], *, principal: str, controller: str,
                   jurisdiction: str = "", collection: str = "web form (OAuth 2.0 consent page)") -> dict[str, Any]:
    """The receipt of a refusal: the customer said no to a party (``denial``: the opened body of a ``deny``
    leaf, with its ``leaf_index``). Nothing was shared, so its purpose ends at once (``termination``: the
    refusal's time) and ``meterseal.state`` is ``denied``."""
    store = open_store(store_dir, create=False)
    row = next((r for r in consent_rows(store) if r["leaf_index"] == denial["leaf_index"]), None)
    if row is None or row["event"] != "deny" or row["grant_id"] != denial["denial_id"]:
        raise ShareError(f"no refusal {denial['denial_id']} in the consent log")
    about = {"id": denial["denial_id"], "party": denial["party"], "purpose": denial.get("purpose", ""),
             "client_id": denial.get("client_id"), "scope": denial.get("scope"),
             "meters": len(denial.get("meters") or []), "state": "denied", "termination": denial["denied_at"]}
    return _receipt(store, row, about, "denial", denial["denied_at"], principal=principal, controller=controller,
                    jurisdiction=jurisdiction, collection=collection)


def _receipt(store: Store, row: dict[str, Any], about: dict[str, Any], kind: str, at: str | None, *,
             principal: str, controller: str, jurisdiction: str, collection: str,
             ends: str | None = None) -> dict[str, Any]:
    note, path, size = _proof(store, row["leaf_index"])
    receipt = {
        "version": VERSION, "jurisdiction": jurisdiction,
        "consentTimestamp": int(row["at_ms"] // 1000) if kind != "expiry" else _epoch(at),
        "collectionMethod": collection,
        "consentReceiptID": str(uuid.uuid5(_NS, f"{about['id']}|{kind}")),
        "language": "en", "piiPrincipalId": principal,
        "piiControllers": [{"piiController": controller, "onBehalf": False}],
        "policyUrl": "", "sensitive": False, "spiCat": [],
        "services": [{"service": f"Connect My Data: {about['party']}", "purposes": [{
            "purpose": about["purpose"], "purposeCategory": ["energy services"], "consentType": "EXPLICIT",
            "piiCategory": ["energy usage (interval readings)"], "primaryPurpose": True,
            "termination": about["termination"] or "", "thirdPartyDisclosure": kind != "denial",
            "thirdPartyName": about["party"]}]}],
        "meterseal": {"event": kind, "grant_id": about["id"], "client_id": about["client_id"], "scope": about["scope"],
                      "meters": about["meters"], "at": at, "state": about["state"],
                      "leaf_index": row["leaf_index"], "tree_size": size, "inclusion_proof": path,
                      "checkpoint": note,
                      "consent_event": {k: (base64.b64encode(row[k]).decode() if k == "body" else row[k])
                                        for k in leaf_codec.CONSENT_EVENT_FIELDS}},
    }
    if ends is not None:
        receipt["endsReceipt"] = ends
    return receipt


def _epoch(iso: str | None) -> int:
    import datetime as dt

    return int(dt.datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()) if iso else 0


def verify_receipt(receipt: dict[str, Any], verifiers: Sequence[Verifier]) -> list[str]:
    """Check a receipt offline: the checkpoint's signature by a trusted key, and the consent event's leaf in it.
    Returns the names of the keys that signed; raises ``ShareError`` naming what failed."""
    proof = receipt.get("meterseal") or {}
    try:
        text, names = open_note(proof["checkpoint"], list(verifiers))
        cp = Checkpoint.parse(text)
        row = {**proof["consent_event"], "body": base64.b64decode(proof["consent_event"]["body"])}
        if row["leaf_index"] != proof["leaf_index"] or row["grant_id"] != proof["grant_id"]:
            raise ShareError("the receipt's consent event is not its grant's")
        verify_inclusion(leaf_hash(leaf_codec.encode_consent_event(row)), proof["leaf_index"], cp.size,
                         [bytes.fromhex(h) for h in proof["inclusion_proof"]], cp.root)
    except (KeyError, TypeError, ValueError, NoteError, ProofError) as exc:
        raise ShareError(f"the receipt does not verify: {exc}") from None
    return names
