"""Parties: recipients of shares, each with its own key pair whose private half never leaves it.

A recipient runs ``meterseal party keygen --out DIR``: ``DIR/party.key`` holds the private key sealed with
AES-256-GCM under a scrypt key from ``METERSEAL_PARTY_PASSPHRASE`` (the keystore's parameters and code);
``DIR/party.pub`` is one line of text, ``hpke_mlkem768_x25519 <base64 public key>``. The owner registers the
public file under a name (``party add``); registrations live in ``<store>/parties/<name>.json``.

Scheme: RFC 9180 HPKE with the hybrid ML-KEM-768+X25519 KEM, HKDF-SHA256, AES-256-GCM (as the owner keys).

>>> key = PartyKey.generate()
>>> PartyPublicKey.parse(key.public_key.text()) == key.public_key
True
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.crypto import _primitives
from streams.crypto.envelope import DataKey, open_with, seal
from streams.exceptions import InvalidEnvelope, KeystoreError, ShareError
from streams.keys.keystore import _SCRYPT
from streams.store.base import open_store

SCHEME = "hpke_mlkem768_x25519"
FILE_FORMAT = 1
_FILE_KEK_ID = b"meterseal-party!"  # 16 bytes: the envelope's key id slot
PARTY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_party_name(name: str) -> str:
    if not isinstance(name, str) or not PARTY_NAME.fullmatch(name):
        raise ShareError(f"bad party name {name!r}: letters, digits, '.', '-' and '_' (at most 64, not starting "
                         "with a symbol)")
    return name


@dataclass(frozen=True)
class PartyPublicKey:
    """A recipient's public key (what the owner registers and seals record keys to)."""

    public: bytes
    scheme: str = SCHEME

    def __post_init__(self) -> None:
        if self.scheme != SCHEME:
            raise ShareError(f"unknown party key scheme {self.scheme!r}: this meterseal uses {SCHEME}")
        if len(self.public) != 1184 + 32:
            raise ShareError("a party public key is 1216 bytes (ML-KEM-768 || X25519)")

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the scheme name and public key bytes, hex (as owner key fingerprints)."""
        return hashlib.sha256(self.scheme.encode() + b"\0" + self.public).hexdigest()

    def text(self) -> str:
        return f"{self.scheme} {base64.b64encode(self.public).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> "PartyPublicKey":
        try:
            scheme, b64 = text.strip().split()
            public = base64.b64decode(b64, validate=True)
        except ValueError:
            raise ShareError("not a party public key: want one line '<scheme> <base64 key>' (party.pub from "
                             "`meterseal party keygen`)") from None
        return cls(public, scheme)

    def seal(self, plaintext: bytes, *, info: bytes) -> bytes:
        """HPKE-seal ``plaintext`` to this party, ``info`` bound in (the grant id)."""
        return _primitives.hpke_wrap(self.public, plaintext, info)


@dataclass(frozen=True)
class PartyKey:
    """A recipient's key pair; only the recipient holds it."""

    private: bytes = field(repr=False)
    public_key: PartyPublicKey

    @classmethod
    def generate(cls) -> "PartyKey":
        private, public = _primitives.hpke_generate()
        return cls(private, PartyPublicKey(public))

    def open(self, sealed: bytes, *, info: bytes) -> bytes:
        """Open what was HPKE-sealed to this party with ``info``; ``ShareError`` on any mismatch."""
        try:
            return _primitives.hpke_unwrap(_primitives.hpke_private(self.private), sealed, info)
        except Exception as exc:  # the backend's exception type varies; any failure is the same answer
            raise ShareError("the record keys do not open with this party key (a bundle for another party, "
                             "another grant, or altered)") from exc

    def save(self, directory: Path | str, passphrase: str) -> tuple[Path, Path]:
        """Write ``party.key`` (mode 0600, private key sealed under ``passphrase``) and ``party.pub``."""
        if not passphrase:
            raise KeystoreError("no party passphrase: set METERSEAL_PARTY_PASSPHRASE or enter it when asked")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        key_path, pub_path = directory / "party.key", directory / "party.pub"
        if key_path.exists():
            raise KeystoreError(f"{key_path} exists: shares sealed to it would become unreadable; pick another --out")
        salt = os.urandom(16)
        kek = DataKey(_FILE_KEK_ID, _primitives.scrypt_kek(passphrase.encode(), salt, **_SCRYPT))
        public = base64.b64encode(self.public_key.public).decode()
        doc = {"format": FILE_FORMAT, "kind": "meterseal party key", "scheme": SCHEME, "public": public,
               "kdf": {"name": "scrypt", "salt": base64.b64encode(salt).decode(), **_SCRYPT},
               "private": base64.b64encode(seal(kek, self.private, aad=_aad(public))).decode()}
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2)
        pub_path.write_text(self.public_key.text())
        return key_path, pub_path

    @classmethod
    def load(cls, path: Path | str, passphrase: str) -> "PartyKey":
        path = Path(path)
        if not passphrase:
            raise KeystoreError("no party passphrase: set METERSEAL_PARTY_PASSPHRASE or enter it when asked")
        try:
            doc = json.loads(path.read_text())
            kdf = doc["kdf"]
            if doc.get("kind") != "meterseal party key" or doc.get("format") != FILE_FORMAT:
                raise ValueError("not a party key file")
            kek = DataKey(_FILE_KEK_ID, _primitives.scrypt_kek(passphrase.encode(), base64.b64decode(kdf["salt"]),
                                                           n=kdf["n"], r=kdf["r"], p=kdf["p"]))
            sealed = base64.b64decode(doc["private"])
            public = PartyPublicKey(base64.b64decode(doc["public"]), doc["scheme"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeystoreError(f"{path} is not a readable party key file ({exc}): make one with "
                                "`meterseal party keygen`") from exc
        try:
            private = open_with({_FILE_KEK_ID: kek}, sealed, aad=_aad(doc["public"]))
        except InvalidEnvelope:
            raise KeystoreError(f"wrong party passphrase for {path} (or the file was altered)") from None
        return cls(private, public)


def _aad(public_b64: str) -> bytes:
    return b"meterseal/party-key/v1|" + public_b64.encode()


# --- the owner's registry of parties ---------------------------------------------------------------


@dataclass(frozen=True)
class Party:
    """A registered recipient. ``public_key`` None: a third party that receives ESPI feeds over the API only
    (``streams.connect``), never a bundle; its fingerprint then names it by its name."""

    name: str
    public_key: PartyPublicKey | None
    added_at: float

    @property
    def fingerprint(self) -> str:
        if self.public_key is None:
            return hashlib.sha256(b"meterseal-party-without-key\0" + self.name.encode()).hexdigest()
        return self.public_key.fingerprint

    def to_dict(self) -> dict:
        return {"name": self.name, "scheme": self.public_key.scheme if self.public_key else None,
                "fingerprint": self.fingerprint, "added_at": self.added_at,
                "public_key": self.public_key.text().strip() if self.public_key else None}


def _key(name: str) -> str:
    return f"parties/{check_party_name(name)}.json"


def add_party(store_dir: Path | str | Any, name: str, public_key: PartyPublicKey | None, *, now: float | None = None,
              replace: bool = False) -> Party:
    """Register ``public_key`` under ``name`` in the store (a directory, ``s3://...`` or a ``Store``); None: a party
    that receives ESPI feeds over the Connect My Data API only."""
    blobs = open_store(store_dir, create=False).blobs
    if blobs.exists(_key(name)) and not replace:
        existing = get_party(store_dir, name)
        if existing.public_key == public_key:
            return existing
        raise ShareError(f"party {name!r} is already registered with another key (fingerprint "
                         f"{existing.fingerprint[:16]}…): pick another name")
    party = Party(name, public_key, time.time() if now is None else now)
    blobs.put(_key(name), json.dumps(party.to_dict(), indent=2).encode())
    return party


def get_party(store_dir: Path | str | Any, name: str) -> Party:
    data = open_store(store_dir, create=False).blobs.get(_key(name))
    if data is None:
        raise ShareError(f"no party {name!r}: register it with `meterseal party add {name} --public-key FILE`")
    try:
        doc = json.loads(data)
        key = PartyPublicKey.parse(doc["public_key"]) if doc.get("public_key") else None
        return Party(doc["name"], key, doc["added_at"])
    except (ValueError, KeyError) as exc:
        raise ShareError(f"party {_key(name)} in the store is unreadable: {exc}") from exc


def list_parties(store_dir: Path | str | Any) -> list[Party]:
    store = open_store(store_dir, create=False)
    return [get_party(store, k[len("parties/"):-5]) for k in store.blobs.list("parties/")
            if k.endswith(".json") and k.count("/") == 1]
