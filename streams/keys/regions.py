"""Region keys: a capability that opens one region's records and nothing else.

Who holds which key (README, "Trust model"):

- the **owner** holds the keystore: owner private keys (open everything), the index key, the ledger
  key, and a copy of every region's private key (sealed under the owner's passphrase);
- a **worker** holds the index key and *public* keys only: the owner's and each region's;
- a **region** (its Flower SuperNode) holds its region key file, sealed under its own passphrase,
  and nothing else — no owner key, no index key;
- the store, the broker and the Flower server hold no key at all.

It works because a data-encryption key (DEK) never spans regions: the worker keeps one DEK ring per
region (``Pipeline``), wraps each DEK for the owner as always, and — when the region has a key —
also for the region: a *grant*, kept in ``<store>/grants/<region>/<key id>.json``. A region's keyring
(``RegionKeyring``) unwraps only grants made for its key, so it opens its region's records and cannot
open another's; a row relabelled with another region fails its AEAD check (the region is bound into
the associated data). ``grant_existing`` lets the owner grant DEKs made before the region had a key
(or re-make grants after ``store rebuild``), refusing any DEK that also sealed another region's records.

Region public keys in the keystore carry a MAC under a key derived from the index key, so a worker
never wraps DEKs for a region key someone slipped into ``keystore.json``.

>>> key = RegionKey.generate("north")
>>> key.region, key.public_key.scheme
('north', 'rsa_oaep_3072_sha256')
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.crypto import _primitives
from streams.crypto.envelope import DataKey, SubjectKey, open_with, seal
from streams.exceptions import InvalidEnvelope, KeystoreError
from streams.keys.cache import KeyCache
from streams.keys.owner import RSA, OwnerKeyPair, OwnerPublicKey
from streams.keys.subjects import region_subject_key
from streams.keys.passfile import SCRYPT as _SCRYPT, b64 as _b64, unb64 as _unb64  # the keystore's cost and encoding
from streams.store.segments import REGION_NAME, SegmentStore

FILE_FORMAT = 1
_FILE_KEK_ID = b"meterseal-region"  # 16 bytes: the envelope's key id slot


def check_region_name(region: str) -> str:
    if not isinstance(region, str) or not REGION_NAME.fullmatch(region):
        raise KeystoreError(f"bad region name {region!r}: letters, digits, '-' and '_' only (at most 64)")
    return region


@dataclass(frozen=True)
class RegionKey:
    """A region's key pair (same schemes as the owner's)."""

    region: str
    pair: OwnerKeyPair = field(repr=False)

    @classmethod
    def generate(cls, region: str, scheme: str = RSA) -> "RegionKey":
        return cls(check_region_name(region), OwnerKeyPair.generate(scheme))

    @property
    def public_key(self) -> OwnerPublicKey:
        return self.pair.public_key

    @property
    def fingerprint(self) -> str:
        return self.public_key.fingerprint

    def save(self, path: Path | str, passphrase: str) -> Path:
        """Write the region key file (private key sealed under ``passphrase`` with scrypt), mode 0600."""
        if not passphrase:
            raise KeystoreError("no region passphrase: set METERSEAL_REGION_PASSPHRASE or enter it when asked")
        salt = os.urandom(16)
        kek = DataKey(_FILE_KEK_ID, _primitives.scrypt_kek(passphrase.encode(), salt, **_SCRYPT))
        public = _b64(self.pair.public)
        doc = {"format": FILE_FORMAT, "kind": "meterseal region key", "region": self.region, "scheme": self.pair.scheme,
               "public": public, "kdf": {"name": "scrypt", "salt": _b64(salt), **_SCRYPT},
               "private": _b64(seal(kek, self.pair.private, aad=self._aad(public)))}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2)
        os.replace(path.with_suffix(".tmp"), path)
        return path

    @classmethod
    def load(cls, path: Path | str, passphrase: str) -> "RegionKey":
        """Read a region key file; a wrong passphrase or an altered file is a ``KeystoreError``."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise KeystoreError(f"region key file {path} is unreadable: {exc}") from exc
        if doc.get("format") != FILE_FORMAT or doc.get("kind") != "meterseal region key":
            raise KeystoreError(f"{path} is not a meterseal region key file")
        if not passphrase:
            raise KeystoreError("no region passphrase: set METERSEAL_REGION_PASSPHRASE or enter it when asked")
        kdf = doc["kdf"]
        kek = DataKey(_FILE_KEK_ID, _primitives.scrypt_kek(passphrase.encode(), _unb64(kdf["salt"]), n=kdf["n"], r=kdf["r"],
                                                       p=kdf["p"]))
        region = check_region_name(doc["region"])
        try:
            private = open_with({_FILE_KEK_ID: kek}, _unb64(doc["private"]), aad=cls._aad_for(region, doc["public"]))
        except InvalidEnvelope:
            raise KeystoreError(f"wrong passphrase for region key file {path} (or the file was altered)") from None
        return cls(region, OwnerKeyPair(doc["scheme"], private, _unb64(doc["public"])))

    def _aad(self, public_b64: str) -> bytes:
        return self._aad_for(self.region, public_b64)

    @staticmethod
    def _aad_for(region: str, public_b64: str) -> bytes:
        return f"meterseal/region-key/v1|{region}|{public_b64}".encode()


