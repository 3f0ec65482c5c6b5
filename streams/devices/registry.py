"""The device registry: which public key belongs to which meter, and since when it no longer does.

Event-sourced like the consent log (``streams.share.grants``): registering a key (``add``) and revoking it
(``revoke``) are each a write-once object under ``<store>/devices/events/`` *and* a leaf of the device log
(``devices/p0``) under signed checkpoints, so ``meterseal ledger verify`` covers the registry and no one can
swap a meter's key unseen. An event's clear part is the KEY_ID, the algorithm and the public key (public
anyway); the meter id is sealed (AES-256-GCM under a key derived from the index key), as grants seal theirs:
the store names no meter in clear.

Revocation is final and fails closed: from the moment a worker's registry shows it, every reading signed with
the key is a dead letter (rule ``device``), however old its timestamp claims to be — a compromised key can
claim any time. Workers re-read the registry every ``METERSEAL_DEVICE_REFRESH_S`` seconds, and at once (at most
once a second) when a reading names a key they do not know.

Not a ``SubjectHolder``: a device is hardware. The registry maps a meter's serial number to the key in its secure
element; it holds no consumption and no account, and when the occupant changes the meter (and its key) stays.
Erasing a customer erases their readings, not the utility's record of which key its meter holds.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from ledger import leaf as leaf_codec
from ledger.hashing import leaf_hash
from ledger.log import Log
from ledger.note import Signer

from streams.crypto import _primitives
from streams.crypto.envelope import DataKey, open_with, seal
from streams.devices.keys import DeviceError, DevicePublicKey
from streams.exceptions import InvalidEnvelope
from streams.store.base import Store, open_store
from streams.store.segments import log_origin

LOG_TABLE, LOG_PARTITION = "devices", 0
EVENTS = "devices/events/"
_KEY_ID = b"meterseal-device"  # 16 bytes: the envelope's key id slot


@dataclass(frozen=True)
class Device:
    kid: str
    alg: str
    public_key: DevicePublicKey
    meter_id: str
    added_at: str
    added_leaf: int
    revoked_at: str | None = None
    revoked_leaf: int | None = None
    reason: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        return {"kid": self.kid, "alg": self.alg, "meter_id": self.meter_id, "added_at": self.added_at,
                "added_leaf": self.added_leaf, "revoked_at": self.revoked_at, "revoked_leaf": self.revoked_leaf,
                "reason": self.reason, "state": "active" if self.active else "revoked",
                "public_key": self.public_key.pem()}


def _body_key(index_key: bytes) -> DataKey:
    return DataKey(_KEY_ID, _primitives.hkdf_sha256(index_key, info=b"meterseal/devices/v1"))


def _aad(event: str, kid: str) -> bytes:
    return f"meterseal/devices/v1|{event}|{kid}".encode()


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def device_origin(signer_key_hash_hex: str) -> str:
    return log_origin(signer_key_hash_hex, LOG_TABLE, LOG_PARTITION)


# --- the log ---------------------------------------------------------------------------------------------


def _append(store: Store, signers: Sequence[Signer], index_key: bytes, event: str, key: DevicePublicKey,
            body: dict[str, Any], at: float) -> dict[str, Any]:
    """Seal ``body``, write the event object and append its leaf to the device log, then sign a checkpoint."""
    row = {"event": event, "kid": key.kid, "alg": key.alg, "public_key": key.spki, "at_ms": int(at * 1000),
           "body": seal(_body_key(index_key), json.dumps(body, sort_keys=True).encode(), aad=_aad(event, key.kid))}
    with store.locked(LOG_TABLE, LOG_PARTITION):
        log = Log(device_origin(signers[0].verifier.key_hash.hex()), store.hash_store(LOG_TABLE, LOG_PARTITION),
                  store.checkpoint_store(LOG_TABLE, LOG_PARTITION))
        row["leaf_index"] = log.size
        # under the log's lock an object at this index has no leaf (a crash between the two writes): replace it
        store.blobs.put(f"{EVENTS}{row['leaf_index']:010d}.json", json.dumps(_to_json(row), indent=2).encode())
        log.append([leaf_hash(leaf_codec.encode_device_event(row))])
        log.checkpoint(*signers)
    return row


def _to_json(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "public_key": row["public_key"].hex(), "body": row["body"].hex()}


def _from_json(key: str, data: bytes | None) -> dict[str, Any]:
    try:
        doc = json.loads(data or b"")
        doc["public_key"], doc["body"] = bytes.fromhex(doc["public_key"]), bytes.fromhex(doc["body"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DeviceError(f"device event {key} is unreadable ({exc}): run `meterseal ledger verify`") from exc
    return doc


def device_rows(store_dir: Path | str | Store) -> list[dict[str, Any]]:
    """Every device event as stored, by leaf index: the rows ``ledger verify`` audits."""
    blobs = open_store(store_dir, create=False).blobs
    rows = [_from_json(k, blobs.get(k)) for k in blobs.list(EVENTS) if k.endswith(".json")]
    return sorted(rows, key=lambda r: r.get("leaf_index", -1))


def _apply(devices: dict[str, Device], row: dict[str, Any], key: dict[bytes, DataKey]) -> None:
    try:
        body = json.loads(open_with(key, row["body"], aad=_aad(row["event"], row["kid"])))
    except (InvalidEnvelope, ValueError) as exc:
        raise DeviceError(f"device event at leaf {row.get('leaf_index')} does not open with this index key "
                          "(another keystore, or altered: run `meterseal ledger verify`)") from exc
    if row["event"] == "add":
        public = DevicePublicKey(row["alg"], row["public_key"])
        if public.kid != row["kid"]:
            raise DeviceError(f"device event at leaf {row['leaf_index']}: its key does not hash to its kid")
        devices[row["kid"]] = Device(row["kid"], row["alg"], public, body["meter_id"], _iso(row["at_ms"] / 1000),
                                     row["leaf_index"])
    elif row["event"] == "revoke" and row["kid"] in devices:
        devices[row["kid"]] = replace(devices[row["kid"]], revoked_at=_iso(row["at_ms"] / 1000),
                                      revoked_leaf=row["leaf_index"], reason=body.get("reason") or None)


def _devices(store: Store, index_key: bytes) -> dict[str, Device]:
    key = {_KEY_ID: _body_key(index_key)}
    devices: dict[str, Device] = {}
    for row in device_rows(store):
        _apply(devices, row, key)
    return devices


# --- the API ---------------------------------------------------------------------------------------------


def add_device(store_dir: Path | str | Store, *, signer: Signer | Sequence[Signer], index_key: bytes, meter_id: str,
               public_key: DevicePublicKey, now: float | None = None) -> Device:
    """Register ``public_key`` as meter ``meter_id``'s (a leaf of the device log, signed). Registering the same
    key for the same meter again changes nothing; a key registered for another meter, or revoked, is refused."""
    meter_id = str(meter_id).strip()
    if not meter_id or len(meter_id) > 256:
        raise DeviceError("--meter: a meter id of 1 to 256 characters")
    store = open_store(store_dir, create=False)
    known = _devices(store, index_key).get(public_key.kid)
    if known is not None:
        if known.meter_id != meter_id:
            raise DeviceError(f"key {public_key.kid} is registered for another meter: one key, one device")
        if not known.active:
            raise DeviceError(f"key {public_key.kid} was revoked at {known.revoked_at}: revocation is final, "
                              "give the device a new key")
        return known
    now = time.time() if now is None else now
    signers = list(signer) if isinstance(signer, (list, tuple)) else [signer]
    row = _append(store, signers, index_key, "add", public_key, {"meter_id": meter_id}, now)
    return Device(public_key.kid, public_key.alg, public_key, meter_id, _iso(now), row["leaf_index"])


def revoke_device(store_dir: Path | str | Store, kid: str, *, signer: Signer | Sequence[Signer], index_key: bytes,
                  reason: str = "", now: float | None = None) -> Device:
    """Revoke a device key (a leaf of the device log, signed): readings signed with it are refused from now on."""
    store = open_store(store_dir, create=False)
    device = _devices(store, index_key).get(kid.strip().lower())
    if device is None:
        raise DeviceError(f"no device key {kid}: `meterseal device list` shows them")
    if not device.active:
        raise DeviceError(f"device key {device.kid} was already revoked at {device.revoked_at}")
    now = time.time() if now is None else now
    signers = list(signer) if isinstance(signer, (list, tuple)) else [signer]
    row = _append(store, signers, index_key, "revoke", device.public_key,
                  {"meter_id": device.meter_id, "reason": reason}, now)
    return replace(device, revoked_at=_iso(now), revoked_leaf=row["leaf_index"], reason=reason or None)


def list_devices(store_dir: Path | str | Store, *, index_key: bytes, meter_id: str | None = None) -> list[Device]:
    """Every registered device key, oldest first; ``meter_id``: only that meter's."""
    devices = list(_devices(open_store(store_dir, create=False), index_key).values())
    return [d for d in devices if meter_id is None or d.meter_id == meter_id]


