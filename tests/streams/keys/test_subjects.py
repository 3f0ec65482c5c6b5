"""The subject-key table: keys made once per subject and epoch, wrapped under the index key, fenced when erased;
the subject log when two writers (or a stopped one) log the same keys."""

from __future__ import annotations

import json

import pytest

from streams import capabilities
from streams.crypto.tokens import BlindIndex
from streams.exceptions import SubjectErased
from streams.keys.subjects import KEYS, LEAVES, Fence, SubjectKeyTable, current_epoch, subject_hash
from streams.store.audit import audit_store
from streams.store.segments import SegmentStore
from tests.streams.erasure.conftest import Rig, reading

INDEX = bytes(range(32))


def test_a_subject_gets_one_key_wrapped_under_the_index_key(tmp_path):
    store = SegmentStore(tmp_path)
    table = SubjectKeyTable(store, INDEX)
    key, made = table.create("tok-a", "account")
    again, made_again = SubjectKeyTable(store, INDEX).create("tok-a", "account")  # a second writer racing
    assert made and not made_again and again == key
    doc = json.loads((tmp_path / KEYS / "tok-a.json").read_text())
    assert key.secret.hex() not in json.dumps(doc) and doc["kind"] == "account"
    with pytest.raises(Exception, match="does not open with this index key"):
        SubjectKeyTable(store, bytes(32)).load("tok-a")
    doc["kind"] = "meter"  # the kind and token are bound to the wrapped key
    (tmp_path / KEYS / "tok-a.json").write_text(json.dumps(doc))
    with pytest.raises(Exception, match="does not open"):
        SubjectKeyTable(store, INDEX).load("tok-a")


def test_the_fence_refuses_an_erased_key_and_moves_the_subject_to_its_next_epoch(tmp_path):
    store = SegmentStore(tmp_path)
    index = BlindIndex(INDEX)
    fence = Fence.load(store.blobs)
    table = SubjectKeyTable(store, INDEX, fence=fence)
    first = current_epoch(index, fence, "meter", "M-1")
    assert first.epoch == 0 and first.token == index.meter("M-1") and first.erased_until == float("-inf")
    key, _ = table.create(first.token, "meter")
    fence.add(first.token, [key.key_id.hex()], erasure_id="e1", at=1000.0)
    with pytest.raises(SubjectErased):
        table.load(first.token)
    with pytest.raises(SubjectErased):
        table.create(first.token, "meter")
    second = current_epoch(index, Fence.load(store.blobs), "meter", "M-1")
    assert second.epoch == 1 and second.token == index.meter("M-1", 1) != first.token and second.erased_until == 1000.0
    assert subject_hash(first.token) in {e.subject_hash for e in Fence.load(store.blobs).entries}
    assert first.token not in (tmp_path / "subjects" / "fence").joinpath(f"{subject_hash(first.token)}.json").read_text()


def test_two_writers_and_a_stopped_one_log_each_subject_key_once(tmp_path):
    one = Rig(tmp_path / "data")
    outcomes = one.ingest([reading("A", 1, account="ACC-A")])  # made and logged by the first writer
    two = Rig(tmp_path / "data")
    two.offset = 100
    table = two.pipeline.subjects.table
    made, _ = table.create(two.pipeline.index.account("ACC-B"), "account")  # made, then the writer stopped
    three = Rig(tmp_path / "data")
    assert three.pipeline.log_new_subjects() == 1  # the next writer logs the stopped one's key (catch-up) ...
    assert two.pipeline.log_new_subjects() == 0  # ... once: the second writer finds it logged
    # a writer stopped between a leaf's row and its hash: the next one appends that hash first
    stopped = two.pipeline.index.account("ACC-C")
    table.create(stopped, "account")
    row = table.mark(stopped, 2)
    assert row is not None and (tmp_path / "data" / "store" / LEAVES / "0000000002.json").exists()
    table.create(two.pipeline.index.account("ACC-D"), "account")
    four = Rig(tmp_path / "data")
    assert four.pipeline.log_new_subjects() == 1  # ACC-D; ACC-C's hash repaired first
    four.pipeline.checkpoint_due(force=True)
    results = audit_store(four.pipeline.store, four.keystore.ledger_verifiers, registry=capabilities.registry())
    assert [str(f) for _, fs in results for f in fs] == []
    assert {s.log.split("/")[-2]: s.leaves for s, _ in results}["subjects"] == 4
    assert outcomes[0].record["envelope"][0] == 3  # (envelope v3)


def test_a_writer_that_has_not_read_the_fence_yet_cannot_make_an_erased_subject_a_new_key(tmp_path):
    store = SegmentStore(tmp_path)
    worker = SubjectKeyTable(store, INDEX, fence=Fence.load(store.blobs))  # read the fence before the erasure
    key, _ = worker.create("tok-a", "meter")
    eraser = SubjectKeyTable(store, INDEX)
    eraser.fence.add("tok-a", [key.key_id.hex()], erasure_id="e1", at=1000.0)
    eraser.destroy("tok-a")
    with pytest.raises(SubjectErased):
        worker.create("tok-a", "meter")
    assert not (tmp_path / KEYS / "tok-a.json").exists()