def registry_mac(index_key: bytes, region: str, scheme: str, public: bytes) -> str:
    """The MAC a region's public key carries in the keystore (key derived from the index key)."""
    key = _primitives.hkdf_sha256(index_key, info=b"meterseal/region-registry/v1")
    return _primitives.hmac_sha256(key, b"|".join([region.encode(), scheme.encode(), public])).hex()


def _grant_context(key_id: bytes, region: str) -> bytes:
    """The DEK's id *and* the region are bound into a grant's wrap."""
    return b"meterseal/dek-grant/v1|" + region.encode() + b"|" + key_id


def wrap_for_region(public: OwnerPublicKey, region: str, dek: DataKey) -> dict[str, Any]:
    """A grant record: ``dek`` wrapped for ``region``'s public key."""
    if public.scheme == RSA:
        wrapped = _primitives.rsa_wrap(public.public, dek.secret, _grant_context(dek.key_id, region))
    else:
        wrapped = _primitives.hpke_wrap(public.public, dek.secret, _grant_context(dek.key_id, region))
    return {"key_id": dek.key_hex, "region": region, "scheme": public.scheme, "region_fingerprint": public.fingerprint,
            "wrapped": wrapped, "created_at_ms": int(dek.created_at * 1000)}


class RegionKeyring:
    """``keyring(key_id) -> DataKey`` from the grants made for one region key; ``KeyError`` otherwise.

    It reads only ``<store>/grants/<its region>/``: a DEK of another region has no grant there, and a
    grant copied there from elsewhere does not unwrap (the region is bound into the wrap). Unwrapped keys are
    cached like the owner's keyring's (``KeyCache``: ``ttl_s``, ``max_keys``).
    """

    def __init__(self, store: SegmentStore, key: RegionKey, *, ttl_s: float = 300.0, max_keys: int = 10_000) -> None:
        self.region = key.region
        self._store, self._key = store, key
        self._private = (_primitives.rsa_private(key.pair.private) if key.pair.scheme == RSA
                         else _primitives.hpke_private(key.pair.private))
        self._cache = KeyCache(ttl_s, max_keys, time.monotonic)  # key id -> DataKey
        self._subject_cache = KeyCache(ttl_s, max_keys, time.monotonic)  # (token, subject key id) -> SubjectKey

    def __call__(self, key_id: bytes) -> DataKey:
        dek = self._cache.get(key_id)
        if dek is None:
            grant = self._store.get_grant(self.region, key_id.hex())
            if grant is None or grant["region_fingerprint"] != self._key.fingerprint:
                raise KeyError(key_id.hex())
            context = _grant_context(key_id, self.region)
            try:
                if self._key.pair.scheme == RSA:
                    secret = _primitives.rsa_unwrap(self._private, grant["wrapped"], context)
                else:
                    secret = _primitives.hpke_unwrap(self._private, grant["wrapped"], context)
            except Exception:  # noqa: BLE001 - each backend raises its own type: not ours to open
                raise KeyError(key_id.hex()) from None
            dek = DataKey(key_id, secret, grant["created_at_ms"] / 1000)
            self._cache.put(key_id, dek)
        return dek

    def subject_key(self, token: str, key_id: bytes) -> SubjectKey:
        """A subject key granted to this region (version-3 records need it besides their DEK); ``KeyError``
        otherwise — never granted, or erased."""
        found = self._subject_cache.get((token, key_id))
        if found is None:
            def unwrap(wrapped: bytes, context: bytes) -> bytes:
                try:
                    if self._key.pair.scheme == RSA:
                        return _primitives.rsa_unwrap(self._private, wrapped, context)
                    return _primitives.hpke_unwrap(self._private, wrapped, context)
                except Exception:  # noqa: BLE001 - each backend raises its own type
                    raise KeyError(key_id.hex()) from None

            found = region_subject_key(self._store, self.region, token, key_id, unwrap, self._key.fingerprint)
            self._subject_cache.put((token, key_id), found)
        return found


