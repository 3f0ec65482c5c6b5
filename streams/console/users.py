"""Console accounts: who may log in, with which role and (for customers) which meters.

Passwords are hashed with Argon2id (``argon2-cffi``'s ``PasswordHasher``: RFC 9106's second recommended
parameter set); the file ``<data-dir>/console/users.json`` holds names, roles, meters and hashes only,
written atomically. A customer's meters are its whole scope: the console answers 404 for any other.

Each account has a random **account id** that a removed-and-re-added name never gets back, and an **auth
hash** (like Django's session auth hash): SHA-256 over the account id, role, meters, OIDC subject, password
hash and a sessions epoch. A session remembers both; the console compares them with the file on every
request, so removing an account, re-adding the name, changing its password or role, or ending its sessions
(``meterseal console user sessions NAME --end``, which bumps the epoch) ends every session of it at once,
from any process that writes the file.

>>> import tempfile
>>> users = UserStore(tempfile.mkdtemp() + "/users.json")
>>> users.add("ana", "operator", password="correct horse battery")
User(name='ana', role='operator', meters=(), subject=None)
>>> users.verify("ana", "correct horse battery").role, users.verify("ana", "wrong")
('operator', None)
>>> before = users.get("ana").auth
>>> _ = users.passwd("ana", "another horse battery")
>>> users.get("ana").auth != before
True
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..exceptions import ConfigError

ROLES = ("admin", "operator", "auditor", "analyst", "customer")
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # Argon2 takes any length; a bound keeps a megabyte "password" from being hashed
MAX_METERS = 100
MAX_METER_ID = 128

_hasher = PasswordHasher()  # Argon2id, t=3, m=64 MiB, p=4 (argon2-cffi's RFC 9106 low-memory profile)
ARGON2_MIB = _hasher.memory_cost // 1024
# verifying against this when the user does not exist keeps the answer time the same (no user enumeration)
_DUMMY_HASH = _hasher.hash("meterseal-no-such-user")


@dataclass(frozen=True)
class User:
    name: str
    role: str
    meters: tuple[str, ...] = ()
    subject: str | None = None
    """OIDC ``sub`` for accounts that log in through the identity provider (no local password)."""
    account_id: str = field(default="", repr=False)
    """Random per account: a removed-and-re-added name gets a new one."""
    auth: str = field(default="", repr=False)
    """The auth hash a session must still match (see the module docstring)."""


def check_password(password: str | None) -> str:
    """The CLI's and the admin page's one rule: 12 to 1024 characters."""
    if password is None or len(password) < MIN_PASSWORD:
        raise ConfigError(f"a password needs at least {MIN_PASSWORD} characters (METERSEAL_USER_PASSWORD or the prompt)")
    if len(password) > MAX_PASSWORD:
        raise ConfigError(f"a password has at most {MAX_PASSWORD} characters")
    return password


def _check_account(name: str, role: str, meters: Iterable[str]) -> tuple[str, ...]:
    if not _NAME.fullmatch(name):
        raise ConfigError(f"user name {name[:80]!r}: use 1-64 letters, digits, '_', '.', '@' or '-'")
    if role not in ROLES:
        raise ConfigError(f"role {role[:40]!r}: choose one of {', '.join(ROLES)}")
    meters = tuple(dict.fromkeys(m.strip() for m in meters if m.strip()))
    if role == "customer" and not meters:
        raise ConfigError("a customer account needs its meters: --meter ID (repeatable)")
    if role != "customer" and meters:
        raise ConfigError("only customer accounts have meters")
    if len(meters) > MAX_METERS or any(len(m) > MAX_METER_ID for m in meters):
        raise ConfigError(f"at most {MAX_METERS} meters of at most {MAX_METER_ID} characters each")
    return meters


class UserStore:
    """The accounts file, read on every call (a few kilobytes; parsed again only when its bytes changed), so a
    change made by ``meterseal console user ...`` in another process is seen at the next request."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cache: tuple[bytes, dict[str, dict]] | None = None

    @classmethod
    def for_data_dir(cls, data_dir: Path | str) -> "UserStore":
        return cls(Path(data_dir) / "console" / "users.json")

    def _read(self) -> dict[str, dict]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        cached = self._cache
        if cached is not None and cached[0] == raw:
            return cached[1]
        try:
            users = json.loads(raw)["users"]
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"{self.path} is not a console users file: fix or remove it") from exc
        self._cache = (raw, users)
        return users

    def _write(self, users: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"version": 2, "users": users}, f, indent=2)
        os.replace(tmp, self.path)

    def _change(self, name: str, change) -> User:
        """Apply ``change(entry)`` to an existing account under the lock; returns the account as now stored."""
        with self._lock:
            users = {k: dict(v) for k, v in self._read().items()}
            if name not in users:
                raise ConfigError(f"no user {name[:80]!r} (meterseal console user list)")
            change(users[name])
            self._write(users)
            return _user(name, users[name])

    def add(self, name: str, role: str, *, password: str | None = None, meters: tuple[str, ...] | list[str] = (),
            subject: str | None = None, replace: bool = False) -> User:
        """A new account; a customer needs at least one meter; a local account needs a password of 12+ characters."""
        meters = _check_account(name, role, meters)
        if subject is None:
            check_password(password)
        with self._lock:
            users = {k: dict(v) for k, v in self._read().items()}
            if name in users and not replace:
                raise ConfigError(f"user {name!r} exists: remove it first (meterseal console user remove {name})")
            users[name] = {"id": secrets.token_hex(16), "role": role, "meters": list(meters), "subject": subject,
                           "hash": _hasher.hash(password) if password is not None else None, "sessions_epoch": 0}
            self._write(users)
            return _user(name, users[name])

    def remove(self, name: str) -> User:
        """Remove an account (its sessions end at once: no later account of the name has its id)."""
        with self._lock:
            users = {k: dict(v) for k, v in self._read().items()}
            if name not in users:
                raise ConfigError(f"no user {name[:80]!r} (meterseal console user list)")
            gone = _user(name, users.pop(name))
            self._write(users)
            return gone

    def passwd(self, name: str, password: str) -> User:
        """A new password (its sessions end: the auth hash covers the password hash)."""
        check_password(password)

        def change(entry: dict) -> None:
            if entry.get("subject") and not entry.get("hash"):
                raise ConfigError(f"{name} logs in through the identity provider: it has no password here")
            entry["hash"] = _hasher.hash(password)
        return self._change(name, change)

    def set_role(self, name: str, role: str, *, meters: Iterable[str] = ()) -> User:
        """Another role (and meters) for the same account; its sessions end."""
        meters = _check_account(name, role, meters)
        return self._change(name, lambda entry: entry.update(role=role, meters=list(meters)))

    def erase_meters(self, name: str, erased: Iterable[str]) -> User:
        """Take erased meters out of an account (its sessions end). A customer left with none keeps its account — no
        data in scope — so that it can still log in and read its erasure's outcome and receipt."""
        gone = set(erased)
        return self._change(name, lambda entry: entry.update(meters=[m for m in entry.get("meters") or () if m not in gone]))

    def end_sessions(self, name: str) -> User:
        """End every session of the account now, in every console that reads this file."""
        def change(entry: dict) -> None:
            entry["sessions_epoch"] = int(entry.get("sessions_epoch", 0)) + 1
            entry["sessions_ended_at"] = time.time()
        return self._change(name, change)

    def sessions_ended_at(self, name: str) -> float | None:
        entry = self._read().get(name)
        if entry is None:
            raise ConfigError(f"no user {name[:80]!r} (meterseal console user list)")
        return entry.get("sessions_ended_at")

    def list(self) -> list[User]:
        return [_user(n, e) for n, e in sorted(self._read().items())]

    def get(self, name: str) -> User | None:
        entry = self._read().get(name)
        return _user(name, entry) if entry else None

    def by_subject(self, subject: str) -> User | None:
        return next((u for u in self.list() if u.subject == subject), None)

    def verify(self, name: str, password: str) -> User | None:
        """The user if ``password`` is theirs, else None; the same work is done for unknown names."""
        entry = self._read().get(name)
        stored = entry.get("hash") if entry else None
        if len(password) > MAX_PASSWORD:
            password, stored = "", None  # hashed anyway (the same time), never matches
        try:
            _hasher.verify(stored or _DUMMY_HASH, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if not stored:
            return None
        if _hasher.check_needs_rehash(stored):
            with self._lock:
                users = {k: dict(v) for k, v in self._read().items()}
                if name in users and users[name].get("hash") == stored:
                    users[name]["hash"] = _hasher.hash(password)
                    self._write(users)
                    entry = users[name]
        return _user(name, entry)


def auth_hash(name: str, entry: dict[str, Any]) -> str:
    """What a session of this account must still match: changes with the account id, role, meters, subject,
    password hash and sessions epoch. Unkeyed: sessions live only in the console's memory, never in a cookie."""
    material = json.dumps([name, entry.get("id") or f"unnamed:{name}", entry["role"], list(entry.get("meters") or ()),
                           entry.get("subject"), entry.get("hash"), int(entry.get("sessions_epoch", 0))])
    return hashlib.sha256(material.encode()).hexdigest()


def _user(name: str, entry: dict) -> User:
    return User(name, entry["role"], tuple(entry.get("meters") or ()), entry.get("subject"),
                entry.get("id") or f"unnamed:{name}", auth_hash(name, entry))
