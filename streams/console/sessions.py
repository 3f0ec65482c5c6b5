"""Server-side sessions bound to accounts, synchronizer CSRF tokens, and the signed pre-login CSRF token
(OWASP's session-management and CSRF cheat sheets).

The cookie carries only a random 256-bit session id (``secrets.token_urlsafe``); the server keeps whose
session it is — the account's id and auth hash (``users.auth_hash``) — its CSRF token, its client address
and its expiry. ``current()`` resolves a cookie to ``(session, user)`` only while the account still has that
id and hash, so removing, re-adding, re-keying or re-roling an account ends its sessions at their next
request, whichever process changed the users file. Only logins create sessions: an anonymous visitor costs
the server nothing (the login form's CSRF token is a signed, short-lived value, ``LoginCsrf``), logged-in
sessions are never evicted to make room, and each client address may hold at most ``per_address``.

>>> clock = iter([0.0, 10.0, 100.0]).__next__
>>> store = SessionStore(ttl_s=50, clock=clock)
>>> s = store.new("ana", account="a1", auth="h1", address="127.0.0.1")
>>> store.get(s.id) is s, store.get(s.id)
(True, None)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from .users import User, UserStore

MAX_SESSIONS = 50_000
PER_ADDRESS = 200
LOGIN_TOKEN_S = 900.0


class SessionLimit(Exception):
    """No room for another session (all sessions, or this address's): 429 with ``retry_after``."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Session:
    id: str
    user: str
    csrf: str
    expires: float
    account: str | None = None
    """The account id the session was created for (None: an OIDC login without a linked account)."""
    auth: str | None = field(default=None, repr=False)
    address: str = ""
    data: dict = field(default_factory=dict)

    def csrf_ok(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf.encode(), token.encode())


class SessionStore:
    """In-memory sessions of logged-in users (a restart logs everyone out). ``ttl_s`` is a login's absolute
    lifetime; ``max_sessions`` and ``per_address`` bound memory: past them a login is refused, never a live
    session evicted."""

    def __init__(self, *, ttl_s: float = 8 * 3600, clock: Callable[[], float] = time.time,
                 max_sessions: int | None = None, per_address: int = PER_ADDRESS) -> None:
        self.ttl_s, self.clock = ttl_s, clock
        self.max_sessions = MAX_SESSIONS if max_sessions is None else max_sessions
        self.per_address = per_address
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # oldest first: they also expire first
        self._by_address: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def _sweep(self, now: float) -> None:
        while self._sessions:
            first = next(iter(self._sessions.values()))
            if first.expires > now:
                return
            self._forget(first.id)

    def _forget(self, session_id: str) -> Session | None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            ids = self._by_address.get(session.address)
            if ids is not None:
                ids.discard(session_id)
                if not ids:
                    del self._by_address[session.address]
        return session

    def new(self, user: str, *, account: str | None, auth: str | None, address: str = "",
            data: dict | None = None) -> Session:
        """A session for a user who just proved who it is; ``SessionLimit`` when there is no room."""
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32), now + self.ttl_s,
                          account, auth, address, dict(data or {}))
        with self._lock:
            self._sweep(now)
            oldest = next(iter(self._sessions.values()), None)
            if len(self._sessions) >= self.max_sessions:
                raise SessionLimit("the console holds as many sessions as it may: try again later",
                                   max(1.0, oldest.expires - now) if oldest else 60.0)
            mine = self._by_address.get(address, set())
            if len(mine) >= self.per_address:
                first = min(self._sessions[i].expires for i in mine)
                raise SessionLimit("too many sessions from your address: log out of some first",
                                   max(1.0, first - now))
            self._sessions[session.id] = session
            self._by_address.setdefault(address, set()).add(session.id)
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if self.clock() >= session.expires:
                self._forget(session_id)
                return None
            return session

    def drop(self, session_id: str | None) -> None:
        with self._lock:
            self._forget(session_id or "")

    def drop_account(self, account: str) -> int:
        """End every session of an account now (the console changed it); returns how many."""
        with self._lock:
            gone = [k for k, s in self._sessions.items() if s.account == account]
            for k in gone:
                self._forget(k)
        return len(gone)


def current(sessions: SessionStore, users: UserStore, session_id: str | None) -> tuple[Session, User] | None:
    """The session and its user while the account still has the id and auth hash the session was made for;
    else None (and a session whose account changed is dropped). An OIDC login without a linked account
    carries its user in the session and lasts until logout or expiry."""
    session = sessions.get(session_id)
    if session is None:
        return None
    if session.account is None:
        user = session.data.get("user")
        return (session, user) if isinstance(user, User) else None
    user = users.get(session.user)
    if (user is None or not hmac.compare_digest(user.account_id, session.account)
            or not hmac.compare_digest(user.auth, session.auth or "")):
        sessions.drop(session.id)
        return None
    return session, user


class LoginCsrf:
    """The login form's CSRF token with no server state (a signed double-submit cookie): the cookie holds a
    random nonce; the form's token is ``issued.HMAC(key, issued.nonce)``. A POST is accepted only with both,
    matching, younger than ``ttl_s``; the key is random per console process.

    >>> csrf = LoginCsrf(clock=lambda: 1000.0)
    >>> cookie, token = csrf.new()
    >>> csrf.check(cookie, token), csrf.check(cookie, token[:-1] + "x"), csrf.check(LoginCsrf().new()[0], token)
    (True, False, False)
    """

    def __init__(self, *, ttl_s: float = LOGIN_TOKEN_S, clock: Callable[[], float] = time.time,
                 key: bytes | None = None) -> None:
        self.ttl_s, self.clock = ttl_s, clock
        self._key = key or secrets.token_bytes(32)

    def _mac(self, issued: str, nonce: str) -> str:
        return hmac.new(self._key, f"{issued}.{nonce}".encode(), hashlib.sha256).hexdigest()

    def new(self) -> tuple[str, str]:
        """(cookie value, form token)."""
        nonce, issued = secrets.token_urlsafe(24), str(int(self.clock()))
        return nonce, f"{issued}.{self._mac(issued, nonce)}"

    def check(self, cookie: Any, token: Any) -> bool:
        if not isinstance(cookie, str) or not isinstance(token, str) or not cookie or token.count(".") != 1:
            return False
        issued, mac = token.split(".")
        if not issued.isdigit() or not 0 <= self.clock() - int(issued) < self.ttl_s:
            return False
        return hmac.compare_digest(mac.encode(), self._mac(issued, cookie).encode())