def region_key_ids(store_dir: Path | str | Any) -> dict[str, set[str]]:
    """DEK id -> the regions whose records it sealed (readings and bills), from the store's clear columns
    (``store_dir``: a directory, ``s3://...`` or a ``streams.store.base.Store``)."""
    from streams.store.base import connect

    con = connect(store_dir)
    try:
        rows = con.execute("SELECT key_id, coalesce(region, '') FROM readings GROUP BY ALL "
                           "UNION SELECT key_id, coalesce(region, '') FROM bills GROUP BY ALL").fetchall()
    finally:
        con.close()
    out: dict[str, set[str]] = {}
    for key_id, region in rows:
        out.setdefault(key_id, set()).add(region)
    return out


def grant_existing(store_dir: Path | str | Any, owner_keyring, key: RegionKey) -> tuple[int, list[str]]:
    """Owner side: grant ``key`` every stored DEK that sealed records of its region only.

    Returns (grants written, key ids refused because they also sealed another region's records —
    stores written before DEKs were kept per region). ``owner_keyring`` unwraps with the owner key.
    """
    from streams.store.base import open_store

    store = open_store(store_dir, create=False)
    written, refused = 0, []
    for key_id, regions in sorted(region_key_ids(store).items()):
        if key.region not in regions:
            continue
        if regions != {key.region}:
            refused.append(key_id)
            continue
        existing = store.get_grant(key.region, key_id)
        if existing is not None and existing["region_fingerprint"] == key.fingerprint:
            continue
        dek = owner_keyring(bytes.fromhex(key_id))
        store.put_grant(wrap_for_region(key.public_key, key.region, dek), replace=True)
        written += 1
    table = owner_keyring.subject_table() if hasattr(owner_keyring, "subject_table") else None
    if table is not None:  # version-3 records: the region's subjects' keys too
        for token in sorted(region_subjects(store, key.region)):
            subject = table.load(token)
            if subject is not None:
                table.grant_region(token, subject, key.region, key.public_key)
    return written, refused


def region_subjects(store: Any, region: str) -> set[str]:
    """Tokens of the subjects with records in ``region`` (their account's where a record names one, else their
    meter's)."""
    from streams.store.base import connect

    con = connect(store)
    try:
        rows = con.execute("SELECT DISTINCT coalesce(account_tok, meter_tok) FROM readings WHERE region = ? UNION "
                           "SELECT DISTINCT coalesce(account_tok, meter_tok) FROM bills WHERE region = ?",
                           [region, region]).fetchall()
    finally:
        con.close()
    return {r[0] for r in rows}

