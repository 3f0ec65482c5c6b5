"""Registered third parties as OAuth 2.0 clients: credentials, redirect and notify URIs, scope and status.

A registration lives in ``<store>/connect/clients/<name>.json`` beside the party of the same name
(``streams.share.parties``, whose public key is optional for a party that only wants ESPI). The client secret
is shown once and stored only as its SHA-256 (it is 256 random bits: a fast hash loses nothing, and the token
endpoint stays fast); checks compare in constant time. Status follows ESPI ApplicationInformation:
``review`` and ``on-hold`` parties get no new authorizations and their tokens read nothing; ``revoked`` also
ends every authorization they had (``streams.connect.revocation``); ``production`` is the working state.

Redirect and notify URIs are absolute ``https`` URIs, or ``http`` on a loopback address (RFC 8252's native
apps); no fragment, no wildcard. A redirect must equal the registered URI exactly (no prefix matching).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from streams.exceptions import MeterSealError, ShareError
from streams.share.parties import Party, PartyPublicKey, add_party, check_party_name, get_party
from streams.store.base import Store, open_store

from .scopes import Scope

STATUSES = ("review", "production", "on-hold", "revoked")
_DIR = "connect/clients/"
_BY_ID = "connect/client-ids/"


class ConnectError(MeterSealError):
    """A Connect My Data request that cannot be honoured (the message says why)."""


def hash_secret(secret: str) -> str:
    return hashlib.sha256(b"meterseal-connect-secret\0" + secret.encode()).hexdigest()


@dataclass(frozen=True)
class Client:
    name: str
    client_id: str
    secret_hash: str
    redirect_uri: str
    scope: str
    status: str = "production"
    notify_uri: str | None = None
    created_at: float = 0.0
    secret_rotated_at: float = 0.0
    status_changed_at: float = 0.0
    purpose: str = ""

    @property
    def registered_scope(self) -> Scope:
        return Scope.parse(self.scope)

    def check_secret(self, secret: str | None) -> bool:
        return bool(secret) and hmac.compare_digest(hash_secret(secret).encode(), self.secret_hash.encode())

    def public(self) -> dict[str, Any]:
        """Everything but the secret's hash."""
        return {k: v for k, v in asdict(self).items() if k != "secret_hash"}


def check_uri(uri: str, what: str) -> str:
    """``uri`` if it is absolute https (or http on loopback) with no fragment or wildcard; else ``ConnectError``."""
    if not isinstance(uri, str) or len(uri) > 512 or any(c.isspace() for c in uri) or "*" in uri:
        raise ConnectError(f"bad {what} {str(uri)[:80]!r}: one absolute URI, at most 512 characters, no wildcard")
    parts = urlsplit(uri)
    if parts.fragment or "#" in uri or not parts.hostname or parts.username or parts.password:
        raise ConnectError(f"bad {what} {uri!r}: absolute, with a host, no user info and no fragment")
    if not re.fullmatch(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:]+\](:[0-9]{1,5})?", parts.netloc):
        raise ConnectError(f"bad {what} {uri!r}: the host must be a plain name or address")
    if parts.scheme == "https":
        return uri
    if parts.scheme == "http" and _loopback(parts.hostname):
        return uri
    raise ConnectError(f"bad {what} {uri!r}: https, or http only on a loopback address (127.0.0.1, [::1])")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _store(store_dir: Path | str | Store) -> Store:
    return open_store(store_dir, create=False)


def _save(store: Store, client: Client) -> None:
    store.blobs.put(f"{_DIR}{client.name}.json", json.dumps(asdict(client), indent=2).encode())
    store.blobs.put(f"{_BY_ID}{client.client_id}", client.name.encode())


