import pytest

from ledger import leaf
from ledger.audit import audit
from ledger.exceptions import LedgerError
from ledger.hashing import leaf_hash
from ledger.compact import root
from ledger.log import FileCheckpoints, Log, MemoryCheckpoints
from ledger.note import Signer
from ledger.storage import FileHashStore, MemoryHashStore

SIGNER = Signer.generate("test-ledger")


def hashes(n, start=0):
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(start, start + n)]


def test_position_survives_a_restart(tmp_path):
    store, cps = FileHashStore(tmp_path / "p0.hashes"), FileCheckpoints(tmp_path / "p0")
    log = Log("o", store, cps)
    log.append(hashes(10))
    log.checkpoint(SIGNER)
    log.append(hashes(5, 10))
    again = Log("o", FileHashStore(tmp_path / "p0.hashes"), FileCheckpoints(tmp_path / "p0"))
    assert again.size == 15 and again.root() == root(hashes(15))


def test_a_torn_hash_write_is_cut_back(tmp_path):
    store = FileHashStore(tmp_path / "h")
    store.append(hashes(3))
    with open(tmp_path / "h", "ab") as fh:
        fh.write(b"half a hash")
    assert store.size() == 3 and len(store.read()) == 3
    store.append(hashes(1, 3))
    assert store.read() == hashes(4)


def test_refuses_to_load_hashes_that_contradict_a_checkpoint(tmp_path):
    log = Log("o", FileHashStore(tmp_path / "h"), FileCheckpoints(tmp_path / "c"))
    log.append(hashes(4))
    log.checkpoint(SIGNER)
    data = bytearray((tmp_path / "h").read_bytes())
    data[0] ^= 1
    (tmp_path / "h").write_bytes(bytes(data))
    with pytest.raises(LedgerError, match="do not match the checkpoint"):
        Log("o", FileHashStore(tmp_path / "h"), FileCheckpoints(tmp_path / "c"))
    (tmp_path / "h").write_bytes(b"")
    with pytest.raises(LedgerError, match="signed at 4"):
        Log("o", FileHashStore(tmp_path / "h"), FileCheckpoints(tmp_path / "c"))


def test_checkpoint_policy():
    now = [0.0]
    log = Log("o", MemoryHashStore(), MemoryCheckpoints(), clock=lambda: now[0])
    assert not log.due(every_leaves=3, every_s=10)
    log.append(hashes(2))
    assert not log.due(every_leaves=3, every_s=10)
    now[0] = 10.0
    assert log.due(every_leaves=3, every_s=10)
    log.checkpoint(SIGNER)
    log.append(hashes(3, 2))
    assert log.due(every_leaves=3, every_s=10)


def test_audit_of_a_clean_log_and_its_records():
    rows = [{"leaf_index": i, "record_id": f"r{i}", "envelope": bytes([i])} for i in range(20)]
    hs = [leaf_hash(leaf.encode(r)) for r in rows]
    cps = MemoryCheckpoints()
    log = Log("o", MemoryHashStore(), cps)
    log.append(hs[:12])
    log.checkpoint(SIGNER)
    log.append(hs[12:])
    log.checkpoint(SIGNER)
    summary, findings = audit("o", hs, rows, cps.all(), SIGNER.verifier)
    assert findings == [] and (summary.leaves, summary.checkpoints, summary.signed_size) == (20, 2, 20)
    # a checkpoint of another log is not accepted for this one
    _, findings = audit("other", hs, rows, cps.all(), SIGNER.verifier)
    assert {f.kind for f in findings} == {"checkpoint-origin"}
