"""What one meterseal process holds of the owner's keys, whichever service keeps them: ``open_keys``.

``open_keys(settings, role=...)`` reads the keystore, connects to the service it names (or ``METERSEAL_KMS``:
the same keys, perhaps at another address) and gives a ``ProcessKeys``: the index key, a worker's new DEKs,
the owner's keyring, a checkpoint signer — each obtained only when asked for, so a process holds only what it
uses. For OpenBao, a role's capabilities are checked at start (``ROLES``: the paths ``docker/openbao/*.hcl``
grant), so a token without one fails with its name before any work, not half way.

``init_kms`` makes a service keystore (``meterseal keys init --kms URI``): the service's keys (created when the
token may), the index key made and wrapped there, the checkpoint keys' public halves — no secret on disk.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from ledger.note import Verifier

from streams.exceptions import ConfigError, KeyServiceError, KeystoreError
from streams.keys.keystore import Keystore, UnlockedKeys
from streams.keys.owner import RSA, OwnerKeyPair
from streams.keys.regions import RegionKey, check_region_name, registry_mac
from streams.kms.local import LocalKeyService
from streams.kms.service import (DEK, INDEX, INDEX_KEY_ID, LEDGER, LEDGER_PQ, KeyRef, ServiceDeks, ServiceUnwrap,
                                 open_secret, region_aad, seal_secret, service_signer)
from streams.kms.uri import LOCAL, OPENBAO, PKCS11, KmsUri, parse
from streams.kms.usage import Metered, Usage
from streams.settings import Settings

# role -> what its process asks of OpenBao: (alias, operation, what for); ``docker/openbao/<role>.hcl`` grants these
ROLES: dict[str, list[tuple[str, str, str]]] = {
    "worker": [(DEK, "datakey/plaintext", "make new DEKs"), (INDEX, "decrypt", "unwrap the index key"),
               (LEDGER, "sign", "sign checkpoints")],
    "console": [(DEK, "decrypt", "unwrap stored DEKs to open records"), (INDEX, "decrypt", "unwrap the index key"),
                (LEDGER, "sign", "sign consent and privacy-budget events")],
    "reader": [(DEK, "decrypt", "unwrap stored DEKs to open records"), (INDEX, "decrypt", "unwrap the index key")],
    "auditor": [(LEDGER, "keys", "read the checkpoint keys' public halves")],
    "admin": [(DEK, "keys", "create and rotate keys"), (DEK, "rewrap", "re-wrap stored DEKs"),
              (DEK, "encrypt", "wrap existing DEKs (migration)"), (DEK, "decrypt", "check that records open")],
}


def connect(uri: KmsUri, environ: Mapping[str, str] | None = None) -> Any:
    """The provider for a service URI (``openbao`` or ``pkcs11``)."""
    if uri.provider == OPENBAO:
        from streams.kms.openbao import OpenBaoTransit

        return OpenBaoTransit(uri, environ=environ)
    if uri.provider == PKCS11:
        from streams.kms.pkcs11 import Pkcs11Token

        return Pkcs11Token(uri, environ=environ)
    raise ConfigError(f"{uri} is not a key service URI")


@dataclass
class ProcessKeys:
    """The owner's keys as one process may use them. ``service`` counts its unwraps in ``usage``."""

    keystore: Keystore
    service: Any
    usage: Usage
    cache_ttl_s: float = 300.0
    cache_size: int = 10_000
    _index_key: bytes | None = field(default=None, repr=False)

    @property
    def local(self) -> bool:
        return self.keystore.kms is None

    @property
    def location(self) -> str:
        return self.service.location

    def ref(self, alias: str) -> KeyRef:
        """A service keystore's key for ``alias``, as the keystore recorded it."""
        entry = self.keystore.kms["keys"].get(alias)
        if entry is None:
            raise KeystoreError(f"the keystore {self.keystore.path} names no {alias!r} key in {self.location}")
        if alias in (LEDGER, LEDGER_PQ):
            slot = self.keystore.ledger_entry("ledger" if alias == LEDGER else "ledger_pq")
            return KeyRef(alias, entry["name"], entry["scheme"], public=_public(slot), version=int(entry.get("version", 0)))
        return KeyRef(alias, entry["name"], entry["scheme"], entry["fingerprint"])

    def index_key(self) -> bytes:
        """The index root key (tokens, record ids, state and subject-key KEKs): every process needs it."""
        if self._index_key is None:
            if self.local:  # under the passphrase: the index key alone, no owner key unlocked
                self._index_key = self.service.index_key()
            else:
                wrap = self.keystore.index_wrap
                self._index_key = self.service.unwrap(self.ref(INDEX), bytes.fromhex(wrap["key_id"]), wrap["wrapped"])
        return self._index_key

    def dek_maker(self) -> Any:
        """What a worker makes and wraps new DEKs with (``new_dek(now)``): the owner's public key, or the service."""
        if self.local:
            return self.keystore.owner_public
        return ServiceDeks(self.service, self.ref(DEK))

    def signer(self) -> Any:
        """The checkpoint signer: the keystore's Ed25519 key with its ML-DSA-65 co-signer, held here (passphrase
        keystore) or in the service (a ``RemoteSigner`` per key, checked against the keystore's public keys)."""
        if self.local:
            return self.service.ledger_signer()
        signers = [service_signer(self.service, self.ref(LEDGER), name=self.keystore.ledger_entry("ledger")["name"])]
        if self.keystore.ledger_entry("ledger_pq") is not None and LEDGER_PQ in self.keystore.kms["keys"]:
            signers.append(service_signer(self.service, self.ref(LEDGER_PQ),
                                          name=self.keystore.ledger_entry("ledger_pq")["name"]))
        return signers[0].with_cosigners(*signers[1:])

    def unlocked(self) -> UnlockedKeys:
        """The owner's reading side: the index key, and a keyring that unwraps DEKs (with the owner keys unlocked
        here, or by the service) and caches them for ``cache_ttl_s`` seconds, ``cache_size`` at most."""
        if self.local:  # the owner keys unlocked here; unwraps still go through the (counting) service
            return replace(self.service.unlocked(), unwrap=ServiceUnwrap(self.service, self.service.wrapping_keys()),
                           cache_ttl_s=self.cache_ttl_s, cache_size=self.cache_size)
        return UnlockedKeys(self.index_key(), unwrap=ServiceUnwrap(self.service, [self.ref(DEK)]),
                            cache_ttl_s=self.cache_ttl_s, cache_size=self.cache_size)

    def keyring(self, store: Any) -> Any:
        return self.unlocked().keyring(store)

    @property
    def verifiers(self) -> list[Verifier]:
        return self.keystore.ledger_verifiers

    def require(self, role: str) -> None:
        """Check, for an OpenBao service, that the token holds what ``role`` uses (``KeyServiceDenied`` naming the
        first missing capability); other services have no per-token policies to check."""
        if self.local or self.keystore.kms["provider"] != OPENBAO:
            return
        needs = []
        for alias, op, purpose in ROLES[role]:
            if alias not in self.keystore.kms["keys"]:
                continue
            name = self.keystore.kms["keys"][alias]["name"]
            needs.append(("read" if op == "keys" else "update", f"{self.service.uri.mount}/{op}/{name}", purpose))
        if role == "worker" and LEDGER_PQ in self.keystore.kms["keys"]:
            name = self.keystore.kms["keys"][LEDGER_PQ]["name"]
            needs.append(("update", f"{self.service.uri.mount}/sign/{name}", "sign checkpoints (ML-DSA-65)"))
        self.service.require(needs)

    def check_verifiers(self) -> list[str]:
        """Confirm the keystore's checkpoint keys against the service's own (an auditor's ``read`` on them): the
        names of those that match; ``KeystoreError`` if one does not (the keystore file's public key was swapped)."""
        if self.local:
            return []
        checked = []
        for alias in (LEDGER, LEDGER_PQ):
            if alias not in self.keystore.kms["keys"]:
                continue
            ref = self.ref(alias)
            if hasattr(self.service, "key_info"):  # OpenBao: the version the keystore pins
                info = self.service.key_info(alias) or {}
                public = base64.b64decode(((info.get("keys") or {}).get(str(ref.version)) or {}).get("public_key", ""))
            else:
                public = self.service.resolve_alias(alias).public
            if public != ref.public:
                raise KeystoreError(f"the {alias} key in {self.keystore.path} is not the one {self.location} holds as "
                                    f"{ref.name} (version {ref.version}): do not trust this keystore's vkeys")
            checked.append(ref.name)
        return checked

    # -- region keys (streams.keys.regions): the owner's copy of each region's private key -----------------
    def region_key(self, region: str) -> RegionKey:
        """A region's key pair, its private half opened with the passphrase or through the service."""
        if self.local:
            return self.keystore.region_key(self.service.passphrase(), region)
        entry = self.keystore.region_entries().get(region)
        if entry is None:
            raise KeystoreError(f"no key for region {region!r}: run `meterseal keys region add {region}`")
        private = open_secret(self.service, self.ref(DEK), entry["private"], region_aad(region, entry["public"]))
        return RegionKey(region, OwnerKeyPair(entry["scheme"], private, base64.b64decode(entry["public"])))

    def add_region(self, region: str, *, replace: bool = False) -> RegionKey:
        """Make ``region``'s key pair; the keystore keeps its public key (MACed with the index key) and the private
        key sealed for the owner (under the passphrase, or by the service)."""
        if self.local:
            return self.keystore.add_region(self.service.passphrase(), region, replace=replace)
        check_region_name(region)
        if region in self.keystore.region_entries() and not replace:
            raise KeystoreError(f"region {region!r} already has a key (use --replace to make a new one; "
                                "grants made for the old key stop opening)")
        key = RegionKey.generate(region, RSA)
        public = base64.b64encode(key.pair.public).decode()
        self.keystore.put_region_entry(region, {
            "scheme": key.pair.scheme, "public": public, "created_at": time.time(),
            "mac": registry_mac(self.index_key(), region, key.pair.scheme, key.pair.public),
            "private": seal_secret(self.service, self.ref(DEK), key.pair.private, region_aad(region, public))})
        return key

    def close(self) -> None:
        self.usage.flush()
        self.service.close()


