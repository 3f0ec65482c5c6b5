"""Optional OpenID Connect login (authorization code flow with PKCE, Authlib), a claim mapped to a role.

Local accounts stay the default. With ``--oidc-issuer``, the login page offers the identity provider: the
console checks ``state`` (in a short-lived SameSite=Lax cookie, because the provider's redirect back is a
cross-site navigation), exchanges the code with its PKCE verifier, and verifies the ID token's signature
(the provider's JWKS), issuer, audience, expiry and nonce. The role comes from an account linked to the
token's ``sub`` (``meterseal console user add NAME --role R --oidc-subject SUB``) or else from the
``role_claim`` claim; a customer always needs a linked account, since its meters come from the account.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import OAuth2Client
from authlib.jose import JsonWebKey, jwt
from authlib.jose.errors import JoseError
from authlib.oauth2.base import OAuth2Error as OAuthError
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from ..exceptions import ConfigError
from .roles import HOME
from .users import ROLES, User
from .web import client_address, set_session_cookie

router = APIRouter()
COOKIE = "meterseal_oidc"
PENDING_S = 600.0
MAX_PENDING = 10_000
CALLBACK = "/login/oidc/callback"


@dataclass
class OidcConfig:
    """The provider, the console's client and the logins in progress. One OAuth client serves the console's
    lifetime (``close()`` at shutdown); the pending logins are capped at ``max_pending`` (the oldest go first)
    and expire after 10 minutes. ``redirect_uri``: ``METERSEAL_PUBLIC_URL`` + ``/login/oidc/callback``, never
    built from the request's Host header."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    role_claim: str = "meterseal_role"
    scope: str = "openid profile"
    redirect_uri: str | None = None
    max_pending: int = MAX_PENDING
    _meta: dict | None = field(default=None, repr=False)
    _pending: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _client: OAuth2Client | None = field(default=None, repr=False)
    _token_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def metadata(self) -> dict[str, Any]:
        if self._meta is None:
            try:
                meta = httpx.get(self.issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=10).json()
            except (httpx.HTTPError, ValueError) as exc:
                raise ConfigError(f"cannot read the OIDC discovery document of {self.issuer}: {exc}") from exc
            if meta.get("issuer", "").rstrip("/") != self.issuer.rstrip("/"):
                raise ConfigError(f"the provider calls itself {meta.get('issuer')!r}, not {self.issuer!r}")
            self._meta = meta
        return self._meta

    def for_public_url(self, public_url: str | None) -> None:
        """Fix the redirect URI from the console's public URL (``METERSEAL_PUBLIC_URL``) unless one was given."""
        if self.redirect_uri is None:
            if not public_url:
                raise ConfigError("OIDC login needs the console's public URL: set METERSEAL_PUBLIC_URL "
                                  "(e.g. https://console.example.org)")
            self.redirect_uri = public_url.rstrip("/") + CALLBACK

    @property
    def client(self) -> OAuth2Client:
        with self._lock:
            if self._client is None:
                if self.redirect_uri is None:
                    raise ConfigError("OIDC: no redirect URI (METERSEAL_PUBLIC_URL)")
                self._client = OAuth2Client(self.client_id, self.client_secret, scope=self.scope,
                                            redirect_uri=self.redirect_uri, code_challenge_method="S256", timeout=10)
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def begin(self) -> tuple[str, str]:
        """(pending id for the cookie, the provider's authorization URL)."""
        verifier, nonce, state = generate_token(48), secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        url, _ = self.client.create_authorization_url(
            self.metadata()["authorization_endpoint"], state=state, nonce=nonce, code_verifier=verifier)
        pending_id = secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            while self._pending and next(iter(self._pending.values()))["expires"] <= now:
                self._pending.popitem(last=False)
            while len(self._pending) >= self.max_pending:  # a flood of starts: the oldest give way
                self._pending.popitem(last=False)
            self._pending[pending_id] = {"state": state, "nonce": nonce, "verifier": verifier,
                                         "expires": now + PENDING_S}
        return pending_id, url

    def finish(self, pending_id: str | None, *, code: str | None, state: str | None) -> dict[str, Any]:
        """The verified ID-token claims, or ``PermissionError`` (any failure: the same refusal)."""
        with self._lock:
            pending = self._pending.pop(pending_id or "", None)
        if (pending is None or pending["expires"] < time.time() or not code or not state
                or not hmac.compare_digest(pending["state"].encode(), state.encode())):
            raise PermissionError("login expired or not started here: start again")
        meta = self.metadata()
        client = self.client
        try:
            with self._token_lock:  # the client keeps the last token: one exchange at a time
                token = client.fetch_token(meta["token_endpoint"], code=code, code_verifier=pending["verifier"])
            keys = JsonWebKey.import_key_set(client.request("GET", meta["jwks_uri"], withhold_token=True).json())
            claims = jwt.decode(token["id_token"], keys, claims_options={
                "iss": {"essential": True, "value": meta["issuer"]},
                "aud": {"essential": True, "value": self.client_id},
                "nonce": {"essential": True, "value": pending["nonce"]},
                "exp": {"essential": True}, "sub": {"essential": True}})
            claims.validate(leeway=30)
        except (JoseError, OAuthError, KeyError, httpx.HTTPError, ValueError) as exc:
            raise PermissionError(f"the identity provider's answer did not verify ({type(exc).__name__})") from None
        return dict(claims)


def user_for(claims: dict[str, Any], config: OidcConfig, users) -> User:
    """The account a verified token stands for: a linked local account, else the role claim (never customer)."""
    sub = str(claims["sub"])
    linked = users.by_subject(sub)
    if linked is not None:
        return linked
    role = claims.get(config.role_claim)
    if role not in ROLES or role == "customer":
        raise PermissionError(f"no meterseal role for {sub}: ask an admin to link your account "
                              f"(meterseal console user add NAME --role ROLE --oidc-subject {sub})")
    return User(f"oidc:{sub}", role, (), sub)


@router.get("/login/oidc")
def oidc_start(request: Request) -> Response:
    console = request.app.state.console
    pending_id, url = console.oidc.begin()
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(COOKIE, pending_id, max_age=int(PENDING_S), path="/login/oidc", httponly=True,
                        samesite="lax", secure=console.https or request.url.scheme == "https")
    return response


@router.get(CALLBACK, name="oidc_callback")
def oidc_callback(request: Request, code: str | None = None, state: str | None = None) -> Response:
    console = request.app.state.console
    templates = request.app.state.templates
    try:
        claims = console.oidc.finish(request.cookies.get(COOKIE), code=code, state=state)
        user = user_for(claims, console.oidc, console.users)
    except PermissionError as exc:
        response = templates.TemplateResponse(request, "error.html", {"status": 403, "message": str(exc), "user": None},
                                              status_code=403)
        response.delete_cookie(COOKIE, path="/login/oidc")
        return response
    old = console.sessions.get(request.cookies.get(console.cookie_name))
    if old is not None:
        console.sessions.drop(old.id)
    linked = not user.name.startswith("oidc:")
    session = console.sessions.new(user.name, account=user.account_id if linked else None,
                                   auth=user.auth if linked else None, address=client_address(request),
                                   data=None if linked else {"user": user})
    # a page, not a redirect: the next navigation starts on this site, so the SameSite=Strict cookie is sent
    response = templates.TemplateResponse(request, "oidc_done.html", {"user": None, "home": HOME[user.role]})
    set_session_cookie(request, response, console, session.id, console.sessions.ttl_s)
    response.delete_cookie(COOKIE, path="/login/oidc")
    return response
