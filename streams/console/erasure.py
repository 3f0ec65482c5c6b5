"""The console's side of the right to erasure: a customer asks ("Erase my data"), an administrator approves or
refuses with a reason before the deadline, the erasure runs (``streams.erasure.job``, in a thread: it waits for
the workers' fence poll), and the customer sees the outcome and downloads a receipt signed with the ledger key.

The requests are ``streams.erasure.requests`` (who asked and for what, sealed in the store); this module is only
the routes and ``ErasedMeters``, which keeps every page from showing an erased meter again (the live alert feed
replays the ``alerts`` topic, which keeps an erased meter's alerts by token).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from ..erasure.job import Owner, erase
from ..erasure.requests import (Request as ErasureRequest, decide, get_request, list_requests, receipt,
                                record_outcome, request_erasure)
from ..exceptions import ErasureError, MeterSealError, UnknownSubject
from ..keys.subjects import Fence
from .roles import NotFound, Principal, allow

router = APIRouter()
log = logging.getLogger("meterseal.console")
REFRESH_S = 2.0


class ErasedMeters:
    """``erased(token)``: whether an erasure fenced a meter or account token (the fence read again at most every
    ``REFRESH_S``); ``hide(alert)`` for the alert feed."""

    def __init__(self, store: Any) -> None:
        self._fence = Fence(store.blobs)
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def erased(self, token: str | None) -> bool:
        now = time.monotonic()
        if now - self._read_at >= REFRESH_S:
            with self._lock:
                if now - self._read_at >= REFRESH_S:
                    try:
                        self._fence.refresh()
                    except MeterSealError as exc:  # the store is unreachable: keep what is known, say so
                        log.error("erasure fence not read: %s", exc)
                    self._read_at = now
        return token is not None and self._fence.entry(token) is not None

    def hide(self, alert: dict[str, Any]) -> bool:
        return self.erased(alert.get("meter_tok"))


def customer_requests(state: Any, who: Principal) -> list[dict[str, Any]]:
    vault = state.vault
    if vault is None:
        return []
    return [r.to_dict() for r in reversed(list_requests(vault.store, index_key=vault.index_key, requester=who.user.name))]


def admin_requests(state: Any) -> list[dict[str, Any]]:
    vault = state.vault
    if vault is None:
        return []
    now = time.time()
    return [{**r.to_dict(), "overdue": r.overdue(now)} for r in list_requests(vault.store, index_key=vault.index_key)
            if r.status in ("open", "approved", "failed")]


@router.post("/customer/erasure")
def ask(request: Request, who: Principal = Depends(allow("POST", "/customer/erasure"))) -> Response:
    """"Erase my data": a request for every meter of the customer's account."""
    vault = request.app.state.console.vault
    if vault is None or not who.user.meters:
        raise NotFound()
    try:
        request_erasure(vault.store, index_key=vault.index_key, requester=who.user.name, meters=who.user.meters)
    except ErasureError as exc:
        return RedirectResponse(f"/customer?erasure={'exists' if 'already' in str(exc) else 'refused'}#erasure",
                                status_code=303)
    return RedirectResponse("/customer?erasure=asked#erasure", status_code=303)


@router.get("/customer/erasure/{request_id}/receipt")
def customer_receipt(request_id: str, request: Request,
                     who: Principal = Depends(allow("GET", "/customer/erasure/{request_id}/receipt"))) -> Response:
    """The signed receipt of one of the customer's own requests (another's: 404, as one that does not exist)."""
    vault = request.app.state.console.vault
    found = _own(vault, request_id, who)
    doc = receipt(vault.store, found, signer=vault.signer)
    return Response(json.dumps(doc, indent=1), media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="erasure-receipt-{request_id}.json"'})


@router.post("/admin/erasure/{request_id}/approve")
def approve(request_id: str, request: Request,
            who: Principal = Depends(allow("POST", "/admin/erasure/{request_id}/approve"))) -> Response:
    """Approve a request: the erasure runs now, in the background; the page shows its outcome."""
    state = request.app.state.console
    vault = _found(state.vault, request_id)
    try:
        decided = decide(vault.store, request_id, index_key=vault.index_key, by=who.user.name, approve=True)
    except ErasureError:  # decided already (two admins at once): say so
        return RedirectResponse("/admin?erasure=decided#erasures", status_code=303)
    threading.Thread(target=run_erasure, args=(state, decided), name=f"erasure-{request_id}", daemon=True).start()
    return RedirectResponse("/admin?erasure=approved#erasures", status_code=303)


@router.post("/admin/erasure/{request_id}/refuse")
def refuse(request_id: str, request: Request, reason: str = Form(""),
           who: Principal = Depends(allow("POST", "/admin/erasure/{request_id}/refuse"))) -> Response:
    """Refuse a request, with the reason the customer is shown (GDPR Art. 17(3): e.g. a bill still disputed)."""
    vault = _found(request.app.state.console.vault, request_id)
    try:
        decide(vault.store, request_id, index_key=vault.index_key, by=who.user.name, approve=False, reason=reason)
    except ErasureError as exc:  # no reason given, or decided already
        return RedirectResponse(f"/admin?erasure={'needs-reason' if 'reason' in str(exc) else 'decided'}#erasures",
                                status_code=303)
    return RedirectResponse("/admin?erasure=refused#erasures", status_code=303)


def run_erasure(state: Any, decided: ErasureRequest) -> None:
    """Erase every meter of an approved request (each reaches its customer); record the outcome. Never raises: a
    failure is recorded on the request, and approving it again is not needed — the CLI finishes a cut-short job."""
    vault = state.vault
    keys = vault.keys.unlocked()
    erasure_id = None
    try:
        for meter in decided.meters:  # (a meter the first one's customer reached is then erased already)
            try:
                report = erase(vault.store, owner=Owner(keys.index_key, keys.dek_unwrap), signers=[vault.signer],
                               registry=state.registry, kind="meter", subject_id=meter, reason="customer-request",
                               grace_s=state.erasure_grace_s, data_dir=vault.data_dir,
                               extra={"connect_public_url": state.public_url})
            except UnknownSubject:
                continue  # a meter of the account with no data: nothing to erase
            erasure_id = erasure_id or report["erasure_id"]
        record_outcome(vault.store, decided.request_id, index_key=vault.index_key, erasure_id=erasure_id)
    except Exception as exc:  # noqa: BLE001 - recorded on the request and logged; the console stays up
        log.exception("erasure of request %s failed", decided.request_id)
        record_outcome(vault.store, decided.request_id, index_key=vault.index_key, erasure_id=erasure_id,
                       failed=f"the erasure stopped ({type(exc).__name__}): run `meterseal subject erase` to finish it")


def _found(vault: Any, request_id: str) -> Any:
    """The vault, if a request ``request_id`` exists (404 otherwise)."""
    if vault is None:
        raise NotFound()
    try:
        get_request(vault.store, request_id, index_key=vault.index_key)
    except ErasureError:
        raise NotFound() from None
    return vault


def _own(vault: Any, request_id: str, who: Principal) -> ErasureRequest:
    found = get_request(_found(vault, request_id).store, request_id, index_key=vault.index_key)
    if found.requester != who.user.name:
        raise NotFound()
    return found