def _public(slot: dict) -> bytes:
    return base64.b64decode(slot["public"])


def open_keys(settings: Settings, *, role: str, passphrase: str | Callable[[], str] | None = None,
              environ: Mapping[str, str] | None = None, check: bool = False) -> ProcessKeys:
    """The keys of ``settings.data_dir``'s keystore for a process of ``role`` (``worker``, ``console``, ``reader``,
    ``auditor``, ``admin``). ``passphrase`` (or a function asking for it) is used only by a passphrase keystore;
    ``check`` verifies the role's capabilities now."""
    environ = os.environ if environ is None else environ
    keystore = Keystore.load(settings.data_dir)
    usage = Usage(role)
    if keystore.kms is None:
        uri = parse(settings.kms)
        if uri.provider != LOCAL:
            raise ConfigError(f"METERSEAL_KMS={uri} but {keystore.path} is a passphrase keystore: move its keys into "
                              f"the service with `meterseal keys migrate --to-kms '{uri}'`")
        service: Any = LocalKeyService(keystore, passphrase)
    else:
        uri = parse(settings.kms or keystore.kms["uri"])
        recorded = parse(keystore.kms["uri"])
        if (uri.provider, uri.mount, uri.key, uri.token) != (recorded.provider, recorded.mount, recorded.key, recorded.token):
            raise ConfigError(f"METERSEAL_KMS={uri} names other keys than the keystore {keystore.path} was made with "
                              f"({recorded}); leave METERSEAL_KMS unset, or change only the address")
        service = connect(uri, environ)
    keys = ProcessKeys(keystore, Metered(service, usage), usage, settings.kms_cache_ttl, settings.kms_cache_size)
    if check:
        keys.require(role)
    return keys


