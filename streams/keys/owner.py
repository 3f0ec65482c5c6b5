"""The data owner's key pair, which every DEK is wrapped for.

Two schemes, chosen when the keystore is made:

- ``rsa_oaep_3072_sha256`` — RSA-3072 with OAEP/SHA-256, the earlier prototype's scheme, but
  once per DEK instead of once per record;
- ``hpke_mlkem768_x25519`` — RFC 9180 HPKE with the hybrid ML-KEM-768 + X25519 KEM,
  HKDF-SHA256 and AES-256-GCM: safe if either the lattice or the curve holds.

The DEK's key id is bound into the wrap (OAEP label / HPKE info), so a wrapped key cannot be
passed off under another key id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from streams.crypto import _primitives
from streams.crypto.envelope import DataKey
from streams.exceptions import InvalidEnvelope

RSA = "rsa_oaep_3072_sha256"
HPKE = "hpke_mlkem768_x25519"
SCHEMES = (RSA, HPKE)


def _context(key_id: bytes) -> bytes:
    return b"meterseal/dek-wrap/v1|" + key_id


@dataclass(frozen=True)
class OwnerPublicKey:
    scheme: str
    public: bytes

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown wrap scheme {self.scheme!r}; use one of {', '.join(SCHEMES)}")

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the scheme name and public key bytes, hex."""
        return hashlib.sha256(self.scheme.encode() + b"\0" + self.public).hexdigest()

    def wrap(self, dek: DataKey) -> bytes:
        if self.scheme == RSA:
            return _primitives.rsa_wrap(self.public, dek.secret, _context(dek.key_id))
        return _primitives.hpke_wrap(self.public, dek.secret, _context(dek.key_id))

    def new_dek(self, now: float | None = None) -> tuple[DataKey, dict]:
        """A new DEK and the ``WrappedKey`` fields of its wrap for this key: what a worker keeps and publishes
        (the same call as a key service's, ``streams.kms.service.ServiceDeks``)."""
        dek = DataKey.generate(now=now)
        return dek, {"scheme": self.scheme, "owner_fingerprint": self.fingerprint, "wrapped": self.wrap(dek)}

    def pem(self) -> str:
        """PEM for RSA; for the hybrid key, base64 of ML-KEM public || X25519 public."""
        if self.scheme == RSA:
            return _primitives.public_pem(self.public)
        import base64

        return f"{HPKE} {base64.b64encode(self.public).decode()}\n"


@dataclass(frozen=True)
class OwnerKeyPair:
    scheme: str
    private: bytes = field(repr=False)
    public: bytes

    @classmethod
    def generate(cls, scheme: str = RSA) -> "OwnerKeyPair":
        if scheme == RSA:
            return cls(scheme, *_primitives.rsa_generate())
        if scheme == HPKE:
            return cls(scheme, *_primitives.hpke_generate())
        raise ValueError(f"unknown wrap scheme {scheme!r}; use one of {', '.join(SCHEMES)}")

    @property
    def public_key(self) -> OwnerPublicKey:
        return OwnerPublicKey(self.scheme, self.public)

    def unwrapper(self) -> "Unwrapper":
        return Unwrapper(self)


class Unwrapper:
    """Unwraps DEKs with one loaded private key (the key is parsed once, not per DEK)."""

    def __init__(self, pair: OwnerKeyPair) -> None:
        self.scheme = pair.scheme
        self.fingerprint = pair.public_key.fingerprint
        self._key = _primitives.rsa_private(pair.private) if pair.scheme == RSA else _primitives.hpke_private(pair.private)

    def unwrap(self, key_id: bytes, wrapped: bytes, *, created_at: float = 0.0) -> DataKey:
        try:
            if self.scheme == RSA:
                secret = _primitives.rsa_unwrap(self._key, wrapped, _context(key_id))
            else:
                secret = _primitives.hpke_unwrap(self._key, wrapped, _context(key_id))
            return DataKey(key_id, secret, created_at)
        except Exception as exc:  # each backend raises its own type; callers get exactly one
            raise InvalidEnvelope("wrapped DEK could not be opened with this owner key") from exc
