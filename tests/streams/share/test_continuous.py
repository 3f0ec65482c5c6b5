"""Continuous shares without a broker: the pipeline's tap sends in-scope readings only, and stops on revoke."""

from __future__ import annotations

import json

import pytest

from streams.exceptions import ShareError
from streams.pipeline import Pipeline
from streams.seal import Source
from streams.settings import Settings
from streams.share.continuous import open_message, topic_of
from streams.share.grants import create_grant, revoke_grant
from streams.share.parties import PartyKey, add_party
from streams.store.segments import SegmentStore
from tests.streams.share.conftest import make_readings


def test_tap_delivers_the_grant_scope_and_stops_after_revocation(shared_store, party_key, tmp_path):
    _, keystore, keys, signer, _, _ = shared_store
    clock = [1_800_000_000.0]
    settings = Settings.from_env({}, data_dir=tmp_path, dek_max_records=30)
    pipeline = Pipeline(settings, keys.index_key, keystore.owner_public, SegmentStore(settings.store_dir), signer,
                        clock=lambda: clock[0])
    party = add_party(settings.store_dir, "acme", party_key.public_key)
    grant = create_grant(settings.store_dir, signer=signer, index_key=keys.index_key, party=party, meters=["M-A"],
                         start="2024-03-02", end="2024-03-03", now=clock[0])
    readings = make_readings()
    states: dict = {}

    def seal(rows, first):
        for i, r in enumerate(rows):
            pipeline.tap(pipeline.seal_reading(json.dumps(r).encode(), Source("readings.raw", 0, first + i), states))
        return pipeline.take_shares()

    half = len(readings) // 2
    msgs = seal(readings[:half], 0)
    assert [t for t, _, _ in msgs] == [topic_of(grant.grant_id)]
    got = open_message(msgs[0][2], party=party_key, grant_id=grant.grant_id)
    want = [r for r in readings[:half] if r["meter_id"] == "M-A" and "2024-03-02" <= r["ts"][:10] <= "2024-03-03"]
    assert [(g["ts"], g["kwh"]) for g in got] == [(w["ts"], w["kwh"]) for w in want] and len(want) == 48
    assert all(g["opened"] for g in got)
    with pytest.raises(ShareError):
        open_message(msgs[0][2], party=PartyKey.generate(), grant_id=grant.grant_id)
    assert b"M-B" not in msgs[0][2] and b"M-C" not in msgs[0][2]  # nothing of other meters, even sealed

    revoke_grant(settings.store_dir, grant.grant_id, signer=signer, index_key=keys.index_key, now=clock[0])
    clock[0] += 1.0
    assert len(seal(readings[:half], 0)) == 1  # a redelivery, before the tap re-reads the consent log: still sent
    clock[0] += 1.0  # the tap re-reads the consent log every 2 s
    assert seal(readings[:half], 0) == []
