"""C2SP signed notes (golang.org/x/mod/sumdb/note) with Ed25519 and ML-DSA-65 keys.

A note is UTF-8 text ending in a newline, a blank line, then one line per signature::

    — <key name> <base64(4-byte key hash || signature)>

The key hash is SHA-256(name || "\\n" || type || public key)[:4], where type is 0x01 for Ed25519 (64-byte
signatures) and, for ML-DSA-65 (FIPS 204; 3309-byte signatures, 1952-byte public keys), 0xff followed by the
identifier ``ML-DSA-65`` (C2SP reserves 0xff for types it has not assigned, "followed by a longer
identifier"). A verifier key is written ``<name>+<hex key hash>+<base64(type || public key)>`` (a "vkey").
A ``Signer`` may carry co-signers: every note it signs gets their signature lines too (the ledger key signs
with Ed25519 and, beside it, ML-DSA-65, so a verifier trusting only the post-quantum key still checks it).
A ``RemoteSigner`` signs the same notes with a key a key service holds (``streams.kms``).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .exceptions import NoteError

ED25519 = 0x01
SCHEMES = {"ed25519": bytes([ED25519]), "ml-dsa-65": b"\xffML-DSA-65"}  # scheme -> signature type bytes
ALGORITHMS = {"ed25519": "Ed25519", "ml-dsa-65": "ML-DSA-65"}
_PUBLIC_LEN = {"ed25519": 32, "ml-dsa-65": 1952}
_DASH = "\u2014 "


def _key_hash(name: str, public: bytes, scheme: str = "ed25519") -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + SCHEMES[scheme] + public).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise NoteError(f"invalid key name {name!r}: no spaces and no '+'")


@dataclass(frozen=True)
class Verifier:
    name: str
    public: bytes
    scheme: str = "ed25519"

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise NoteError(f"unknown signature scheme {self.scheme!r}")

    @property
    def key_hash(self) -> bytes:
        return _key_hash(self.name, self.public, self.scheme)

    @property
    def algorithm(self) -> str:
        return ALGORITHMS[self.scheme]

    @property
    def vkey(self) -> str:
        return f"{self.name}+{self.key_hash.hex()}+{base64.b64encode(SCHEMES[self.scheme] + self.public).decode()}"

    @classmethod
    def from_vkey(cls, vkey: str) -> "Verifier":
        try:
            name, hash_hex, key_b64 = vkey.strip().split("+", 2)  # base64 may itself contain "+"
            raw = base64.b64decode(key_b64, validate=True)
        except ValueError:
            raise NoteError("malformed verifier key: want name+hash+base64key") from None
        for scheme, prefix in SCHEMES.items():
            if raw.startswith(prefix) and len(raw) == len(prefix) + _PUBLIC_LEN[scheme]:
                verifier = cls(name, raw[len(prefix):], scheme)
                break
        else:
            raise NoteError("verifier key is neither an Ed25519 nor an ML-DSA-65 key")
        if verifier.key_hash.hex() != hash_hex:
            raise NoteError("verifier key hash does not match its name and key")
        return verifier

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            if self.scheme == "ed25519":
                Ed25519PublicKey.from_public_bytes(self.public).verify(signature, text)
            else:
                mldsa.MLDSA65PublicKey.from_public_bytes(self.public).verify(signature, text)
            return True
        except (InvalidSignature, ValueError):
            return False


@dataclass(frozen=True)
class Signer:
    """A signing key: Ed25519 (32-byte private key) or ML-DSA-65 (32-byte seed), plus optional co-signers."""

    name: str
    private: bytes = field(repr=False)
    scheme: str = "ed25519"
    cosigners: tuple["Signer", ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown signature scheme {self.scheme!r}")
        if len(self.private) != 32:
            raise ValueError(f"{ALGORITHMS[self.scheme]} private key (seed) must be 32 bytes")

    @classmethod
    def generate(cls, name: str, scheme: str = "ed25519") -> "Signer":
        if scheme == "ml-dsa-65":
            return cls(name, mldsa.MLDSA65PrivateKey.generate().private_bytes_raw(), scheme)
        from cryptography.hazmat.primitives import serialization

        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        return cls(name, raw)

    def with_cosigners(self, *cosigners: "Signer") -> "Signer":
        return Signer(self.name, self.private, self.scheme, tuple(cosigners))

    @property
    def verifier(self) -> Verifier:
        if self.scheme == "ml-dsa-65":
            public = mldsa.MLDSA65PrivateKey.from_seed_bytes(self.private).public_key().public_bytes_raw()
            return Verifier(self.name, public, self.scheme)
        from cryptography.hazmat.primitives import serialization

        public = Ed25519PrivateKey.from_private_bytes(self.private).public_key()
        return Verifier(self.name, public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    @property
    def verifiers(self) -> list[Verifier]:
        """This key's verifier and its co-signers'."""
        return [self.verifier] + [c.verifier for c in self.cosigners]

    def signature(self, message: bytes) -> bytes:
        """The raw signature of ``message`` (what a signature line carries after the key hash)."""
        if self.scheme == "ml-dsa-65":
            return mldsa.MLDSA65PrivateKey.from_seed_bytes(self.private).sign(message)
        return Ed25519PrivateKey.from_private_bytes(self.private).sign(message)

    def sign_line(self, text: str) -> str:
        signature = self.signature(text.encode())
        return f"{_DASH}{self.name} {base64.b64encode(self.verifier.key_hash + signature).decode()}\n"


@dataclass(frozen=True)
class RemoteSigner:
    """A signing key held elsewhere (a key service: OpenBao transit, a PKCS#11 token): ``signature(message)`` is
    asked for each note, and the answer is checked against ``verifier`` before its line is written, so a service
    that signs with another key (or returns garbage) is an error here, never a bad note. Signs like ``Signer``
    (same lines, same co-signers)."""

    verifier: Verifier
    signature: Callable[[bytes], bytes] = field(repr=False, compare=False)
    cosigners: tuple[Any, ...] = field(default=(), repr=False)

    @property
    def name(self) -> str:
        return self.verifier.name

    @property
    def scheme(self) -> str:
        return self.verifier.scheme

    def with_cosigners(self, *cosigners: Any) -> "RemoteSigner":
        return RemoteSigner(self.verifier, self.signature, tuple(cosigners))

    @property
    def verifiers(self) -> list[Verifier]:
        return [self.verifier] + [c.verifier for c in self.cosigners]

    def sign_line(self, text: str) -> str:
        signature = self.signature(text.encode())
        if not self.verifier.verify(text.encode(), signature):
            raise NoteError(f"the {self.verifier.algorithm} signature made for {self.name} does not verify under its "
                            "public key: the key service signed with another key")
        return f"{_DASH}{self.name} {base64.b64encode(self.verifier.key_hash + signature).decode()}\n"


def sign(text: str, *signers: Signer | RemoteSigner) -> str:
    """The signed note of ``text`` (which must end in a newline), by each signer and its co-signers."""
    if not text.endswith("\n") or "\n\n" in text:
        raise NoteError("note text must end with a newline and contain no blank line")
    lines = [line for s in signers for line in (s.sign_line(text), *(c.sign_line(text) for c in s.cosigners))]
    return text + "\n" + "".join(lines)


def open_note(note: str, verifiers: list[Verifier]) -> tuple[str, list[str]]:
    """(text, names of the known keys whose signatures verify). Raises ``NoteError`` if none does.

    A signature line by a known key name and hash that does not verify is an error, not skipped.
    """
    text, sep, sigs = note.rpartition("\n\n")
    if not sep:
        raise NoteError("malformed note: no blank line before the signatures")
    text += "\n"
    known = {(v.name, v.key_hash): v for v in verifiers}
    good = []
    for line in sigs.splitlines():
        if not line.startswith(_DASH):
            raise NoteError("malformed signature line")
        try:
            name, b64 = line[len(_DASH):].split(" ")
            raw = base64.b64decode(b64, validate=True)
        except ValueError:
            raise NoteError("malformed signature line") from None
        verifier = known.get((name, raw[:4]))
        if verifier is None:
            continue
        if not verifier.verify(text.encode(), raw[4:]):
            raise NoteError(f"invalid signature by {name}")
        good.append(name)
    if not good:
        raise NoteError("no signature by a known key")
    return text, good
