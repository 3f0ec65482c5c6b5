"""Server-side sessions with synchronizer CSRF tokens, and login throttling (OWASP's session and CSRF patterns).

The cookie carries only a random 256-bit session id (``secrets.token_urlsafe``); the server keeps who the
session belongs to, its CSRF token and its expiry. A login replaces the pre-login session by a new id
(no session fixation); logout and expiry delete it. Every state-changing request must send the session's
CSRF token (form field ``csrf_token`` or header ``X-CSRF-Token``), compared in constant time.

>>> clock = iter([0.0, 10.0, 100.0]).__next__
>>> store = SessionStore(ttl_s=50, clock=clock)
>>> s = store.new("ana")
>>> store.get(s.id) is s, store.get(s.id)
(True, None)
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

ANONYMOUS_TTL_S = 900.0
MAX_SESSIONS = 50_000


@dataclass
class Session:
    id: str
    user: str | None
    csrf: str
    expires: float
    data: dict = field(default_factory=dict)

    def csrf_ok(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf.encode(), token.encode())


class SessionStore:
    """In-memory sessions (a restart logs everyone out). ``ttl_s`` is the absolute lifetime of a login."""

    def __init__(self, *, ttl_s: float = 8 * 3600, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s, self.clock = ttl_s, clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def new(self, user: str | None, *, data: dict | None = None) -> Session:
        ttl = self.ttl_s if user else min(self.ttl_s, ANONYMOUS_TTL_S)
        session = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32), self.clock() + ttl, dict(data or {}))
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > MAX_SESSIONS:  # the oldest go first
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if self.clock() >= session.expires:
                del self._sessions[session_id]
                return None
            return session

    def drop(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def drop_user(self, user: str) -> int:
        """End every session of ``user`` (the account was removed); returns how many."""
        with self._lock:
            gone = [k for k, s in self._sessions.items() if s.user == user]
            for k in gone:
                del self._sessions[k]
        return len(gone)


class Throttle:
    """Refuse logins for a name (and, separately, for a client address) after ``limit`` failures in ``window_s``.

    >>> t = Throttle(limit=2, window_s=60, clock=lambda: 0.0)
    >>> t.failed("ana", "1.2.3.4"); t.failed("ana", "1.2.3.4")
    >>> t.blocked("ana", "5.6.7.8"), t.blocked("bob", "5.6.7.8")
    (60.0, 0.0)
    """

    def __init__(self, *, limit: int = 5, window_s: float = 300.0, address_limit: int = 50,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.address_limit, self.clock = limit, window_s, address_limit, clock
        self._fails: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._fails.get(key, []) if now - t < self.window_s]
        if times:
            self._fails[key] = times
        else:
            self._fails.pop(key, None)
        return times

    def blocked(self, name: str, address: str) -> float:
        """Seconds until ``name`` from ``address`` may try again (0: now)."""
        now = self.clock()
        with self._lock:
            wait = 0.0
            for key, limit in (("u:" + name, self.limit), ("a:" + address, self.address_limit)):
                times = self._recent(key, now)
                if len(times) >= limit:
                    wait = max(wait, times[-limit] + self.window_s - now)
            return wait

    def failed(self, name: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key in ("u:" + name, "a:" + address):
                self._fails.setdefault(key, []).append(now)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._fails.pop("u:" + name, None)
