"""Continuous shares on the embedded broker with a real worker: readings arrive, the scope holds (another
meter's readings never appear), and a revoked grant stops delivering within 10 s."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from streams.ingest.broker import Producer, consume
from streams.ingest.produce import encode_reading
from streams.keys.keystore import Keystore
from streams.share.continuous import open_message, topic_of
from streams.share.espi import parse_feed, raw_readings
from streams.share.grants import create_grant, revoke_grant
from streams.share.parties import PartyKey, add_party

from .conftest import DATA
from .rig import PASSPHRASE, running_rig

pytestmark = pytest.mark.broker
FEED = DATA / "vectors" / "greenbutton" / "test_usage_data.xml"


def test_continuous_share_delivers_the_scope_and_stops_on_revoke(tmp_path):
    with running_rig(tmp_path / "data") as rig:
        store = rig.data_dir / "store"
        keystore = Keystore.load(rig.data_dir)
        signer, index_key = keystore.ledger_signer(PASSPHRASE), rig.keys.index_key
        party_key = PartyKey.generate()
        key_path, _ = party_key.save(tmp_path / "party", "party-pw")
        party = add_party(store, "acme", party_key.public_key)
        grant = create_grant(store, signer=signer, index_key=index_key, party=party, meters=["GB-X"],
                             start="2012-03-01", end="2012-03-15")
        # the sample Green Button feed, ingested through the CLI for two meters: only GB-X is granted
        for meter in ("GB-X", "GB-Y"):
            done = rig.cli("ingest", "greenbutton", str(FEED), "--meter-id", meter, "--region", "north")
            assert done.returncode == 0, done.stderr
        follow = subprocess.run(
            [sys.executable, "-m", "streams.cli", "share", "follow", grant.grant_id, "--key", str(key_path),
             "--max-records", "1340", "--idle", "60"], env={**rig.env, "METERSEAL_PARTY_PASSPHRASE": "party-pw"},
            capture_output=True, text=True, timeout=240)
        assert follow.returncode == 0, follow.stderr
        got = [json.loads(line) for line in follow.stdout.splitlines()]
        want = parse_feed(FEED.read_bytes(), meter_id="GB-X")
        assert len(got) == 1340 and {g["meter_id"] for g in got} == {"GB-X"}
        assert sorted(round(g["kwh"] * 1000) for g in got) == sorted(w["wh"] for w in want)

        # keep redelivering GB-X's readings (each is sealed again, so the tap sees it) across the revocation
        raws = raw_readings(want, region="north")
        stop = threading.Event()

        def redeliver() -> None:
            producer = Producer(rig.broker.bootstrap)
            while not stop.is_set():
                for raw in raws[:200]:
                    producer.send("readings.raw", encode_reading(raw), key=b"GB-X")
                producer.flush()
                time.sleep(0.5)
            producer.close()

        thread = threading.Thread(target=redeliver, daemon=True)
        thread.start()
        time.sleep(5)
        revoked_at = time.time()
        revoke_grant(store, grant.grant_id, signer=signer, index_key=index_key)
        time.sleep(15)
        stop.set()
        thread.join(30)
        stamps = []
        for msg in consume(rig.broker.bootstrap, topic_of(grant.grant_id), idle=3.0):
            records = open_message(msg.value(), party=party_key, grant_id=grant.grant_id)
            assert {r["meter_id"] for r in records} == {"GB-X"}
            stamps.append(msg.timestamp()[1] / 1000)
        assert any(revoked_at - 5 < s < revoked_at for s in stamps), "redeliveries before the revocation were shared"
        late = [s - revoked_at for s in stamps if s > revoked_at]
        print(f"{len(stamps)} share messages; the last {max(late, default=0.0):.1f} s after the revocation")
        assert not late or max(late) <= 10.0, f"delivered {max(late):.1f} s after the revocation"
        assert rig.cli("ledger", "verify").returncode == 0