def init_kms(data_dir: Path | str, uri: KmsUri, *, environ: Mapping[str, str] | None = None, force: bool = False,
             service: Any = None) -> tuple[Keystore, dict[str, str]]:
    """Make a service keystore in ``data_dir``: the service's keys where missing (when the token may: else a
    ``KeyServiceDenied`` listing the keys to create), a new index key made and wrapped there, the checkpoint
    keys' public halves. Returns (keystore, alias -> "created"/"exists"/"not offered")."""
    if uri.provider == LOCAL:
        raise ConfigError("keys init --kms needs a key service URI: " + "openbao://HOST:PORT/MOUNT/KEY or "
                          "pkcs11:module=PATH;token=LABEL;key=LABEL")
    if Keystore.exists(data_dir) and not force:
        raise KeystoreError(f"a keystore already exists in {data_dir}; records sealed for it would become unreadable "
                            "if it were replaced (use --force only on purpose)")
    service = service or connect(uri, environ)
    created = service.create_keys()
    return write_service_keystore(data_dir, uri, service, created=created, force=force), created


def write_service_keystore(data_dir: Path | str, uri: KmsUri, service: Any, *, created: dict[str, str],
                           index_key: bytes | None = None, ledger_names: dict[str, str] | None = None,
                           regions: dict | None = None, force: bool = False) -> Keystore:
    """The service keystore's file: ``index_key`` wrapped by the service (a new one when None), checkpoint keys
    by their note names (``ledger_names``: alias -> name; default ``meterseal-ledger[-mldsa65]``)."""
    names = {LEDGER: "meterseal-ledger", LEDGER_PQ: "meterseal-ledger-mldsa65", **(ledger_names or {})}
    dek, index = service.resolve_alias(DEK), service.resolve_alias(INDEX)
    if index_key is None:
        index_key, wrapped = service.generate_dek(index, INDEX_KEY_ID)
    else:
        wrapped = service.wrap(index, INDEX_KEY_ID, index_key)
    if service.unwrap(index, INDEX_KEY_ID, wrapped) != index_key:
        raise KeyServiceError(f"{service.location} did not give back the index key it wrapped")
    keys = {a: {"name": r.name, "scheme": r.scheme, "fingerprint": r.fingerprint} for a, r in ((DEK, dek), (INDEX, index))}
    slots = {}
    for alias, slot in ((LEDGER, "ledger"), (LEDGER_PQ, "ledger_pq")):
        if created.get(alias) not in ("created", "exists", "imported"):
            continue
        ref = service.resolve_alias(alias)
        keys[alias] = {"name": ref.name, "scheme": ref.scheme, "version": ref.version}
        slots[slot] = {"name": names[alias], "public": ref.public, "service_key": ref.name}
    return Keystore.init_kms(data_dir, kms={"uri": str(uri), "provider": uri.provider, "keys": keys},
                             index_key={"key_id": INDEX_KEY_ID.hex(), "scheme": index.scheme,
                                        "owner_fingerprint": index.fingerprint, "wrapped": wrapped},
                             ledger=slots["ledger"], ledger_pq=slots.get("ledger_pq"), regions=regions, force=force)
