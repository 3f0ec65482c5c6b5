"""The keystore in the data directory: owner key pairs and the index root key.

``<data-dir>/keystore.json`` holds public keys in clear and every secret sealed with AES-256-GCM
under a key derived from the passphrase with scrypt (N=2**15, r=8, p=1). A wrong passphrase
is an error, never a fallback. Owner keys rotate (``meterseal keys rotate``); old private keys
stay, so DEKs wrapped earlier still open. The index root key never rotates: the blind-index
tokens of every stored record are derived from it.

A *service* keystore (``keys init --kms URI``, ``streams.kms``) holds no secret at all: it names the key
service and its keys, and keeps the index key as the service wrapped it and the checkpoint keys' public
halves; there is no passphrase, and the passphrase methods refuse it with a ``KeystoreError``.
"""

from __future__ import annotations

import hmac
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.note import Signer, Verifier

from streams.crypto import _primitives
from streams.crypto.envelope import DataKey, open_with, seal
from streams.exceptions import InvalidEnvelope, KeystoreError
from streams.keys.keyring import Keyring
from streams.keys.owner import RSA, OwnerKeyPair, OwnerPublicKey, Unwrapper
from streams.keys.passfile import SCRYPT as _SCRYPT, b64 as _b64, unb64 as _unb64

FILENAME = "keystore.json"
FORMAT = 2
_KEK_ID = b"meterseal-kstore"  # 16 bytes: the envelope's key id slot


@dataclass(frozen=True)
class UnlockedKeys:
    """What the owner's reading side holds: the index root key, and either every owner key pair (newest last:
    what a passphrase opens) or ``unwrap``, a key service that unwraps DEKs for it (``streams.kms``: then no
    owner private key is here at all). ``keyring(store)`` opens the store's DEKs either way."""

    index_key: bytes = field(repr=False)
    owners: tuple[OwnerKeyPair, ...] = field(default=(), repr=False)
    unwrap: Any = field(default=None, repr=False)  # ``unwrap_dek(WrappedKey record) -> DataKey`` (a key service)
    cache_ttl_s: float = 300.0  # how long the keyring keeps an unwrapped DEK
    cache_size: int = 10_000  # and how many at most

    @property
    def owner(self) -> OwnerKeyPair:
        if not self.owners:
            raise KeystoreError("no owner private key in this process: a key service holds it")
        return self.owners[-1]

    def unwrappers(self) -> dict[str, Unwrapper]:
        """Unwrapper per owner-key fingerprint (none when a key service holds the keys)."""
        return {pair.public_key.fingerprint: pair.unwrapper() for pair in self.owners}

    @property
    def dek_unwrap(self) -> Any:
        """What unwraps stored DEKs: the key service's ``unwrap``, else the owner key pairs' ``unwrappers()``."""
        return self.unwrap if self.unwrap is not None else self.unwrappers()

    def keyring(self, store: Any) -> Keyring:
        """The keyring over ``store``'s wrapped DEKs (and, with the index key, its subject keys): the one way records
        are opened with the owner's keys."""
        return Keyring(store, self.dek_unwrap, index_key=self.index_key, ttl_s=self.cache_ttl_s,
                       max_keys=self.cache_size)