def register_client(store_dir: Path | str | Store, name: str, *, redirect_uri: str, scope: str,
                    public_key: PartyPublicKey | None = None, notify_uri: str | None = None,
                    status: str = "production", purpose: str = "", now: float | None = None) -> tuple[Client, str]:
    """Register ``name`` as a third party; returns the client and its secret (shown once, never stored)."""
    now = time.time() if now is None else now
    check_party_name(name)
    check_uri(redirect_uri, "--redirect-uri")
    if notify_uri is not None:
        check_uri(notify_uri, "--notify-uri")
    Scope.parse(scope)  # InvalidScope names what is wrong
    if len(purpose) > 200:
        raise ConnectError("--purpose is at most 200 characters")
    if status not in STATUSES[:2]:
        raise ConnectError(f"a new party starts in review or production, not {status!r}")
    store = _store(store_dir)
    if store.blobs.exists(f"{_DIR}{name}.json"):
        raise ConnectError(f"party {name!r} is already registered as a third party: rotate its secret with "
                           f"`meterseal party credentials {name} --rotate`")
    add_party(store, name, public_key, now=now)  # ShareError if the name holds another key
    secret = secrets.token_urlsafe(32)
    client = Client(name=name, client_id="ms-" + secrets.token_hex(12), secret_hash=hash_secret(secret),
                    redirect_uri=redirect_uri, scope=scope, status=status, notify_uri=notify_uri, created_at=now,
                    secret_rotated_at=now, status_changed_at=now, purpose=purpose)
    _save(store, client)
    return client, secret


def get_client(store_dir: Path | str | Store, name: str) -> Client:
    data = _store(store_dir).blobs.get(f"{_DIR}{check_party_name(name)}.json")
    if data is None:
        raise ConnectError(f"no third party {name!r}: register it with `meterseal party add {name} --redirect-uri URI`")
    return _client(data)


def _client(data: bytes) -> Client:
    try:
        return Client(**json.loads(data))
    except (ValueError, TypeError) as exc:
        raise ConnectError(f"a third-party registration in the store is unreadable: {exc}") from exc


def find_client(store_dir: Path | str | Store, client_id: str | None) -> Client | None:
    """The client with ``client_id``, or None (an unknown id, or one not of our form)."""
    if not client_id or len(client_id) > 64 or not client_id.replace("-", "").isalnum():
        return None
    store = _store(store_dir)
    name = store.blobs.get(f"{_BY_ID}{client_id}")
    if name is None:
        return None
    client = get_client(store, name.decode())
    return client if client.client_id == client_id else None


def list_clients(store_dir: Path | str | Store) -> list[Client]:
    store = _store(store_dir)
    return [_client(store.blobs.get(k) or b"") for k in store.blobs.list(_DIR) if k.endswith(".json")]


def rotate_secret(store_dir: Path | str | Store, name: str, *, now: float | None = None) -> tuple[Client, str]:
    """A new secret for ``name`` (the old one stops working at once; tokens already issued stay valid)."""
    store = _store(store_dir)
    secret = secrets.token_urlsafe(32)
    client = replace(get_client(store, name), secret_hash=hash_secret(secret),
                     secret_rotated_at=time.time() if now is None else now)
    _save(store, client)
    return client, secret


def set_status(store_dir: Path | str | Store, name: str, status: str, *, now: float | None = None) -> Client:
    """Change a party's status (``revoked`` is final: revoke its authorizations with ``revocation``)."""
    if status not in STATUSES:
        raise ConnectError(f"unknown status {status!r}: one of {', '.join(STATUSES)}")
    store = _store(store_dir)
    client = get_client(store, name)
    if client.status == "revoked" and status != "revoked":
        raise ConnectError(f"party {name} was revoked: register it again under another name")
    client = replace(client, status=status, status_changed_at=time.time() if now is None else now)
    _save(store, client)
    return client


def party_of(store_dir: Path | str | Store, client: Client) -> Party:
    try:
        return get_party(store_dir, client.name)
    except ShareError as exc:
        raise ConnectError(f"third party {client.name} has no party registration: {exc}") from exc