class Directory:
    """A worker's view of the registry: ``get(kid)``, re-read incrementally (only events it has not read yet).

    ``refresh()`` is safe to call from another thread: it builds the new view aside and swaps it in. A registry
    that cannot be read keeps the last view (and says so through ``on_error``)."""

    def __init__(self, store: Store, index_key: bytes, *, clock: Callable[[], float] = time.monotonic,
                 min_interval_s: float = 1.0, on_error: Callable[[Exception], None] = lambda exc: None) -> None:
        self._store, self._key = store, {_KEY_ID: _body_key(index_key)}
        self._clock, self._min_interval_s, self._on_error = clock, min_interval_s, on_error
        self._devices: dict[str, Device] = {}
        self._read: set[str] = set()
        self._last = -float("inf")
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._devices)

    def get(self, kid: str) -> Device | None:
        """The device of ``kid``; an unknown one makes the registry be read again (at most once a
        ``min_interval_s``): a device registered a moment ago is found at its first reading."""
        found = self._devices.get(kid)
        if found is None and self._clock() - self._last >= self._min_interval_s:
            self.refresh()
            found = self._devices.get(kid)
        return found

    def refresh(self) -> int:
        """Read the events added since the last refresh; returns how many."""
        with self._lock:
            self._last = self._clock()
            try:
                blobs = self._store.blobs
                new = sorted(k for k in blobs.list(EVENTS) if k.endswith(".json") and k not in self._read)
                rows = [_from_json(k, blobs.get(k)) for k in new]
                devices = dict(self._devices)
                for row in sorted(rows, key=lambda r: r.get("leaf_index", -1)):
                    _apply(devices, row, self._key)
            except Exception as exc:  # noqa: BLE001 - store trouble: keep serving the last good view
                self._on_error(exc)
                return 0
            self._devices = devices
            self._read.update(new)
            return len(new)
