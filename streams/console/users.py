"""Console accounts: who may log in, with which role and (for customers) which meters.

Passwords are hashed with Argon2id (``argon2-cffi``'s ``PasswordHasher``: RFC 9106's second recommended
parameter set); the file ``<data-dir>/console/users.json`` holds names, roles, meters and hashes only,
written atomically. A customer's meters are its whole scope: the console answers 404 for any other.

>>> import tempfile
>>> users = UserStore(tempfile.mkdtemp() + "/users.json")
>>> users.add("ana", "operator", password="correct horse battery")
User(name='ana', role='operator', meters=(), subject=None)
>>> users.verify("ana", "correct horse battery").role, users.verify("ana", "wrong")
('operator', None)
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..exceptions import ConfigError

ROLES = ("admin", "operator", "auditor", "analyst", "customer")
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MIN_PASSWORD = 12

_hasher = PasswordHasher()  # Argon2id, t=3, m=64 MiB, p=4 (argon2-cffi's RFC 9106 low-memory profile)
# verifying against this when the user does not exist keeps the answer time the same (no user enumeration)
_DUMMY_HASH = _hasher.hash("meterseal-no-such-user")


@dataclass(frozen=True)
class User:
    name: str
    role: str
    meters: tuple[str, ...] = ()
    subject: str | None = None
    """OIDC ``sub`` for accounts that log in through the identity provider (no local password)."""


class UserStore:
    """The accounts file. Every method re-reads it, so ``meterseal console user add`` takes effect at once."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    @classmethod
    def for_data_dir(cls, data_dir: Path | str) -> "UserStore":
        return cls(Path(data_dir) / "console" / "users.json")

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text())["users"]
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"{self.path} is not a console users file: fix or remove it") from exc

    def _write(self, users: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"version": 1, "users": users}, f, indent=2)
        os.replace(tmp, self.path)

    def add(self, name: str, role: str, *, password: str | None = None, meters: tuple[str, ...] | list[str] = (),
            subject: str | None = None, replace: bool = False) -> User:
        """A new account; a customer needs at least one meter; a local account needs a password of 12+ characters."""
        if not _NAME.fullmatch(name):
            raise ConfigError(f"user name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-'")
        if role not in ROLES:
            raise ConfigError(f"role {role!r}: choose one of {', '.join(ROLES)}")
        meters = tuple(dict.fromkeys(m.strip() for m in meters if m.strip()))
        if role == "customer" and not meters:
            raise ConfigError("a customer account needs its meters: --meter ID (repeatable)")
        if role != "customer" and meters:
            raise ConfigError("only customer accounts have meters")
        if subject is None and (password is None or len(password) < MIN_PASSWORD):
            raise ConfigError(f"a password needs at least {MIN_PASSWORD} characters (METERSEAL_USER_PASSWORD or the prompt)")
        with self._lock:
            users = self._read()
            if name in users and not replace:
                raise ConfigError(f"user {name!r} exists: remove it first (meterseal console user remove {name})")
            users[name] = {"role": role, "meters": list(meters), "subject": subject,
                           "hash": _hasher.hash(password) if password is not None else None}
            self._write(users)
        return User(name, role, meters, subject)

    def remove(self, name: str) -> None:
        with self._lock:
            users = self._read()
            if name not in users:
                raise ConfigError(f"no user {name!r} (meterseal console user list)")
            del users[name]
            self._write(users)

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
        try:
            _hasher.verify(stored or _DUMMY_HASH, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if not stored:
            return None
        if _hasher.check_needs_rehash(stored):
            with self._lock:
                users = self._read()
                if name in users:
                    users[name]["hash"] = _hasher.hash(password)
                    self._write(users)
        return _user(name, entry)


def _user(name: str, entry: dict) -> User:
    return User(name, entry["role"], tuple(entry.get("meters") or ()), entry.get("subject"))
