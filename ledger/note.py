"""C2SP signed notes (golang.org/x/mod/sumdb/note) with Ed25519 keys.

A note is UTF-8 text ending in a newline, a blank line, then one line per signature::

    — <key name> <base64(4-byte key hash || 64-byte signature)>

The key hash is SHA-256(name || "\\n" || 0x01 || public key)[:4]. A verifier key is written
``<name>+<hex key hash>+<base64(0x01 || public key)>`` (a "vkey").
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .exceptions import NoteError

ED25519 = 0x01
_DASH = "\u2014 "


def _key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public).digest()[:4]


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise NoteError(f"invalid key name {name!r}: no spaces and no '+'")


@dataclass(frozen=True)
class Verifier:
    name: str
    public: bytes

    @property
    def key_hash(self) -> bytes:
        return _key_hash(self.name, self.public)

    @property
    def vkey(self) -> str:
        return f"{self.name}+{self.key_hash.hex()}+{base64.b64encode(bytes([ED25519]) + self.public).decode()}"

    @classmethod
    def from_vkey(cls, vkey: str) -> "Verifier":
        try:
            name, hash_hex, key_b64 = vkey.strip().split("+", 2)  # base64 may itself contain "+"
            raw = base64.b64decode(key_b64, validate=True)
        except ValueError:
            raise NoteError("malformed verifier key: want name+hash+base64key") from None
        if len(raw) != 33 or raw[0] != ED25519:
            raise NoteError("verifier key is not an Ed25519 key")
        verifier = cls(name, raw[1:])
        if verifier.key_hash.hex() != hash_hex:
            raise NoteError("verifier key hash does not match its name and key")
        return verifier

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, text)
            return True
        except InvalidSignature:
            return False


@dataclass(frozen=True)
class Signer:
    name: str
    private: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.private) != 32:
            raise ValueError("Ed25519 private key must be 32 bytes")

    @classmethod
    def generate(cls, name: str) -> "Signer":
        from cryptography.hazmat.primitives import serialization

        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        return cls(name, raw)

    @property
    def verifier(self) -> Verifier:
        from cryptography.hazmat.primitives import serialization

        public = Ed25519PrivateKey.from_private_bytes(self.private).public_key()
        return Verifier(self.name, public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    def sign_line(self, text: str) -> str:
        signature = Ed25519PrivateKey.from_private_bytes(self.private).sign(text.encode())
        return f"{_DASH}{self.name} {base64.b64encode(self.verifier.key_hash + signature).decode()}\n"


def sign(text: str, *signers: Signer) -> str:
    """The signed note of ``text`` (which must end in a newline)."""
    if not text.endswith("\n") or "\n\n" in text:
        raise NoteError("note text must end with a newline and contain no blank line")
    return text + "\n" + "".join(s.sign_line(text) for s in signers)


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
