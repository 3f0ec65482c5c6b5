"""The device registry: add, list, revoke as signed leaves of the device log; the worker's incremental view."""

from __future__ import annotations

import json

import pytest

from streams import capabilities
from streams.devices.keys import DeviceError, DeviceKey
from streams.devices.registry import EVENTS, Directory, add_device, list_devices, revoke_device
from streams.store.audit import audit_store

from .conftest import INDEX_KEY


def _add(store, signer, key, meter="m1", **kw):
    return add_device(store, signer=signer, index_key=INDEX_KEY, meter_id=meter, public_key=key.public_key, **kw)


def test_add_list_revoke_are_leaves_the_ledger_audit_checks(store, signer, es256, ed25519):
    first = _add(store, signer, es256, now=1_800_000_000)
    assert _add(store, signer, es256) == first  # the same key again: nothing new
    _add(store, signer, ed25519, meter="m2")
    revoked = revoke_device(store, first.kid, signer=signer, index_key=INDEX_KEY, reason="meter replaced")
    listed = {d.kid: d for d in list_devices(store, index_key=INDEX_KEY)}
    assert listed[first.kid].meter_id == "m1" and not listed[first.kid].active and listed[first.kid].reason == "meter replaced"
    assert listed[ed25519.public_key.kid].active and revoked.revoked_leaf == 2
    (summary, findings), = [r for r in audit_store(store, signer.verifier, registry=capabilities.registry())
                            if r[0].log.endswith("/devices/0")]
    assert summary.leaves == 3 and findings == []
    # the store names no meter in clear: the meter id is sealed in each event's body
    assert not any(b"m1" in store.blobs.get(k) or b"m2" in store.blobs.get(k) for k in store.blobs.list(EVENTS))


def test_one_key_one_meter_and_revocation_is_final(store, signer, es256):
    _add(store, signer, es256)
    with pytest.raises(DeviceError, match="another meter"):
        _add(store, signer, es256, meter="m9")
    revoke_device(store, es256.public_key.kid, signer=signer, index_key=INDEX_KEY)
    with pytest.raises(DeviceError, match="revocation is final"):
        _add(store, signer, es256)
    with pytest.raises(DeviceError, match="already revoked"):
        revoke_device(store, es256.public_key.kid, signer=signer, index_key=INDEX_KEY)
    with pytest.raises(DeviceError, match="no device key"):
        revoke_device(store, "0" * 64, signer=signer, index_key=INDEX_KEY)


def test_a_swapped_key_in_the_registry_is_found_by_ledger_verify(store, signer, es256):
    _add(store, signer, es256)
    key = store.blobs.list(EVENTS)[0]
    doc = json.loads(store.blobs.get(key))
    doc["public_key"] = DeviceKey.generate("ES256").public_key.spki.hex()  # someone swaps meter m1's key
    store.blobs.put(key, json.dumps(doc).encode())
    (_, findings), = [r for r in audit_store(store, signer.verifier, registry=capabilities.registry())
                      if r[0].log.endswith("/devices/0")]
    assert [f.kind for f in findings] == ["modified"]


def test_the_workers_view_reads_only_new_events_and_sees_revocations(store, signer, es256, ed25519):
    clock = [0.0]
    directory = Directory(store, INDEX_KEY, clock=lambda: clock[0])
    assert directory.get(es256.public_key.kid) is None
    _add(store, signer, es256)
    assert directory.get(es256.public_key.kid) is None  # asked again within a second: not re-read
    clock[0] += 1.0
    assert directory.get(es256.public_key.kid).meter_id == "m1"  # an unknown key makes it look again
    revoke_device(store, es256.public_key.kid, signer=signer, index_key=INDEX_KEY)
    _add(store, signer, ed25519, meter="m2")
    assert directory.refresh() == 2 and directory.refresh() == 0
    assert not directory.get(es256.public_key.kid).active and len(directory) == 2


def test_an_unreadable_registry_keeps_the_last_view(store, signer, es256):
    errors = []
    directory = Directory(store, INDEX_KEY, on_error=errors.append)
    _add(store, signer, es256)
    directory.refresh()
    store.blobs.put(f"{EVENTS}0000000001.json", b"{not json")
    assert directory.refresh() == 0 and errors and directory.get(es256.public_key.kid) is not None
