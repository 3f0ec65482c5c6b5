"""The key-service interface: what meterseal asks of whoever holds its master keys.

Four operations, after Kroxylicious's KMS interface (``generateDekPair``, ``decryptEdek``, ``resolveAlias``),
plus signing:

- ``resolve_alias(alias) -> KeyRef``: meterseal names its keys by role (``dek``, ``index``, ``ledger``,
  ``ledger-pq``); the service says which of its keys that is (name, scheme, fingerprint, public key);
- ``generate_dek(key, key_id) -> (secret, wrapped)``: a fresh 32-byte key made by the service and its
  wrapped form;
- ``unwrap(key, key_id, wrapped) -> secret``;
- ``sign(key, message) -> signature`` (checkpoints, consent and budget events).

For the owner's admin commands only: ``wrap`` (a secret that already exists: migration) and ``rewrap`` (to the
service key's newest version, without the secret leaving the service). Every provider binds the key id into
each wrap (``wrap_context``), so a wrapped key copied under another key id does not open. Failures are
``KeyServiceUnavailable`` (not reached: nothing was done, try again), ``KeyServiceDenied`` (the token lacks
the capability the message names) or ``KeyServiceError`` (the rest: a wrapped key that does not open, a key
that is not there).

What the worker and the readers hold on top: ``ServiceDeks`` (a worker's new DEKs, the ``WrappedKey`` fields
of each) and ``ServiceUnwrap`` (a reader's stored DEKs, by the fingerprint a ``WrappedKey`` names).
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ledger.note import RemoteSigner, Verifier

from streams.crypto.envelope import KEY_ID_LEN, DataKey, open_with, seal
from streams.exceptions import InvalidEnvelope, KeyServiceError, KeystoreError

DEK, INDEX, LEDGER, LEDGER_PQ = "dek", "index", "ledger", "ledger-pq"
ALIASES = (DEK, INDEX, LEDGER, LEDGER_PQ)
SECRET_LEN = 32
INDEX_KEY_ID = b"meterseal-index\x00"  # the index key's "key id" in its wrap (16 bytes, like a DEK's)


def wrap_context(key_id: bytes) -> bytes:
    """What each wrap binds: the key id (the owner key's RSA-OAEP label / HPKE info is the same bytes)."""
    if len(key_id) != KEY_ID_LEN:
        raise ValueError(f"key id must be {KEY_ID_LEN} bytes, got {len(key_id)}")
    return b"meterseal/dek-wrap/v1|" + key_id


def fingerprint(scheme: str, *identity: str) -> str:
    """A service key's fingerprint: SHA-256 of its scheme and what identifies it there, hex (what a
    ``WrappedKey``'s ``owner_fingerprint`` names)."""
    return hashlib.sha256("\0".join((scheme, *identity)).encode()).hexdigest()


@dataclass(frozen=True)
class KeyRef:
    """One key in a service: ``alias`` is meterseal's name for its role, ``name`` the service's.

    A wrapping key (``dek``, ``index``) has the wrap ``scheme`` and the ``fingerprint`` wrapped keys name; a
    signing key (``ledger``, ``ledger-pq``) has the signature ``scheme`` (``ed25519``, ``ml-dsa-65``) and its
    ``public`` key."""

    alias: str
    name: str
    scheme: str
    fingerprint: str = ""
    public: bytes = field(default=b"", repr=False)
    version: int = 0  # the service's key version this reference was resolved at (0: not versioned)


@runtime_checkable
class KeyService(Protocol):
    """A key management service. ``location`` names it in every message (a URL, never a secret)."""

    location: str

    def resolve_alias(self, alias: str) -> KeyRef: ...
    def generate_dek(self, key: KeyRef, key_id: bytes) -> tuple[bytes, bytes]: ...
    def unwrap(self, key: KeyRef, key_id: bytes, wrapped: bytes) -> bytes: ...
    def sign(self, key: KeyRef, message: bytes) -> bytes: ...
    def wrap(self, key: KeyRef, key_id: bytes, secret: bytes) -> bytes: ...
    def rewrap(self, key: KeyRef, key_id: bytes, wrapped: bytes) -> bytes | None: ...
    def close(self) -> None: ...


def check_secret(secret: bytes, service: KeyService, key: KeyRef) -> bytes:
    if len(secret) != SECRET_LEN:
        raise KeyServiceError(f"{service.location}: key {key.name!r} gave a {len(secret)}-byte key, not {SECRET_LEN}")
    return secret


@dataclass
class ServiceDeks:
    """A worker's new DEKs from a key service: ``new_dek(now) -> (DataKey, WrappedKey fields)``, as
    ``OwnerPublicKey.new_dek`` does for a passphrase keystore's public key."""

    service: KeyService
    key: KeyRef

    @property
    def scheme(self) -> str:
        return self.key.scheme

    @property
    def fingerprint(self) -> str:
        return self.key.fingerprint

    def new_dek(self, now: float) -> tuple[DataKey, dict[str, Any]]:
        key_id = os.urandom(KEY_ID_LEN)
        secret, wrapped = self.service.generate_dek(self.key, key_id)
        return (DataKey(key_id, check_secret(secret, self.service, self.key), now),
                {"scheme": self.key.scheme, "owner_fingerprint": self.key.fingerprint, "wrapped": wrapped})


class ServiceUnwrap:
    """A reader's stored DEKs from a key service: ``unwrap_dek(WrappedKey record) -> DataKey``.

    ``keys`` are the wrapping keys it may use, by fingerprint; a record that names another fingerprint was
    wrapped under another key (another service, or a keystore this is not) and is a clear error, as is one
    the service will not open (altered)."""

    def __init__(self, service: KeyService, keys: list[KeyRef]) -> None:
        self.service = service
        self.keys = {k.fingerprint: k for k in keys}

    def unwrap_dek(self, record: dict[str, Any]) -> DataKey:
        key = self.keys.get(record["owner_fingerprint"])
        if key is None:
            raise KeyServiceError(
                f"DEK {record['key_id']} was wrapped under key {record['owner_fingerprint'][:16]}… ({record['scheme']}), "
                f"which is not this keystore's (" + ", ".join(f[:16] + "…" for f in self.keys) + f" at {self.service.location}): "
                "it comes from another store or service, or the store was migrated without `meterseal keys migrate`")
        key_id = bytes.fromhex(record["key_id"])
        secret = self.service.unwrap(key, key_id, record["wrapped"])
        return DataKey(key_id, check_secret(secret, self.service, key), record["created_at_ms"] / 1000)


def service_signer(service: KeyService, key: KeyRef, *, name: str) -> RemoteSigner:
    """A checkpoint signer whose key stays in ``service`` (note key ``name``, as the keystore records it)."""
    return RemoteSigner(Verifier(name, key.public, key.scheme), lambda message: service.sign(key, message))


def region_aad(region: str, public_b64: str) -> bytes:
    return b"region:" + region.encode() + b":" + public_b64.encode()


def seal_secret(service: Any, ref: Any, secret: bytes, aad: bytes) -> dict[str, str]:
    """``secret`` sealed under a fresh DEK the service makes (its wrap kept beside the sealed bytes)."""
    key_id = os.urandom(KEY_ID_LEN)
    dek_secret, wrapped = service.generate_dek(ref, key_id)
    return {"key_id": key_id.hex(), "wrapped": base64.b64encode(wrapped).decode(),
            "sealed": base64.b64encode(seal(DataKey(key_id, dek_secret), secret, aad=aad)).decode()}


def open_secret(service: Any, ref: Any, entry: dict[str, str], aad: bytes) -> bytes:
    """What ``seal_secret`` sealed (unwrapping its DEK is an unwrap like any stored DEK's: the owner's right)."""
    key_id = bytes.fromhex(entry["key_id"])
    secret = service.unwrap(ref, key_id, base64.b64decode(entry["wrapped"]))
    try:
        return open_with({key_id: DataKey(key_id, secret)}, base64.b64decode(entry["sealed"]), aad=aad)
    except InvalidEnvelope:
        raise KeystoreError("a sealed key in the keystore does not open (altered?)") from None

