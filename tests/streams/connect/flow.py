"""Helpers the Connect My Data tests share: a customer's consent over plain HTTP, PKCE values, token calls."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from tests.streams.console.conftest import csrf_of, login

from .conftest import SCOPE


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(party: dict, challenge: str, *, scope: str = SCOPE, state: str = "st-1", **extra: str) -> str:
    params = {"response_type": "code", "client_id": party["client_id"], "redirect_uri": party["redirect_uri"],
              "scope": scope, "state": state, "code_challenge": challenge, "code_challenge_method": "S256", **extra}
    return "/oauth/authorize?" + urlencode({k: v for k, v in params.items() if v is not None})


def consent(base: str, customer: str, url: str, *, decision: str = "approve", meters: list[str] | None = None,
            csrf: str | None = None) -> httpx.Response:
    """Log in as ``customer``, open the consent page at ``url`` and answer it; returns the answer's response."""
    client = login(base, customer)
    page = client.get(url, headers={"accept": "text/html"})
    assert page.status_code == 200, page.text
    token = csrf_of(page.text) if csrf is None else csrf
    chosen = meters if meters is not None else re.findall(r'name="meter" value="([^"]+)"', page.text)
    data = {"csrf_token": token, "decision": decision, "meter": chosen}
    return client.post(url, data=data, headers={"accept": "text/html"})


def code_of(response: httpx.Response) -> str:
    assert response.status_code == 302, (response.status_code, response.text)
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["state"] == ["st-1"]
    return query["code"][0]


def exchange(base: str, party: dict, code: str, verifier: str | None, *, basic: bool = True,
             redirect_uri: str | None = None, client_id: str | None = None, secret: str | None = None) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": redirect_uri or party["redirect_uri"]}
    if verifier is not None:
        data["code_verifier"] = verifier
    cid, sec = client_id or party["client_id"], secret or party["secret"]
    if basic:
        return httpx.post(f"{base}/oauth/token", data=data, auth=(cid, sec), timeout=30)
    return httpx.post(f"{base}/oauth/token", data={**data, "client_id": cid, "client_secret": sec}, timeout=30)


def new_tokens(base: str, party: dict, customer: str = "alice", meters: list[str] | None = None) -> dict:
    verifier, challenge = pkce()
    code = code_of(consent(base, customer, authorize_url(party, challenge), meters=meters))
    r = exchange(base, party, code, verifier)
    assert r.status_code == 200, r.text
    return r.json()


def espi_get(base: str, path: str, token: str, **kw) -> httpx.Response:
    return httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {token}", **kw.pop("headers", {})},
                     timeout=60, **kw)
