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
from dataclasses import dataclass, field
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import OAuth2Client
from authlib.jose import JsonWebKey, jwt
from authlib.jose.errors import JoseError
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from ..exceptions import ConfigError
from .roles import HOME
from .users import ROLES, User
from .web import set_session_cookie

router = APIRouter()
COOKIE = "meterseal_oidc"
PENDING_S = 600.0


@dataclass
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    role_claim: str = "meterseal_role"
    scope: str = "openid profile"
    _meta: dict | None = field(default=None, repr=False)
    _pending: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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

    def client(self, redirect_uri: str) -> OAuth2Client:
        return OAuth2Client(self.client_id, self.client_secret, scope=self.scope, redirect_uri=redirect_uri,
                            code_challenge_method="S256", timeout=10)

    def begin(self, redirect_uri: str) -> tuple[str, str]:
        """(pending id for the cookie, the provider's authorization URL)."""
        verifier, nonce, state = generate_token(48), secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        url, _ = self.client(redirect_uri).create_authorization_url(
            self.metadata()["authorization_endpoint"], state=state, nonce=nonce, code_verifier=verifier)
        pending_id = secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            self._pending = {k: v for k, v in self._pending.items() if v["expires"] > now}
            self._pending[pending_id] = {"state": state, "nonce": nonce, "verifier": verifier,
                                         "redirect_uri": redirect_uri, "expires": now + PENDING_S}
        return pending_id, url

    def finish(self, pending_id: str | None, *, code: str | None, state: str | None) -> dict[str, Any]:
        """The verified ID-token claims, or ``PermissionError`` (any failure: the same refusal)."""
        with self._lock:
            pending = self._pending.pop(pending_id or "", None)
        if (pending is None or pending["expires"] < time.time() or not code or not state
                or not hmac.compare_digest(pending["state"].encode(), state.encode())):
            raise PermissionError("login expired or not started here: start again")
        meta = self.metadata()
        try:
            token = self.client(pending["redirect_uri"]).fetch_token(
                meta["token_endpoint"], code=code, code_verifier=pending["verifier"])
            keys = JsonWebKey.import_key_set(httpx.get(meta["jwks_uri"], timeout=10).json())
            claims = jwt.decode(token["id_token"], keys, claims_options={
                "iss": {"essential": True, "value": meta["issuer"]},
                "aud": {"essential": True, "value": self.client_id},
                "nonce": {"essential": True, "value": pending["nonce"]},
                "exp": {"essential": True}, "sub": {"essential": True}})
            claims.validate(leeway=30)
        except (JoseError, KeyError, httpx.HTTPError, ValueError) as exc:
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
    config: OidcConfig = request.app.state.console.oidc
    pending_id, url = config.begin(str(request.url_for("oidc_callback")))
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(COOKIE, pending_id, max_age=int(PENDING_S), path="/login/oidc", httponly=True,
                        samesite="lax", secure=request.url.scheme == "https")
    return response


@router.get("/login/oidc/callback", name="oidc_callback")
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
    session = console.sessions.new(user.name, data={"user": user} if user.name.startswith("oidc:") else None)
    # a page, not a redirect: the next navigation starts on this site, so the SameSite=Strict cookie is sent
    response = templates.TemplateResponse(request, "oidc_done.html", {"user": None, "home": HOME[user.role]})
    set_session_cookie(request, response, console, session.id, console.sessions.ttl_s)
    response.delete_cookie(COOKIE, path="/login/oidc")
    return response

