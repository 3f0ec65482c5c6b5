"""`meterseal store retention set` and `store enforce-retention` from the command line: old readings deleted, the
DEK they used destroyed, and with --purge-keys-topic its wrapped copy deleted from keys.deks (a tombstone on the
embedded broker, which a rebuild or a restarted worker reads as nothing to store)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import schemas
from streams.cli.main import main
from streams.ingest.broker import EmbeddedBroker, Producer, consume, ensure_topics
from streams.seal import Source
from tests.streams.erasure.conftest import PASS, Rig, reading
from tests.streams.erasure.test_retention import JAN_2024

pytestmark = pytest.mark.broker


def test_enforce_retention_deletes_old_rows_and_purges_the_destroyed_deks_from_the_keys_topic(tmp_path, monkeypatch):
    rig = Rig(tmp_path / "data")
    rig.now = JAN_2024 + 86400
    states = {}
    for m in range(4):
        rig.pipeline.seal_reading(reading("A", m, day=20), Source("readings.raw", 0, m), states)
    wrapped = [w for _, w in rig.pipeline.take_new_keys()]
    rig.ingest([reading("A", m, day=20) for m in range(4)])
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    try:
        ensure_topics(broker.bootstrap, 2)
        producer = Producer(broker.bootstrap)  # what the worker published when it made the DEK
        for w in wrapped:
            producer.send("keys.deks", schemas.encode("wrapped_key", w), w["key_id"].encode())
        producer.close()
        monkeypatch.setenv("METERSEAL_PASSPHRASE", PASS)
        monkeypatch.setenv("METERSEAL_BROKER", broker.url)
        runner, data = CliRunner(), ["--data-dir", str(rig.data)]
        kept = runner.invoke(main, [*data, "store", "retention", "set", "--kind", "readings", "--keep", "P1Y"])
        assert kept.exit_code == 0, kept.output
        done = runner.invoke(main, [*data, "store", "enforce-retention", "--purge-keys-topic", "--format", "json"])
        assert done.exit_code == 0, done.output
        report = json.loads(done.output[done.output.index("{"):])
        assert report["deleted"]["readings"] == 4 and report["destroyed_deks"] == [w["key_id"] for w in wrapped]
        last, seen = {}, 0
        for msg in consume(broker.bootstrap, "keys.deks", idle=2.0):
            last[msg.key()], seen = msg.value(), seen + 1
        print(f"keys.deks holds {seen} message(s) for {len(last)} key(s)")  # (Tansu: not compacted yet)
        assert last == {w["key_id"].encode(): None for w in wrapped}  # compaction keeps only the tombstone
        assert not rig.new_pipeline().store_key(None, 0)  # and a reader of the topic stores nothing for it
    finally:
        broker.stop()


def test_purging_the_keys_topic_without_a_broker_is_refused_before_anything_is_deleted(tmp_path, monkeypatch):
    rig = Rig(tmp_path / "data")
    rig.now = JAN_2024 + 86400
    rig.ingest([reading("A", m, day=20) for m in range(4)])
    monkeypatch.setenv("METERSEAL_PASSPHRASE", PASS)
    monkeypatch.delenv("METERSEAL_BROKER", raising=False)
    runner, data = CliRunner(), ["--data-dir", str(rig.data)]
    assert runner.invoke(main, [*data, "store", "retention", "set", "--kind", "readings", "--keep", "P1Y"]).exit_code == 0
    refused = runner.invoke(main, [*data, "store", "enforce-retention", "--purge-keys-topic"])
    assert refused.exit_code != 0 and "no broker" in refused.output
    store = rig.new_pipeline().store
    assert sum(len(store.rows("readings", p)) for p in range(2)) == 4  # nothing deleted
