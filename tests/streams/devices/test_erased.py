"""A signed reading of an erased customer that the device check refuses keeps nothing of it in its dead letter."""

from __future__ import annotations

import json

from streams import capabilities
from streams.crypto.envelope import open_with
from streams.devices import signed
from streams.devices.keys import DeviceKey
from streams.devices.registry import add_device
from streams.erasure.job import Owner, erase
from streams.keys.keyring import Keyring
from streams.pipeline import BatchState
from streams.seal import Source, dlq_aad

from tests.streams.erasure.conftest import Rig, reading


def test_a_refused_signed_reading_of_an_erased_meter_is_an_erased_dead_letter_holding_nothing(tmp_path):
    rig = Rig(tmp_path / "data")
    key = DeviceKey.generate("Ed25519")
    add_device(rig.pipeline.store, signer=rig.signer, index_key=rig.keys.index_key, meter_id="A", public_key=key.public_key)
    rig.ingest([reading("A", m) for m in range(3)])
    erase(rig.pipeline.store, owner=Owner(rig.keys.index_key, rig.keys.unwrappers()), signers=[rig.signer],
          registry=capabilities.registry(), grace_s=0, data_dir=rig.data, kind="meter", subject_id="A")
    rig.pipeline.refresh_erasures()
    old = json.loads(reading("A", 1))
    forged = signed.encode(signed.Signed(json.dumps({**old, "device_seq": 1}).encode(), "Ed25519", key.public_key.kid,
                                         b"\x00" * 64))  # a bad signature: refused before the Sealer sees it
    replayed = signed.sign_reading(old, key, seq=1)  # a good one, timed before the erasure: the Sealer refuses it
    out = rig.pipeline.seal_messages([forged, replayed], [Source("readings.raw", 0, 900 + i) for i in range(2)],
                                     lambda t: None, windows=BatchState(rig.pipeline.windows, {}), keys=[b"A", b"A"])
    keyring = Keyring(rig.pipeline.store, rig.keys.unwrappers(), index_key=rig.keys.index_key)
    for (dead,) in out:
        assert dead.record["rule"] == "erased", dead.record["reason"]
        assert open_with(keyring, dead.record["envelope"], aad=dlq_aad(dead.record["dlq_id"])) == b""
