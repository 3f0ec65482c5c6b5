"""A PKCS#11 token as the key service (SoftHSM2 in tests; an HSM in production), through ``python-pkcs11``.

Install with ``pip install 'meterseal[hsm]'``. Keys, for ``pkcs11:module=PATH;token=LABEL;key=KEY``, all token
objects that never leave it (sensitive, not extractable):

- ``KEY`` and ``KEY-index``: AES-256 keys that only wrap and unwrap (CKA_WRAP/CKA_UNWRAP, no encrypt/decrypt).
  A DEK is made by the token's random generator and wrapped with **AES key wrap with padding**
  (CKM_AES_KEY_WRAP_PAD, RFC 5649) as ``DEK || SHA-256(wrap context)[:16]``, so the key id is bound into the
  wrap as transit's derivation context binds it. RSA-OAEP is not used at all: SoftHSM2 2.6.1 (Debian
  bookworm) does OAEP with SHA-1 only, and meterseal never falls back to it — a token without
  CKM_AES_KEY_WRAP_PAD is refused at start;
- ``KEY-ledger``: an Ed25519 key pair (CKM_EDDSA) that signs checkpoints. No ML-DSA-65 here: SoftHSM2 2.6.1
  does not offer it, so checkpoints carry the Ed25519 signature only.

What PKCS#11 does not give: per-process rights. Anyone with the PIN may use every key (SoftHSM2 has one user
role), so a worker holding the PIN could unwrap stored DEKs; a token with per-key usage policies (a network
HSM's partitions) is what separates roles there (README: Keys in a KMS). Keys have no versions: rotation is a
new key label and ``keys migrate``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from typing import Any, Mapping

from streams.exceptions import KeyServiceDenied, KeyServiceError, KeyServiceUnavailable
from streams.kms.service import DEK, INDEX, LEDGER, LEDGER_PQ, SECRET_LEN, KeyRef, fingerprint, wrap_context
from streams.kms.uri import KmsUri

SCHEME = "pkcs11_aes_kwp"
_TAG_LEN = 16
_ED25519_OID = "1.3.101.112"


def key_labels(key: str) -> dict[str, str]:
    return {DEK: key, INDEX: f"{key}-index", LEDGER: f"{key}-ledger"}


def _tag(key_id: bytes) -> bytes:
    return hashlib.sha256(wrap_context(key_id)).digest()[:_TAG_LEN]


class Pkcs11Token:
    """``KeyService`` on a PKCS#11 token; the PIN defaults to ``METERSEAL_PKCS11_PIN``."""

    def __init__(self, uri: KmsUri, *, pin: str | None = None, environ: Mapping[str, str] | None = None) -> None:
        try:
            import pkcs11
        except ImportError:
            raise KeyServiceUnavailable("the pkcs11 key service needs python-pkcs11: pip install 'meterseal[hsm]'") from None
        environ = os.environ if environ is None else environ
        self.uri, self.location = uri, str(uri)
        self.labels = key_labels(uri.key)
        pin = pin or environ.get("METERSEAL_PKCS11_PIN")
        if not pin:
            raise KeyServiceDenied(f"no PIN for the token {uri.token!r} ({self.location}): set METERSEAL_PKCS11_PIN")
        try:
            lib = pkcs11.lib(uri.module)
        except Exception as exc:  # noqa: BLE001 - a missing or broken module, whatever the loader raises
            raise KeyServiceUnavailable(f"cannot load the PKCS#11 module {uri.module} ({exc}): for SoftHSM2, "
                                        "apt-get install -y softhsm2") from None
        try:
            token = lib.get_token(token_label=uri.token)
        except pkcs11.exceptions.NoSuchToken:
            raise KeyServiceUnavailable(f"no token labelled {uri.token!r} in {uri.module} (for SoftHSM2: "
                                        f"softhsm2-util --init-token --free --label {uri.token})") from None
        try:
            try:
                self._session = token.open(user_pin=pin, rw=True)
            except pkcs11.exceptions.UserAlreadyLoggedIn:  # login is per process: another session of ours holds it
                self._session = token.open(rw=True)
        except (pkcs11.exceptions.PinIncorrect, pkcs11.exceptions.PinLenRange, pkcs11.exceptions.PinLocked):
            raise KeyServiceDenied(f"the token {uri.token!r} refused the PIN in METERSEAL_PKCS11_PIN") from None
        mechanisms = token.slot.get_mechanisms()
        if pkcs11.Mechanism.AES_KEY_WRAP_PAD not in mechanisms:
            self._session.close()
            raise KeyServiceError(f"the token {uri.token!r} does not offer AES key wrap with padding "
                                  "(CKM_AES_KEY_WRAP_PAD): meterseal wraps keys only with it, never with RSA-OAEP/SHA-1")
        self._serial = token.serial.decode() if isinstance(token.serial, bytes) else str(token.serial)
        self._pkcs11 = pkcs11
        self._lock = threading.Lock()  # one session, used from the worker's threads too

    # -- token objects --------------------------------------------------------------------------------
    def _find(self, label: str, kind: Any) -> Any:
        found = list(self._session.get_objects({self._pkcs11.Attribute.LABEL: label,
                                                self._pkcs11.Attribute.CLASS: kind}))
        if not found:
            raise KeyServiceError(f"no key labelled {label!r} on the token {self.uri.token!r} ({self.location}): run "
                                  f"`meterseal keys init --kms '{self.location}'`")
        return found[0]

    def _kek(self, key: KeyRef) -> Any:
        return self._find(key.name, self._pkcs11.ObjectClass.SECRET_KEY)

    def _wrap(self, key: KeyRef, key_id: bytes, secret: bytes) -> bytes:
        p = self._pkcs11
        kek = self._kek(key)
        payload = self._session.create_object({
            p.Attribute.CLASS: p.ObjectClass.SECRET_KEY, p.Attribute.KEY_TYPE: p.KeyType.GENERIC_SECRET,
            p.Attribute.VALUE: secret + _tag(key_id), p.Attribute.TOKEN: False, p.Attribute.EXTRACTABLE: True,
            p.Attribute.SENSITIVE: False})
        try:
            return kek.wrap_key(payload, mechanism=p.Mechanism.AES_KEY_WRAP_PAD)
        finally:
            payload.destroy()

    # -- the interface ------------------------------------------------------------------------------
    def resolve_alias(self, alias: str) -> KeyRef:
        if alias == LEDGER_PQ:
            raise KeyServiceError(f"the token {self.uri.token!r} offers no ML-DSA-65 (SoftHSM2 2.6.1 has none): "
                                  "checkpoints are signed with Ed25519 only")
        if alias not in self.labels:
            raise KeyServiceError(f"{self.location}: no key for alias {alias!r}")
        label = self.labels[alias]
        if alias in (DEK, INDEX):
            return KeyRef(alias, label, SCHEME, fingerprint(SCHEME, self._serial, label))
        with self._lock:
            point = bytes(self._find(label, self._pkcs11.ObjectClass.PUBLIC_KEY)[self._pkcs11.Attribute.EC_POINT])
        return KeyRef(alias, label, "ed25519", public=point[-32:])  # DER OCTET STRING 04 20 || key

    def generate_dek(self, key: KeyRef, key_id: bytes) -> tuple[bytes, bytes]:
        with self._lock:
            secret = bytes(self._session.generate_random(8 * SECRET_LEN))
            return secret, self._wrap(key, key_id, secret)

    def unwrap(self, key: KeyRef, key_id: bytes, wrapped: bytes) -> bytes:
        p = self._pkcs11
        with self._lock:
            kek = self._kek(key)
            try:
                obj = kek.unwrap_key(p.ObjectClass.SECRET_KEY, p.KeyType.GENERIC_SECRET, wrapped,
                                     mechanism=p.Mechanism.AES_KEY_WRAP_PAD, store=False,
                                     template={p.Attribute.EXTRACTABLE: True, p.Attribute.SENSITIVE: False})
            except p.exceptions.PKCS11Error:
                obj = None
            if obj is not None:
                try:
                    payload = bytes(obj[p.Attribute.VALUE])
                finally:
                    obj.destroy()
        if obj is None or len(payload) != SECRET_LEN + _TAG_LEN or not hmac.compare_digest(payload[SECRET_LEN:], _tag(key_id)):
            raise KeyServiceError(f"wrapped key {key_id.hex()} does not open under token key {key.name!r} at "
                                  f"{self.location}: it was altered, or wrapped under another token's key")
        return payload[:SECRET_LEN]

    def sign(self, key: KeyRef, message: bytes) -> bytes:
        with self._lock:
            private = self._find(key.name, self._pkcs11.ObjectClass.PRIVATE_KEY)
            return bytes(private.sign(message, mechanism=self._pkcs11.Mechanism.EDDSA))

    def wrap(self, key: KeyRef, key_id: bytes, secret: bytes) -> bytes:
        if len(secret) != SECRET_LEN:
            raise KeyServiceError(f"only {SECRET_LEN}-byte keys are wrapped, not {len(secret)}")
        with self._lock:
            return self._wrap(key, key_id, secret)

    def rewrap(self, key: KeyRef, key_id: bytes, wrapped: bytes) -> bytes | None:
        """Token keys have no versions: nothing to move (rotate by a new key label and ``keys migrate``)."""
        return None

    def close(self) -> None:
        with self._lock:
            self._session.close()

    # -- administration ------------------------------------------------------------------------------
    def has_key(self, alias: str) -> bool:
        if alias not in self.labels:
            return False
        kind = self._pkcs11.ObjectClass.SECRET_KEY if alias in (DEK, INDEX) else self._pkcs11.ObjectClass.PRIVATE_KEY
        with self._lock:
            return bool(list(self._session.get_objects({self._pkcs11.Attribute.LABEL: self.labels[alias],
                                                        self._pkcs11.Attribute.CLASS: kind})))

    def create_keys(self, aliases: tuple[str, ...] = (DEK, INDEX, LEDGER, LEDGER_PQ)) -> dict[str, str]:
        """Make the token keys where missing; alias -> "created", "exists" or "not offered" (ML-DSA-65)."""
        p = self._pkcs11
        done = {}
        with self._lock:
            for alias in (a for a in (DEK, INDEX) if a in aliases):
                label = self.labels[alias]
                if list(self._session.get_objects({p.Attribute.LABEL: label, p.Attribute.CLASS: p.ObjectClass.SECRET_KEY})):
                    done[alias] = "exists"
                    continue
                self._session.generate_key(p.KeyType.AES, 256, label=label, store=True, template={
                    p.Attribute.SENSITIVE: True, p.Attribute.EXTRACTABLE: False, p.Attribute.WRAP: True,
                    p.Attribute.UNWRAP: True, p.Attribute.ENCRYPT: False, p.Attribute.DECRYPT: False,
                    p.Attribute.PRIVATE: True})
                done[alias] = "created"
            label = self.labels[LEDGER]
            if LEDGER not in aliases:
                pass
            elif list(self._session.get_objects({p.Attribute.LABEL: label, p.Attribute.CLASS: p.ObjectClass.PRIVATE_KEY})):
                done[LEDGER] = "exists"
            else:
                from pkcs11.util.ec import encode_named_curve_parameters

                params = self._session.create_domain_parameters(
                    p.KeyType.EC_EDWARDS, {p.Attribute.EC_PARAMS: encode_named_curve_parameters(_ED25519_OID)}, local=True)
                params.generate_keypair(store=True, label=label, private_template={
                    p.Attribute.SENSITIVE: True, p.Attribute.EXTRACTABLE: False, p.Attribute.SIGN: True})
                done[LEDGER] = "created"
        if LEDGER_PQ in aliases:
            done[LEDGER_PQ] = "not offered"
        return done

    def import_signing_key(self, alias: str, pkcs8: bytes) -> KeyRef:
        """Bring an existing Ed25519 checkpoint key onto the token (migration keeps the logs' names), stored
        sensitive and not extractable. ML-DSA-65 keys cannot come: the token has no ML-DSA."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from pkcs11.util.ec import encode_named_curve_parameters

        if alias != LEDGER:
            raise KeyServiceError(f"the token {self.uri.token!r} takes only the Ed25519 ledger key, not {alias!r}")
        key = serialization.load_der_private_key(pkcs8, None)
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyServiceError("the ledger key to import is not an Ed25519 key")
        p = self._pkcs11
        raw = key.private_bytes_raw()
        public = key.public_key().public_bytes_raw()
        params = encode_named_curve_parameters(_ED25519_OID)
        label = self.labels[LEDGER]
        with self._lock:
            self._session.create_object({
                p.Attribute.CLASS: p.ObjectClass.PRIVATE_KEY, p.Attribute.KEY_TYPE: p.KeyType.EC_EDWARDS,
                p.Attribute.EC_PARAMS: params, p.Attribute.VALUE: raw, p.Attribute.LABEL: label,
                p.Attribute.TOKEN: True, p.Attribute.PRIVATE: True, p.Attribute.SENSITIVE: True,
                p.Attribute.EXTRACTABLE: False, p.Attribute.SIGN: True})
            self._session.create_object({
                p.Attribute.CLASS: p.ObjectClass.PUBLIC_KEY, p.Attribute.KEY_TYPE: p.KeyType.EC_EDWARDS,
                p.Attribute.EC_PARAMS: params, p.Attribute.EC_POINT: b"\x04\x20" + public, p.Attribute.LABEL: label,
                p.Attribute.TOKEN: True, p.Attribute.VERIFY: True})
        return self.resolve_alias(LEDGER)
