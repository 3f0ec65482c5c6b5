"""Authorization codes and tokens, kept only as hashes in a small SQLite file of the data dir.

A code or token is 256 random bits (``secrets.token_urlsafe(32)``): it carries nothing a third party could
read, and a changed byte is simply unknown. The file (``<data-dir>/connect/oauth.sqlite``) holds SHA-256
hashes, the client, the grant, the scope and times — never a token. Every token belongs to a *family*: the
code it came from; a reused code or a reused (rotated-away) refresh token revokes its whole family (RFC 6749
§4.1.2, OAuth 2.0 Security BCP §4.14). Revoking a grant revokes every token of it.

>>> import tempfile
>>> t = TokenStore(tempfile.mkdtemp() + "/oauth.sqlite", clock=lambda: 100.0)
>>> t.save_code("c0de", client_id="ms-1", grant_id="g1", redirect_uri="https://x/cb", scope="FB=4",
...             challenge="abc", ttl_s=60)
>>> t.take_code("c0de", "ms-1")["grant_id"], t.take_code("c0de", "ms-1")
('g1', None)
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

CODE_TTL_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS codes (hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, grant_id TEXT NOT NULL,
  redirect_uri TEXT NOT NULL, scope TEXT NOT NULL, challenge TEXT NOT NULL, method TEXT NOT NULL,
  expires_at REAL NOT NULL, used_at REAL);
CREATE TABLE IF NOT EXISTS tokens (hash TEXT PRIMARY KEY, kind TEXT NOT NULL, client_id TEXT NOT NULL,
  grant_id TEXT NOT NULL, scope TEXT NOT NULL, family TEXT NOT NULL, issued_at REAL NOT NULL,
  expires_at REAL NOT NULL, revoked_at REAL, reason TEXT);
CREATE INDEX IF NOT EXISTS tokens_grant ON tokens (grant_id);
CREATE INDEX IF NOT EXISTS tokens_family ON tokens (family);
"""


def digest(secret: str) -> str:
    return hashlib.sha256(b"meterseal-connect-token\0" + secret.encode("utf-8", "replace")).hexdigest()


def path_for(data_dir: Path | str) -> Path:
    return Path(data_dir) / "connect" / "oauth.sqlite"


class TokenStore:
    """Codes and tokens by hash. Thread-safe (one connection per thread, WAL); ``clock`` is a parameter."""

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self.path, self.clock = Path(path), clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._con() as con:
            con.executescript(_SCHEMA)

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.row_factory = sqlite3.Row
            self._local.con = con
        return con

    # -- codes ----------------------------------------------------------------------------------------
    def save_code(self, code: str, *, client_id: str, grant_id: str, redirect_uri: str, scope: str, challenge: str,
                  method: str = "S256", ttl_s: float = CODE_TTL_S) -> None:
        self._con().execute("INSERT INTO codes VALUES (?,?,?,?,?,?,?,?,NULL)",
                            (digest(code), client_id, grant_id, redirect_uri, scope, challenge, method,
                             self.clock() + ttl_s))

    def take_code(self, code: str, client_id: str) -> dict[str, Any] | None:
        """The code's row, marking it used (atomically: once only). None for an unknown, expired or another
        client's code; a code already used revokes every token issued from it, then None."""
        con = self._con()
        h = digest(code)
        row = con.execute("SELECT * FROM codes WHERE hash = ?", (h,)).fetchone()
        if row is None or row["client_id"] != client_id:
            return None
        if row["used_at"] is not None:
            self.revoke_family(h, reason="authorization code reused")
            return None
        if con.execute("UPDATE codes SET used_at = ? WHERE hash = ? AND used_at IS NULL",
                       (self.clock(), h)).rowcount != 1:
            self.revoke_family(h, reason="authorization code reused")
            return None
        if row["expires_at"] <= self.clock():
            return None
        return dict(row)

    # -- tokens ---------------------------------------------------------------------------------------
    def issue(self, token: str, *, kind: str, client_id: str, grant_id: str, scope: str, family: str,
              expires_at: float) -> None:
        self._con().execute("INSERT INTO tokens VALUES (?,?,?,?,?,?,?,?,NULL,NULL)",
                            (digest(token), kind, client_id, grant_id, scope, family, self.clock(), expires_at))

    def find(self, token: str | None, kind: str | None = None) -> dict[str, Any] | None:
        """The token's row whatever its state (None if unknown)."""
        if not token or len(token) > 512:
            return None
        row = self._con().execute("SELECT * FROM tokens WHERE hash = ?", (digest(token),)).fetchone()
        if row is None or (kind is not None and row["kind"] != kind):
            return None
        return dict(row)

    def live(self, token: str | None, kind: str = "access") -> dict[str, Any] | None:
        """The row of a token that is of ``kind``, not revoked and not expired; else None."""
        row = self.find(token, kind)
        if row is None or row["revoked_at"] is not None or row["expires_at"] <= self.clock():
            return None
        return row

    def revoke(self, token_hash: str, *, reason: str) -> int:
        return self._con().execute("UPDATE tokens SET revoked_at = ?, reason = ? WHERE hash = ? AND revoked_at IS NULL",
                                   (self.clock(), reason, token_hash)).rowcount

    def revoke_family(self, family: str, *, reason: str) -> int:
        return self._con().execute("UPDATE tokens SET revoked_at = ?, reason = ? WHERE family = ? AND revoked_at IS NULL",
                                   (self.clock(), reason, family)).rowcount

    def revoke_grant(self, grant_id: str, *, reason: str) -> int:
        """Revoke every live token of a grant (and burn its unused codes); returns how many tokens."""
        con = self._con()
        con.execute("UPDATE codes SET used_at = ? WHERE grant_id = ? AND used_at IS NULL", (self.clock(), grant_id))
        return con.execute("UPDATE tokens SET revoked_at = ?, reason = ? WHERE grant_id = ? AND revoked_at IS NULL",
                           (self.clock(), reason, grant_id)).rowcount

    def grant_ids(self, client_id: str | None = None) -> list[str]:
        sql = "SELECT DISTINCT grant_id FROM tokens" + (" WHERE client_id = ?" if client_id else "")
        return [r[0] for r in self._con().execute(sql, (client_id,) if client_id else ())]