class Keystore:
    """A keystore file. ``Keystore.load(dir)`` reads it; ``unlock(passphrase)`` opens its secrets."""

    def __init__(self, path: Path, doc: dict) -> None:
        self.path = path
        self._doc = doc

    # -- reading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, data_dir: Path | str) -> "Keystore":
        path = Path(data_dir) / FILENAME
        if not path.exists():
            raise KeystoreError(f"no keystore in {Path(data_dir)}: run `meterseal keys init`")
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise KeystoreError(f"keystore {path} is unreadable: {exc}") from exc
        if doc.get("format") != FORMAT:
            raise KeystoreError(f"keystore {path} has format {doc.get('format')}, this meterseal reads {FORMAT}")
        return cls(path, doc)

    @staticmethod
    def exists(data_dir: Path | str) -> bool:
        return (Path(data_dir) / FILENAME).exists()

    @property
    def kms(self) -> dict | None:
        """The key service holding this keystore's keys (``uri``, ``provider``, its keys by alias), or None for
        a passphrase keystore. A service keystore holds no private key and no passphrase-sealed secret."""
        return self._doc.get("kms")

    def _passphrase_keystore(self, what: str) -> None:
        if self.kms is not None:
            raise KeystoreError(f"{what} needs a passphrase keystore; the keys of {self.path} are in the key service "
                                f"{self.kms['uri']} (no passphrase opens them)")

    @property
    def index_wrap(self) -> dict:
        """A service keystore's wrapped index key (``key_id``, ``scheme``, ``owner_fingerprint``, ``wrapped``)."""
        entry = dict(self._doc["index_key"])
        return {**entry, "wrapped": _unb64(entry["wrapped"])}

    def ledger_entry(self, slot: str) -> dict | None:
        """The ``ledger`` or ``ledger_pq`` entry as stored (name, public key; in a service keystore also the
        service's key name and the version that signs)."""
        return self._doc.get(slot)

    @property
    def owner_public(self) -> OwnerPublicKey:
        """The active owner public key (no passphrase needed: workers wrap DEKs with it)."""
        self._passphrase_keystore("an owner public key")
        entry = self._doc["owners"][-1]
        return OwnerPublicKey(entry["scheme"], _unb64(entry["public"]))

    def describe(self) -> dict:
        return {
            "path": str(self.path),
            "kms": self.kms,
            "created_at": self._doc["created_at"],
            "owners": [
                {"scheme": o["scheme"], "fingerprint": OwnerPublicKey(o["scheme"], _unb64(o["public"])).fingerprint,
                 "created_at": o["created_at"], "active": i == len(self._doc["owners"]) - 1}
                for i, o in enumerate(self._doc["owners"])
            ],
            "regions": [
                {"region": r, "scheme": e["scheme"],
                 "fingerprint": OwnerPublicKey(e["scheme"], _unb64(e["public"])).fingerprint, "created_at": e["created_at"]}
                for r, e in sorted(self._doc.get("regions", {}).items())
            ],
        }

    def _kek(self, passphrase: str) -> DataKey:
        self._passphrase_keystore("unlocking with a passphrase")
        if not passphrase:
            raise KeystoreError("no passphrase: set METERSEAL_PASSPHRASE or enter it when asked")
        kdf = self._doc["kdf"]
        secret = _primitives.scrypt_kek(passphrase.encode(), _unb64(kdf["salt"]), n=kdf["n"], r=kdf["r"], p=kdf["p"])
        return DataKey(_KEK_ID, secret)

    def index_key(self, passphrase: str) -> bytes:
        """Only the index root key: what a worker needs besides the public owner key."""
        try:
            return open_with({_KEK_ID: self._kek(passphrase)}, _unb64(self._doc["index_key"]), aad=b"index_key")
        except InvalidEnvelope:
            raise KeystoreError(f"wrong passphrase for {self.path} (or the keystore was altered)") from None

    @property
    def ledger_verifier(self) -> Verifier:
        """The public key that verifies ledger checkpoints (no passphrase needed)."""
        entry = self._doc["ledger"]
        return Verifier(entry["name"], _unb64(entry["public"]))

    @property
    def ledger_pq_verifier(self) -> Verifier | None:
        """The post-quantum (ML-DSA-65) checkpoint verifier key, if this keystore has one."""
        entry = self._doc.get("ledger_pq")
        return Verifier(entry["name"], _unb64(entry["public"]), "ml-dsa-65") if entry else None

    @property
    def ledger_verifiers(self) -> list[Verifier]:
        """Every checkpoint verifier key: Ed25519, and ML-DSA-65 when the keystore has it."""
        return [self.ledger_verifier] + ([self.ledger_pq_verifier] if self.ledger_pq_verifier else [])

    def ledger_signer(self, passphrase: str) -> Signer:
        """The ledger's Ed25519 signer, with the ML-DSA-65 key as its co-signer when the keystore has one (every
        checkpoint then carries both signatures)."""
        kek = self._kek(passphrase)
        signers = []
        for slot, scheme in (("ledger", "ed25519"), ("ledger_pq", "ml-dsa-65")):
            entry = self._doc.get(slot)
            if entry is None:
                continue
            try:
                private = open_with({_KEK_ID: kek}, _unb64(entry["private"]),
                                    aad=slot.encode() + b":" + entry["public"].encode())
            except InvalidEnvelope:
                raise KeystoreError(f"wrong passphrase for {self.path} (or the keystore was altered)") from None
            signer = Signer(entry["name"], private, scheme)
            if signer.verifier != Verifier(entry["name"], _unb64(entry["public"]), scheme):
                raise KeystoreError(f"the {slot} key in {self.path} does not match its public key")
            signers.append(signer)
        return signers[0].with_cosigners(*signers[1:])

    def add_ledger_pq(self, passphrase: str) -> Verifier:
        """Give a keystore made before post-quantum checkpoints its ML-DSA-65 ledger key."""
        self.ledger_signer(passphrase)  # proves the passphrase before anything changes
        if "ledger_pq" not in self._doc:
            self._put_ledger_pq(self._kek(passphrase))
            self._save()
        return self.ledger_pq_verifier

    def _put_ledger_pq(self, kek: DataKey) -> None:
        signer = Signer.generate("meterseal-ledger-mldsa65", "ml-dsa-65")
        public = _b64(signer.verifier.public)
        self._doc["ledger_pq"] = {"name": signer.name, "scheme": "ml-dsa-65", "public": public,
                                  "private": _b64(seal(kek, signer.private, aad=b"ledger_pq:" + public.encode()))}

    def unlock(self, passphrase: str) -> UnlockedKeys:
        kek = self._kek(passphrase)
        try:
            index_key = open_with({_KEK_ID: kek}, _unb64(self._doc["index_key"]), aad=b"index_key")
            owners = tuple(
                OwnerKeyPair(o["scheme"], open_with({_KEK_ID: kek}, _unb64(o["private"]), aad=b"owner:" + o["public"].encode()),
                             _unb64(o["public"]))
                for o in self._doc["owners"]
            )
        except InvalidEnvelope:
            raise KeystoreError(f"wrong passphrase for {self.path} (or the keystore was altered)") from None
        return UnlockedKeys(index_key, owners)

    # -- region keys (streams.keys.regions) --------------------------------------------------------
    @property
    def region_names(self) -> list[str]:
        return sorted(self._doc.get("regions", {}))

    def region_publics(self, index_key: bytes) -> dict[str, OwnerPublicKey]:
        """Each region's public key, checked against its MAC (a key derived from the index key): a worker
        wraps DEKs only for region keys the owner added, never for one slipped into the file."""
        from streams.keys.regions import registry_mac

        out = {}
        for region, entry in self._doc.get("regions", {}).items():
            public = OwnerPublicKey(entry["scheme"], _unb64(entry["public"]))
            if not hmac.compare_digest(registry_mac(index_key, region, public.scheme, public.public),
                                       str(entry.get("mac", ""))):
                raise KeystoreError(f"region key {region!r} in {self.path} fails its check: it was not added with "
                                    "`meterseal keys region add` under this keystore's passphrase (or was altered)")
            out[region] = public
        return out

    def region_key(self, passphrase: str, region: str):
        """The owner's copy of a region's key pair (``regions.RegionKey``)."""
        from streams.keys.regions import RegionKey

        entry = self._doc.get("regions", {}).get(region)
        if entry is None:
            raise KeystoreError(f"no key for region {region!r}: run `meterseal keys region add {region}`")
        try:
            private = open_with({_KEK_ID: self._kek(passphrase)}, _unb64(entry["private"]),
                                aad=b"region:" + region.encode() + b":" + entry["public"].encode())
        except InvalidEnvelope:
            raise KeystoreError(f"wrong passphrase for {self.path} (or the keystore was altered)") from None
        return RegionKey(region, OwnerKeyPair(entry["scheme"], private, _unb64(entry["public"])))

    def add_region(self, passphrase: str, region: str, *, scheme: str | None = None, replace: bool = False,
                   now: float | None = None):
        """Make a key pair for ``region``; the keystore keeps its public key (MACed) and the private key
        sealed for the owner. Returns the ``RegionKey`` (for the region's key file)."""
        from streams.keys.regions import RegionKey, registry_mac

        keys = self.unlock(passphrase)  # proves the passphrase before anything changes
        regions = self._doc.setdefault("regions", {})
        if region in regions and not replace:
            raise KeystoreError(f"region {region!r} already has a key (use --replace to make a new one; "
                                "grants made for the old key stop opening)")
        key = RegionKey.generate(region, scheme or self.owner_public.scheme)
        public = _b64(key.pair.public)
        regions[region] = {
            "scheme": key.pair.scheme, "public": public, "created_at": time.time() if now is None else now,
            "mac": registry_mac(keys.index_key, region, key.pair.scheme, key.pair.public),
            "private": _b64(seal(self._kek(passphrase), key.pair.private,
                                 aad=b"region:" + region.encode() + b":" + public.encode())),
        }
        self._save()
        return key

    # -- writing ---------------------------------------------------------------------------
    @classmethod
    def init(cls, data_dir: Path | str, passphrase: str, *, scheme: str = RSA, force: bool = False,
             now: float | None = None) -> "Keystore":
        data_dir = Path(data_dir)
        path = data_dir / FILENAME
        if path.exists() and not force:
            raise KeystoreError(f"a keystore already exists at {path}; records sealed for it would become "
                                "unreadable if it were replaced (use --force only on purpose)")
        if not passphrase:
            raise KeystoreError("no passphrase: set METERSEAL_PASSPHRASE or enter it when asked")
        doc = {"format": FORMAT, "created_at": time.time() if now is None else now,
               "kdf": {"name": "scrypt", "salt": _b64(os.urandom(16)), **_SCRYPT}, "owners": []}
        store = cls(path, doc)
        kek = store._kek(passphrase)
        doc["index_key"] = _b64(seal(kek, os.urandom(32), aad=b"index_key"))
        signer = Signer.generate("meterseal-ledger")
        public = _b64(signer.verifier.public)
        doc["ledger"] = {"name": signer.name, "public": public,
                         "private": _b64(seal(kek, signer.private, aad=b"ledger:" + public.encode()))}
        store._put_ledger_pq(kek)
        store._add_owner(kek, OwnerKeyPair.generate(scheme), now)
        store._save()
        return store

    @classmethod
    def init_kms(cls, data_dir: Path | str, *, kms: dict, index_key: dict, ledger: dict, ledger_pq: dict | None = None,
                 regions: dict | None = None, force: bool = False, now: float | None = None) -> "Keystore":
        """A keystore whose keys a key service holds (``streams.kms.access.init_kms``): ``kms`` names the service
        and its keys, ``index_key`` is the index key wrapped there (``wrapped`` as bytes), ``ledger``/``ledger_pq``
        the checkpoint keys' note names, public keys and service names. No secret of any kind is written."""
        data_dir = Path(data_dir)
        path = data_dir / FILENAME
        if path.exists() and not force:
            raise KeystoreError(f"a keystore already exists at {path}; records sealed for it would become "
                                "unreadable if it were replaced (use --force only on purpose)")
        doc = {"format": FORMAT, "created_at": time.time() if now is None else now, "kms": kms, "owners": [],
               "index_key": {**index_key, "wrapped": _b64(index_key["wrapped"])},
               "ledger": {**ledger, "public": _b64(ledger["public"])}}
        if ledger_pq is not None:
            doc["ledger_pq"] = {**ledger_pq, "scheme": "ml-dsa-65", "public": _b64(ledger_pq["public"])}
        if regions:
            doc["regions"] = regions
        store = cls(path, doc)
        store._save()
        return store

    def region_entries(self) -> dict[str, dict]:
        """Each region's entry as stored (public key, MAC; its private key sealed for the owner)."""
        return {r: dict(e) for r, e in self._doc.get("regions", {}).items()}

    def put_region_entry(self, region: str, entry: dict) -> None:
        """Keep a region's entry as given (a service keystore seals the private key with the service)."""
        self._doc.setdefault("regions", {})[region] = entry
        self._save()

    def rotate_owner(self, passphrase: str, *, scheme: str | None = None, now: float | None = None) -> OwnerPublicKey:
        """Add a new active owner key pair; older pairs stay so older DEKs still unwrap."""
        self.unlock(passphrase)  # proves the passphrase before anything changes
        self._add_owner(self._kek(passphrase), OwnerKeyPair.generate(scheme or self.owner_public.scheme), now)
        self._save()
        return self.owner_public

    def _add_owner(self, kek: DataKey, pair: OwnerKeyPair, now: float | None) -> None:
        public = _b64(pair.public)
        self._doc["owners"].append({
            "scheme": pair.scheme, "public": public, "created_at": time.time() if now is None else now,
            "private": _b64(seal(kek, pair.private, aad=b"owner:" + public.encode())),
        })

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self._doc, fh, indent=2)
        os.replace(tmp, self.path)
