"""The passphrase keystore as a key service: ``METERSEAL_KMS=local``, the embedded default.

What it holds is today's keystore (``streams.keys.keystore``): owner key pairs (RSA-OAEP-3072 or HPKE), the
index key and the checkpoint keys, sealed under a scrypt key from ``METERSEAL_PASSPHRASE``. Making a DEK needs
only the owner's public key (a worker never unlocks more); unwrapping and signing unlock the keystore with the
passphrase, asked for once and only when needed. Here the keys do enter the process's memory: that is what
the other providers exist to avoid.
"""

from __future__ import annotations

import os
from typing import Callable

from ledger.note import Signer

from streams.crypto.envelope import DataKey
from streams.exceptions import InvalidEnvelope, KeyServiceError
from streams.keys.keystore import Keystore, UnlockedKeys
from streams.kms.service import DEK, INDEX, INDEX_KEY_ID, LEDGER, LEDGER_PQ, SECRET_LEN, KeyRef


class LocalKeyService:
    """``KeyService`` over a passphrase keystore. ``passphrase``: the passphrase, or a function that asks for
    it (called at most once, the first time a secret is needed)."""

    def __init__(self, keystore: Keystore, passphrase: str | Callable[[], str] | None = None) -> None:
        self.keystore = keystore
        self.location = f"local keystore {keystore.path}"
        self._passphrase = passphrase
        self._unlocked: UnlockedKeys | None = None
        self._signer: Signer | None = None

    def passphrase(self) -> str:
        if callable(self._passphrase):
            self._passphrase = self._passphrase()
        if not self._passphrase:
            raise KeyServiceError(f"{self.location}: no passphrase (set METERSEAL_PASSPHRASE)")
        return self._passphrase

    def unlocked(self) -> UnlockedKeys:
        if self._unlocked is None:
            self._unlocked = self.keystore.unlock(self.passphrase())
        return self._unlocked

    def index_key(self) -> bytes:
        """The index key alone (what a worker unlocks: no owner private key)."""
        return self._unlocked.index_key if self._unlocked else self.keystore.index_key(self.passphrase())

    def ledger_signer(self) -> Signer:
        if self._signer is None:
            self._signer = self.keystore.ledger_signer(self.passphrase())
        return self._signer

    # -- the interface ------------------------------------------------------------------------------
    def resolve_alias(self, alias: str) -> KeyRef:
        if alias == DEK:
            owner = self.keystore.owner_public
            return KeyRef(DEK, owner.fingerprint, owner.scheme, owner.fingerprint)
        if alias == INDEX:
            return KeyRef(INDEX, "index_key", "passphrase", "passphrase")
        if alias in (LEDGER, LEDGER_PQ):
            verifier = self.keystore.ledger_verifier if alias == LEDGER else self.keystore.ledger_pq_verifier
            if verifier is None:
                raise KeyServiceError(f"{self.location} has no ML-DSA-65 ledger key (`meterseal keys ledger-pq` adds one)")
            return KeyRef(alias, verifier.name, verifier.scheme, public=verifier.public)
        raise KeyServiceError(f"{self.location}: no key for alias {alias!r}")

    def generate_dek(self, key: KeyRef, key_id: bytes) -> tuple[bytes, bytes]:
        if key.alias != DEK:
            raise KeyServiceError(f"{self.location} makes DEKs only under its owner key, not {key.alias!r}")
        secret = os.urandom(SECRET_LEN)
        return secret, self.wrap(key, key_id, secret)

    def wrap(self, key: KeyRef, key_id: bytes, secret: bytes) -> bytes:
        owner = self.keystore.owner_public
        if key.fingerprint != owner.fingerprint:
            raise KeyServiceError(f"{self.location}: new wraps use the active owner key {owner.fingerprint[:16]}…")
        return owner.wrap(DataKey(key_id, secret))

    def unwrap(self, key: KeyRef, key_id: bytes, wrapped: bytes) -> bytes:
        if key.alias == INDEX and key_id == INDEX_KEY_ID:
            return self.index_key()
        unwrapper = self.unlocked().unwrappers().get(key.fingerprint)
        if unwrapper is None:
            raise KeyServiceError(f"{self.location} holds no owner key {key.fingerprint[:16]}…")
        try:
            return unwrapper.unwrap(key_id, wrapped).secret
        except InvalidEnvelope:
            raise KeyServiceError(f"wrapped key {key_id.hex()} does not open under owner key {key.fingerprint[:16]}… "
                                  "of this keystore: it was altered, or wrapped for another key") from None

    def sign(self, key: KeyRef, message: bytes) -> bytes:
        signer = self.ledger_signer()
        for s in (signer, *signer.cosigners):
            if s.name == key.name and s.scheme == key.scheme:
                return s.signature(message)
        raise KeyServiceError(f"{self.location} has no signing key {key.name!r}")

    def rewrap(self, key: KeyRef, key_id: bytes, wrapped: bytes) -> bytes | None:
        """A wrap for an older owner key moves to the active one (``key`` names the key it was made for)."""
        owner = self.keystore.owner_public
        if key.fingerprint == owner.fingerprint:
            return None
        return owner.wrap(DataKey(key_id, self.unwrap(key, key_id, wrapped)))

    def wrapping_keys(self) -> list[KeyRef]:
        """Every owner key a stored DEK may name (older ones still open older DEKs), active last."""
        return [KeyRef(DEK, o["fingerprint"], o["scheme"], o["fingerprint"]) for o in self.keystore.describe()["owners"]]

    def close(self) -> None:
        self._unlocked = self._signer = None
