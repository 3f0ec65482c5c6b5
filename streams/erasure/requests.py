"""Erasure requests: a customer asks to be forgotten, an administrator decides within the deadline (GDPR Art. 12(3):
a month), and the customer gets the outcome and a signed receipt.

A request is an object ``erasures/requests/<id>.json``: its id, status (``open``, ``approved``, ``refused``,
``erased``), the times and the deadline in clear; who asked, for which meters, and the administrator's reason
sealed (AES-256-GCM under a key derived from the index key) — the store shows that requests exist and how fast
they are answered, not whose. The request stays after the erasure: it is the record that the right was honoured.

A **receipt** is the request's outcome as canonical JSON — and, once erased, the erasure's id, its leaf in the
erasure log, an inclusion proof of that leaf and the signed checkpoint it is under — signed as a whole with the
ledger key (a C2SP signed note). ``verify_receipt`` checks it with only the ledger's verifier key.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ledger.checkpoint import Checkpoint
from ledger.hashing import leaf_hash
from ledger.note import Signer, Verifier, open_note, sign
from ledger.proof import inclusion_proof
from ledger.verify import verify_inclusion
from ledger import leaf as leaf_codec

from streams.crypto import _primitives
from streams.crypto.envelope import DataKey, open_with, seal
from streams.erasure.log import LOG_PARTITION, LOG_TABLE, find_event
from streams.exceptions import ErasureError, InvalidEnvelope
from streams.store.base import Store
from streams.store.objects import json_objects

REQUESTS = "erasures/requests/"
DEADLINE_DAYS = 30
STATUSES = ("open", "approved", "refused", "erased", "failed")
MAX_REASON = 500
_KEY_ID = b"meterseal-erasreq"[:16]
RECEIPT_VERSION = "meterseal-erasure-receipt-v1"


@dataclass(frozen=True)
class Request:
    request_id: str
    status: str
    requested_at: str
    deadline: str
    requester: str  # the console account that asked (sealed in the store)
    meters: tuple[str, ...]  # its meters (sealed)
    decided_at: str | None = None
    decided_by: str | None = None
    reason: str | None = None
    erasure_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["meters"] = list(self.meters)
        return out

    def overdue(self, now: float) -> bool:
        return self.status == "open" and _epoch(self.deadline) < now


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _key(index_key: bytes) -> DataKey:
    return DataKey(_KEY_ID, _primitives.hkdf_sha256(index_key, info=b"meterseal/erasure-request/v1"))


def _save(store: Store, index_key: bytes, request: Request) -> None:
    private = {k: v for k, v in request.to_dict().items() if k in ("requester", "meters", "decided_by", "reason")}
    public = {k: v for k, v in request.to_dict().items() if k not in private}
    sealed = seal(_key(index_key), json.dumps(private, sort_keys=True).encode(), aad=request.request_id.encode())
    store.blobs.put(f"{REQUESTS}{request.request_id}.json", json.dumps({**public, "sealed": sealed.hex()},
                                                                        indent=1, sort_keys=True).encode())


def _load(store: Store, index_key: bytes, doc: dict[str, Any]) -> Request:
    doc = dict(doc)
    try:
        private = json.loads(open_with({_KEY_ID: _key(index_key)}, bytes.fromhex(doc.pop("sealed")),
                                       aad=doc["request_id"].encode()))
    except InvalidEnvelope as exc:
        raise ErasureError(f"erasure request {doc.get('request_id')} does not open with this index key") from exc
    return Request(**{**doc, **private, "meters": tuple(private["meters"])})


def request_erasure(store: Store, *, index_key: bytes, requester: str, meters: Sequence[str],
                    now: float | None = None) -> Request:
    """A customer's request to erase its meters' data; one open request per customer at a time."""
    now = time.time() if now is None else now
    meters = tuple(sorted({m.strip() for m in meters if m and m.strip()}))
    if not meters:
        raise ErasureError("an erasure request needs the customer's meters")
    for existing in list_requests(store, index_key=index_key):
        if existing.requester == requester and existing.status in ("open", "approved"):
            raise ErasureError(f"an erasure request of {existing.requested_at} is {existing.status} already")
    request = Request(os.urandom(12).hex(), "open", _iso(now), _iso(now + DEADLINE_DAYS * 86400), requester, meters)
    _save(store, index_key, request)
    return request


def list_requests(store: Store, *, index_key: bytes, requester: str | None = None) -> list[Request]:
    """Every request (or one customer's), oldest first."""
    found = [_load(store, index_key, doc) for _, doc in json_objects(store.blobs, REQUESTS)]
    found.sort(key=lambda r: r.requested_at)
    return [r for r in found if requester is None or r.requester == requester]


def get_request(store: Store, request_id: str, *, index_key: bytes) -> Request:
    raw = store.blobs.get(f"{REQUESTS}{request_id}.json") if request_id.isalnum() else None
    if raw is None:
        raise ErasureError(f"no erasure request {request_id}")
    return _load(store, index_key, json.loads(raw))


def decide(store: Store, request_id: str, *, index_key: bytes, by: str, approve: bool, reason: str = "",
           now: float | None = None) -> Request:
    """An administrator's decision on an open request (a refusal needs a reason, which the customer sees)."""
    request = get_request(store, request_id, index_key=index_key)
    if request.status != "open":
        raise ErasureError(f"erasure request {request_id} is {request.status}, not open")
    reason = (reason or "").strip()
    if not approve and not reason:
        raise ErasureError("a refusal needs a reason: the customer is told it")
    if len(reason) > MAX_REASON:
        raise ErasureError(f"the reason is longer than {MAX_REASON} characters")
    decided = Request(**{**request.to_dict(), "meters": request.meters, "status": "approved" if approve else "refused",
                         "decided_at": _iso(time.time() if now is None else now), "decided_by": by,
                         "reason": reason or None})
    _save(store, index_key, decided)
    return decided


def record_outcome(store: Store, request_id: str, *, index_key: bytes, erasure_id: str | None,
                   failed: str | None = None) -> Request:
    """After the erasure job: ``erased`` with its id, or ``failed`` (the job can be run again)."""
    request = get_request(store, request_id, index_key=index_key)
    done = Request(**{**request.to_dict(), "meters": request.meters, "status": "failed" if failed else "erased",
                      "erasure_id": erasure_id, "reason": failed or request.reason})
    _save(store, index_key, done)
    return done


def receipt(store: Store, request: Request, *, signer: Signer, subject_hash: str | None = None) -> dict[str, Any]:
    """The signed receipt of a request's outcome (with the erasure leaf's inclusion proof once erased)."""
    body: dict[str, Any] = {"version": RECEIPT_VERSION, "request_id": request.request_id, "status": request.status,
                            "requested_at": request.requested_at, "deadline": request.deadline,
                            "decided_at": request.decided_at, "reason": request.reason if request.status != "erased"
                            else None}
    if request.status == "erased" and request.erasure_id:
        event = find_event(store, request.erasure_id)
        if event is None:
            raise ErasureError(f"erasure {request.erasure_id} has no leaf in the erasure log yet")
        notes = [n for n in store.checkpoint_store(LOG_TABLE, LOG_PARTITION).all()
                 if Checkpoint.from_note(n).size > event["leaf_index"]]
        if not notes:
            raise ErasureError("no signed checkpoint covers the erasure yet: try again in a few seconds")
        size = Checkpoint.from_note(notes[-1]).size
        hashes = store.hash_store(LOG_TABLE, LOG_PARTITION).read()[:size]
        body.update(erasure_id=request.erasure_id, subject_hash=event["subject_hash"], erased_at_ms=event["at_ms"],
                    leaf=base64.b64encode(leaf_codec.encode_erasure_event(event)).decode(), leaf_index=event["leaf_index"],
                    tree_size=size, audit_path=[h.hex() for h in inclusion_proof(event["leaf_index"], hashes)],
                    checkpoint=notes[-1])
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return {"receipt": body, "signed": sign(text + "\n", signer)}


def verify_receipt(doc: dict[str, Any], verifiers: Sequence[Verifier]) -> dict[str, Any]:
    """Check a receipt's signature and, when it records an erasure, the leaf's inclusion under its signed checkpoint;
    returns the receipt's body (``ErasureError`` naming what failed)."""
    try:
        text, _ = open_note(doc["signed"], list(verifiers))
    except Exception as exc:  # noqa: BLE001 - one error for any bad signature or note
        raise ErasureError(f"the receipt's signature does not verify: {exc}") from exc
    body = json.loads(text.rstrip("\n"))
    if body != doc.get("receipt"):
        raise ErasureError("the receipt's body differs from what was signed")
    if body.get("leaf") is not None:
        try:
            cp = Checkpoint.parse(open_note(body["checkpoint"], list(verifiers))[0])
            verify_inclusion(leaf_hash(base64.b64decode(body["leaf"])), body["leaf_index"], body["tree_size"],
                             [bytes.fromhex(h) for h in body["audit_path"]], cp.root)
        except Exception as exc:  # noqa: BLE001
            raise ErasureError(f"the erasure leaf is not proven in the signed log: {exc}") from exc
        if cp.size != body["tree_size"]:
            raise ErasureError("the receipt's proof is for another tree size than its checkpoint's")
    return body
