"""Device keys: ECDSA P-256 (``ES256``, DER signatures over SHA-256, as DLMS/COSEM security suite 1) or Ed25519.

A device's KEY_ID is the lowercase hex SHA-256 of its public key's DER SubjectPublicKeyInfo, so anyone holding
the key computes it, and no two keys share one.

>>> key = DeviceKey.generate("Ed25519")
>>> public = DevicePublicKey.from_pem(key.public_key.pem())
>>> public.kid == key.public_key.kid and len(public.kid) == 64
True
>>> public.verify(b"reading", key.sign(b"reading")), public.verify(b"other", key.sign(b"reading"))
(True, False)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.crypto import _primitives
from streams.exceptions import MeterSealError

ALGS = _primitives.SIGNATURE_ALGS


class DeviceError(MeterSealError):
    """A device key, registration or proof that cannot be used; the message says what to do."""


def key_id(spki_der: bytes) -> str:
    """KEY_ID: lowercase hex SHA-256 of the DER SubjectPublicKeyInfo."""
    return hashlib.sha256(spki_der).hexdigest()


@dataclass(frozen=True)
class DevicePublicKey:
    """A device's public key (what the owner registers and a third party checks a reading with)."""

    alg: str
    spki: bytes  # DER SubjectPublicKeyInfo
    _key: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self._key is None:
            alg, spki, key = self._load(self.spki)
            if alg != self.alg:
                raise DeviceError(f"the key is {alg}, not {self.alg}")
            object.__setattr__(self, "spki", spki)
            object.__setattr__(self, "_key", key)

    @staticmethod
    def _load(data: bytes) -> tuple[str, bytes, Any]:
        try:
            return _primitives.signing_public(data)
        except (ValueError, TypeError) as exc:
            raise DeviceError(f"not a device public key ({exc}): give an ECDSA P-256 or Ed25519 public key in PEM "
                              "(`meterseal device keygen` writes one)") from None

    @classmethod
    def parse(cls, data: bytes | str) -> "DevicePublicKey":
        """From PEM text or DER bytes."""
        alg, spki, key = cls._load(data.encode() if isinstance(data, str) else data)
        return cls(alg, spki, key)

    from_pem = parse

    @classmethod
    def read(cls, path: Path | str) -> "DevicePublicKey":
        try:
            return cls.parse(Path(path).read_bytes())
        except OSError as exc:
            raise DeviceError(f"cannot read the device public key {path}: {exc.strerror}") from None

    @property
    def kid(self) -> str:
        return key_id(self.spki)

    def pem(self) -> str:
        return _primitives.public_pem(self.spki)

    def verify(self, payload: bytes, signature: bytes) -> bool:
        return _primitives.signing_verify(self.alg, self._key, signature, payload)


@dataclass(frozen=True)
class DeviceKey:
    """A device's private key, for simulators and trials (a real meter keeps its key in its secure element)."""

    alg: str
    private: bytes = field(repr=False)  # PKCS#8 DER
    public_key: DevicePublicKey
    _key: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def generate(cls, alg: str = "ES256") -> "DeviceKey":
        if alg not in ALGS:
            raise DeviceError(f"unknown algorithm {alg!r}: {' or '.join(ALGS)}")
        return cls.parse(_primitives.signing_generate(alg)[0])

    @classmethod
    def parse(cls, data: bytes) -> "DeviceKey":
        try:
            alg, key, private, public = _primitives.signing_private(data)
        except (ValueError, TypeError) as exc:
            raise DeviceError(f"not a device private key ({exc}): give a PKCS#8 PEM ECDSA P-256 or Ed25519 key "
                              "(`meterseal device keygen` writes one)") from None
        return cls(alg, private, DevicePublicKey.parse(public), key)

    @classmethod
    def read(cls, path: Path | str) -> "DeviceKey":
        try:
            return cls.parse(Path(path).read_bytes())
        except OSError as exc:
            raise DeviceError(f"cannot read the device key {path}: {exc.strerror}") from None

    def sign(self, payload: bytes) -> bytes:
        return _primitives.signing_sign(self.alg, self._key, payload)

    def save(self, directory: Path | str, name: str = "device") -> tuple[Path, Path]:
        """``DIR/<name>.key`` (PKCS#8 PEM, mode 0600, unencrypted: a simulator's key) and ``DIR/<name>.pub``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        key_path, pub_path = directory / f"{name}.key", directory / f"{name}.pub"
        if key_path.exists():
            raise DeviceError(f"{key_path} exists: pick another --out (a registered key would be orphaned)")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(_primitives.private_pem(self.private))
        pub_path.write_text(self.public_key.pem())
        return key_path, pub_path
