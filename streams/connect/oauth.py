"""The OAuth 2.0 authorization server, built on Authlib's server components (``authlib.oauth2``).

Authlib does the protocol: request validation, client authentication (``client_secret_basic`` and
``client_secret_post``), the authorization-code and refresh-token grants, PKCE (RFC 7636), revocation
(RFC 7009) and error responses. This module supplies what Authlib leaves to the application: the client
model (``clients.Client``), where codes and tokens live (``tokens.TokenStore``, hashes only), ESPI scope
checks (``scopes``), and a request adapter, so no web framework is imported here — the console hands over an
``HttpRequest`` and gets ``(status, body, headers)`` back.

Stricter than Authlib's defaults, on purpose: PKCE is required for every client and only ``S256`` is
accepted; a redirect URI must equal the registered one exactly; codes live 60 s and are single-use (a reused
code revokes the tokens issued from it); refresh tokens rotate on every use, and a rotated-away refresh token
presented again revokes its whole family; no token outlives its grant; a party not in ``production`` gets
neither codes nor tokens.
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Payload, OAuth2Request, TokenMixin
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant, RefreshTokenGrant
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge

from .clients import Client
from .scopes import InvalidScope, Scope, check_within
from .tokens import CODE_TTL_S, TokenStore, digest

AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class _Headers(dict):
    """Request headers whose ``get`` ignores case (Authlib reads ``Authorization``)."""

    def __init__(self, items: dict[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in items.items()})

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> Any:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


@dataclass(frozen=True)
class HttpRequest:
    """What the web layer hands over: method, full URL, headers, query and form items (repeats kept)."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    query: tuple[tuple[str, str], ...] = ()
    form: tuple[tuple[str, str], ...] = ()

    @property
    def base(self) -> str:
        """Scheme and host of the URL (what resource URIs are built on)."""
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{rest.split('/', 1)[0]}"


class _Payload(OAuth2Payload):
    def __init__(self, items: tuple[tuple[str, str], ...]) -> None:
        self._data: dict[str, str] = {}
        self._list: defaultdict[str, list] = defaultdict(list)
        for k, v in items:
            self._data.setdefault(k, v)
            self._list[k].append(v)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list]:
        return self._list


class _Request(OAuth2Request):
    def __init__(self, http: HttpRequest) -> None:
        super().__init__(http.method, http.url, headers=_Headers(http.headers))
        self.http = http
        self.payload = _Payload(http.query + http.form)
        self._args, self._form = dict(http.query), dict(http.form)

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


@dataclass(frozen=True)
class Consent:
    """Authlib's "user": the grant a customer approved (or a token's grant), when it ends, and the token family."""

    grant_id: str
    expires_at: float
    family: str = ""


