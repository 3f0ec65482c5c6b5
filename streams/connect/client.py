"""The reference third-party client (for trials and tests), built on ``requests-oauthlib`` — a standard OAuth
client library the server does not use for itself.

``authorize`` starts a loopback listener on the registered redirect URI (RFC 8252), makes the authorization
link with PKCE S256 and a random ``state``, hands the link to ``open_link`` (print it, or drive a browser),
waits for the redirect, exchanges the code (HTTP Basic client authentication) and returns the token response.
``fetch`` reads the subscription's ESPI feed with the saved tokens, refreshing them first when they expired.
Saved connections are JSON files (mode 0600) in a directory of the third party's own.
"""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from streams.exceptions import MeterSealError

SCOPE = "FB=1_3_4_5_13_14_39;IntervalDuration=900;BlockDuration=daily;HistoryLength=34128000"


class ClientError(MeterSealError):
    """The reference client could not connect or fetch (the message says why)."""


def _allow_loopback_http(url: str) -> None:
    if urlsplit(url).scheme == "http" and urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1"):
        os.environ.setdefault("OAUTHLIB_INSECURE_TRANSPORT", "1")  # oauthlib's switch; loopback only


def _token_url(authorize_url: str) -> str:
    parts = urlsplit(authorize_url)
    return urlunsplit((parts.scheme, parts.netloc, "/oauth/token", "", ""))


def authorize(*, client_id: str, client_secret: str, authorize_url: str, redirect_uri: str, scope: str = SCOPE,
              open_link: Callable[[str], None] = print, timeout_s: float = 300.0) -> dict[str, Any]:
    """Run the authorization-code flow with PKCE; returns the token response (with resourceURI)."""
    from requests_oauthlib import OAuth2Session

    for url in (authorize_url, redirect_uri):
        _allow_loopback_http(url)
    target = urlsplit(redirect_uri)
    got: dict[str, str] = {}

    class Callback(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if urlsplit(self.path).path != (target.path or "/"):
                self.send_response(404)
                self.end_headers()
                return
            got["url"] = f"{target.scheme}://{target.netloc}{self.path}"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self.wfile.write(b"meterseal connect: you can close this window.\n")

        def log_message(self, *args: Any) -> None:
            pass

    try:
        listener = HTTPServer((target.hostname or "127.0.0.1", target.port or 80), Callback)
    except OSError as exc:
        raise ClientError(f"cannot listen on {redirect_uri} ({exc}): the redirect URI must be a free loopback port")
    listener.timeout = 0.2
    session = OAuth2Session(client_id, redirect_uri=redirect_uri, scope=[scope], pkce="S256")
    link, state = session.authorization_url(authorize_url)
    threading.Thread(target=open_link, args=(link,), daemon=True).start()
    deadline = time.monotonic() + timeout_s
    try:
        while "url" not in got and time.monotonic() < deadline:
            listener.handle_request()
    finally:
        listener.server_close()
    if "url" not in got:
        raise ClientError(f"no redirect to {redirect_uri} within {timeout_s:.0f} s")
    if "error=" in urlsplit(got["url"]).query:
        raise ClientError(f"the authorization was refused: {urlsplit(got['url']).query}")
    token = session.fetch_token(_token_url(authorize_url), authorization_response=got["url"],
                                client_secret=client_secret, include_client_id=False)
    return dict(token)


def save(directory: Path | str, name: str, *, client_id: str, client_secret: str, authorize_url: str,
         token: dict[str, Any]) -> Path:
    path = Path(directory) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"client_id": client_id, "client_secret": client_secret, "token_url": _token_url(authorize_url),
           "token": token}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2)
    return path


def load(directory: Path | str, name: str | None) -> tuple[str, dict[str, Any]]:
    directory = Path(directory)
    names = sorted(p.stem for p in directory.glob("*.json")) if directory.exists() else []
    if name is None:
        if len(names) != 1:
            raise ClientError(f"name the connection: saved ones in {directory}: {', '.join(names) or 'none'}")
        name = names[0]
    path = directory / f"{name}.json"
    if not path.exists():
        raise ClientError(f"no saved connection {name!r} in {directory}: run `meterseal connect {name} ...` first")
    return name, json.loads(path.read_text())


def fetch(doc: dict[str, Any], *, params: dict[str, str] | None = None) -> tuple[bytes, dict[str, Any]]:
    """The subscription's ESPI feed (bytes) and the token (refreshed when it had expired; save it back)."""
    from requests_oauthlib import OAuth2Session

    token = doc["token"]
    _allow_loopback_http(doc["token_url"])
    session = OAuth2Session(doc["client_id"], token=token)
    if token.get("expires_at", 0) <= time.time() + 5:
        token = dict(session.refresh_token(doc["token_url"], refresh_token=token["refresh_token"],
                                           auth=(doc["client_id"], doc["client_secret"])))
        token.setdefault("resourceURI", doc["token"].get("resourceURI"))
        session = OAuth2Session(doc["client_id"], token=token)
    response = session.get(token["resourceURI"], params=params or {}, timeout=300)
    if response.status_code != 200:
        raise ClientError(f"GET {token['resourceURI']}: HTTP {response.status_code} {response.text[:200]}")
    return response.content, token