class _ClientModel(ClientMixin):
    def __init__(self, client: Client) -> None:
        self.client = client
        self.client_id = client.client_id

    def get_client_id(self) -> str:
        return self.client.client_id

    def get_default_redirect_uri(self) -> str:
        return self.client.redirect_uri

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri == self.client.redirect_uri  # exactly: no prefix, no pattern

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client.check_secret(client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and self.client.status == "production"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token") and self.client.status == "production"


class _Code:
    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row

    def get_redirect_uri(self) -> str:
        return self.row["redirect_uri"]

    def get_scope(self) -> str:
        return self.row["scope"]


class _Token(TokenMixin):
    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row

    def check_client(self, client: _ClientModel) -> bool:
        return self.row["client_id"] == client.client_id

    def get_scope(self) -> str:
        return self.row["scope"]

    def get_expires_in(self) -> int:
        return int(self.row["expires_at"] - self.row["issued_at"])

    def is_expired(self) -> bool:
        return self.row["expires_at"] <= time.time()

    def is_revoked(self) -> bool:
        return self.row["revoked_at"] is not None


class _S256(CodeChallenge):
    """PKCE required for every client, S256 only (Authlib's own check skips PKCE when a confidential client
    sends no challenge, and accepts ``plain``)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge and code_challenge_method=S256",
                                      redirect_uri=redirect_uri, state=data.get("state"))
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256", redirect_uri=redirect_uri,
                                      state=data.get("state"))
        super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge(self, authorization_code: _Code) -> str:
        return authorization_code.row["challenge"]

    def get_authorization_code_challenge_method(self, authorization_code: _Code) -> str:
        return authorization_code.row["method"]


class Server(AuthorizationServer):
    """Authlib's ``AuthorizationServer`` over meterseal's clients, tokens and grants.

    ``find_client(client_id) -> Client | None``; ``grant_end(grant_id) -> float | None`` (epoch seconds when an
    *active* grant ends, None when it is not active); ``access_ttl_s``: access-token lifetime."""

    def __init__(self, tokens: TokenStore, *, find_client: Callable[[str], Client | None],
                 grant_end: Callable[[str], float | None], access_ttl_s: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.tokens, self._find_client, self.grant_end = tokens, find_client, grant_end
        self.access_ttl_s, self.clock = access_ttl_s, clock
        self.register_token_generator("default", self._generate)
        self.register_grant(_CodeGrant, [_S256(required=True)])
        self.register_grant(_RefreshGrant)
        self.register_endpoint(_Revocation)

    # -- what Authlib asks of the application ---------------------------------------------------------
    def query_client(self, client_id: str) -> _ClientModel | None:
        client = self._find_client(client_id)
        return _ClientModel(client) if client else None

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        return request if isinstance(request, OAuth2Request) else _Request(request)

    def create_json_request(self, request: Any) -> Any:
        return self.create_oauth2_request(request)

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, list(headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def _generate(self, grant_type: str, client: _ClientModel, user: Consent | None = None, scope: str | None = None,
                  expires_in: int | None = None, include_refresh_token: bool = True) -> dict[str, Any]:
        now = self.clock()
        ends = user.expires_at if user else now
        token = {"token_type": "Bearer", "access_token": secrets.token_urlsafe(32),
                 "expires_in": max(1, int(min(now + self.access_ttl_s, ends) - now)), "scope": scope or ""}
        if include_refresh_token:
            token["refresh_token"] = secrets.token_urlsafe(32)
        return token

    def save_token(self, token: dict[str, Any], request: _Request) -> None:
        consent: Consent = request.user
        client = request.client
        family = consent.family or (digest(request.form.get("code", "")) if request.form.get("code") else "")
        now = self.clock()
        self.tokens.issue(token["access_token"], kind="access", client_id=client.client_id, grant_id=consent.grant_id,
                          scope=token["scope"], family=family, expires_at=now + token["expires_in"])
        if "refresh_token" in token:
            self.tokens.issue(token["refresh_token"], kind="refresh", client_id=client.client_id,
                              grant_id=consent.grant_id, scope=token["scope"], family=family,
                              expires_at=consent.expires_at)  # never outlives the grant
        base = f"{request.http.base}/espi/1_1/resource"
        token["resourceURI"] = f"{base}/Batch/Subscription/{consent.grant_id}"
        token["authorizationURI"] = f"{base}/Authorization/{consent.grant_id}"

    def consent_for(self, grant_id: str, family: str = "") -> Consent | None:
        ends = self.grant_end(grant_id)
        return None if ends is None or ends <= self.clock() else Consent(grant_id, ends, family)


class _CodeGrant(AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    AUTHORIZATION_CODE_LENGTH = 43
    server: Server

    def validate_requested_scope(self) -> None:
        """The ESPI scope, parsed strictly and no wider than the client's registered scope."""
        scope = self.request.payload.scope
        try:
            check_within(Scope.parse(scope), self.request.client.client.registered_scope)
        except InvalidScope as exc:
            raise InvalidScopeError(description=str(exc)) from None

    def generate_authorization_code(self) -> str:
        return secrets.token_urlsafe(32)

    def save_authorization_code(self, code: str, request: _Request) -> None:
        data = request.payload.data
        self.server.tokens.save_code(code, client_id=request.client.client_id, grant_id=request.user.grant_id,
                                     redirect_uri=data.get("redirect_uri") or "", scope=data.get("scope") or "",
                                     challenge=data["code_challenge"], method="S256", ttl_s=CODE_TTL_S)

    def query_authorization_code(self, code: str, client: _ClientModel) -> _Code | None:
        row = self.server.tokens.take_code(code, client.client_id)  # single use; reuse revokes its tokens
        return _Code(row) if row else None

    def delete_authorization_code(self, authorization_code: _Code) -> None:
        return None  # already marked used when it was taken

    def authenticate_user(self, authorization_code: _Code) -> Consent:
        consent = self.server.consent_for(authorization_code.row["grant_id"], family=authorization_code.row["hash"])
        if consent is None:
            raise InvalidGrantError("the authorization behind this code was revoked or has expired")
        return consent


class _RefreshGrant(RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True
    server: Server

    def authenticate_refresh_token(self, refresh_token: str) -> _Token | None:
        tokens = self.server.tokens
        row = tokens.find(refresh_token, "refresh")
        if row is None:
            return None
        if row["revoked_at"] is not None:
            if row["reason"] == "rotated":  # a stolen copy, or a replay: end the whole family
                tokens.revoke_family(row["family"], reason="refresh token reused after rotation")
            return None
        if row["expires_at"] <= self.server.clock() or tokens.revoke(row["hash"], reason="rotated") != 1:
            return None
        return _Token(row)

    def authenticate_user(self, refresh_token: _Token) -> Consent:
        consent = self.server.consent_for(refresh_token.row["grant_id"], family=refresh_token.row["family"])
        if consent is None:
            raise InvalidGrantError("the authorization behind this refresh token was revoked or has expired")
        return consent

    def revoke_old_credential(self, refresh_token: _Token) -> None:
        return None  # rotated (revoked) when it was authenticated


class _Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = AUTH_METHODS
    server: Server

    def query_token(self, token_string: str, token_type_hint: str | None) -> _Token | None:
        row = self.server.tokens.find(token_string)
        return _Token(row) if row else None

    def revoke_token(self, token: _Token, request: _Request) -> None:
        tokens = self.server.tokens
        if token.row["kind"] == "refresh":  # RFC 7009 §2.1: and the access tokens of the same grant
            tokens.revoke_family(token.row["family"], reason="revoked by the client")
        else:
            tokens.revoke(token.row["hash"], reason="revoked by the client")
