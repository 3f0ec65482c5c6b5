"""One contract suite, every store backend (River's ``yield_checks`` habit): the local segment store and
Iceberg on SeaweedFS + PostgreSQL (``objectstore``) pass the same tests — write, dedup, search parity with
the seed CSV, snapshot reads during writes, replay (rebuild) and ledger audits."""

from __future__ import annotations

from streams import capabilities
from streams.store.migrate import carry_keys

import datetime as dt
import json
import random
import threading

import pytest

import schemas
from streams.keys.keystore import Keystore
from streams.pipeline import Pipeline
from streams.seal import Source
from streams.settings import Settings
from streams.store.base import connect, open_store
from streams.store.audit import audit_store
from streams.store.query import Query, Reader

from ...conftest import SEED_CSV

BACKENDS = ["local", pytest.param("s3", marks=pytest.mark.objectstore)]


@pytest.fixture(params=BACKENDS)
def location(request, tmp_path):
    if request.param == "local":
        return tmp_path / "store"
    return request.getfixturevalue("s3_location")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    data = tmp_path_factory.mktemp("contract-keys")
    keystore = Keystore.init(data, "pw")
    return data, keystore, keystore.unlock("pw"), keystore.ledger_signer("pw")


def pipeline_for(location, keys, tmp_path, **settings):
    data, keystore, unlocked, signer = keys
    work = tmp_path / f"work-{random.getrandbits(32):08x}"
    store = open_store(location, work_dir=work / "store")
    s = Settings.from_env({}, data_dir=work, **settings)
    return Pipeline(s, unlocked.index_key, keystore.owner_public, store, signer)


def sealed_bills(pipeline, rows):
    """Seed rows sealed into ``bills.sealed`` messages (partition, offset, value) and the wrapped DEKs."""
    out: dict[int, list] = {}
    for i, row in enumerate(rows):
        sealed = pipeline.seal_bill(json.dumps(row).encode(), Source("bills.raw", i % 4, i))
        out.setdefault(i % 4, []).append((i % 4, i, sealed.encode()))
    return out, [schemas.encode("wrapped_key", w) for _, w in pipeline.take_new_keys()]


def load(pipeline, messages, wrapped_keys) -> int:
    for value in wrapped_keys:
        pipeline.store_key(value, 0)
    written = sum(pipeline.store_batch("bills.sealed", msgs)[0] for msgs in messages.values())
    pipeline.checkpoint_due(force=True)
    return written


@pytest.fixture(scope="module")
def seed_rows():
    from streams.ingest.sources import read_bills_csv

    return list(read_bills_csv(SEED_CSV))


def test_append_is_idempotent_by_record_id_across_writers(location, keys, tmp_path, seed_rows):
    first = pipeline_for(location, keys, tmp_path)
    messages, wrapped = sealed_bills(first, seed_rows[:120])
    assert load(first, messages, wrapped) == 120
    assert load(first, messages, wrapped) == 0  # redelivered: nothing new
    second = pipeline_for(location, keys, tmp_path)  # another process, same store
    assert load(second, messages, wrapped) == 0
    con = connect(second.store)
    assert con.execute("SELECT count(*), count(DISTINCT record_id) FROM bills").fetchone() == (120, 120)
    rows = second.store.rows("bills", 1)
    assert [r["leaf_index"] for r in rows] == list(range(30))
    assert second.store.find("bills", rows[7]["record_id"]) == rows[7]
    assert second.store.find("bills", "no-such-record") is None
    assert second.store.max_leaf("bills", 1) == 29
    assert sorted(second.store.partitions("bills")) == [0, 1, 2, 3]
    assert [k for k in second.store.dek_ids()] == sorted(w["key_id"] for w in map(lambda v: schemas.decode("wrapped_key", v), wrapped))


def test_search_parity_with_the_seed_csv(location, keys, tmp_path, seed_rows):
    pipeline = pipeline_for(location, keys, tmp_path, dek_max_records=250)
    load(pipeline, *sealed_bills(pipeline, seed_rows))
    reader = Reader(pipeline.store, keys[2])
    days = sorted({r["Date"] for r in seed_rows})
    for day in days[::7]:
        want = sorted(r["Bill No."] for r in seed_rows if r["Date"] == day)
        hits = reader.search(Query(date=dt.date.fromisoformat(day)), kinds=["bills"])
        assert sorted(reader.open(h)["Bill No."] for h in hits) == want, day
    rng = random.Random(4)
    for _ in range(10):
        a = dt.date(2019, 11, 1) + dt.timedelta(days=rng.randint(0, 1900))
        b = a + dt.timedelta(days=rng.choice([0, 7, 45, 400]))
        want = sorted(r["Bill No."] for r in seed_rows if a.isoformat() <= r["Date"] <= b.isoformat())
        got = [h["Bill No."] for h in reader.open_hits(reader.search(Query(start=a, end=b), kinds=["bills"]))]
        assert sorted(got) == want, (a, b)
    r = seed_rows[17]
    assert [reader.open(h)["Bill No."] for h in reader.search(Query(meter=r["Meter No."]), kinds=["bills"])] == [r["Bill No."]]
    con = reader.connect()  # SQL and unseal() over the same tables
    total = con.execute("SELECT count(*) FROM bills_open WHERE plain->>'Bill No.' IS NOT NULL").fetchone()[0]
    assert total == len(seed_rows)


def test_a_reader_sees_whole_commits_while_a_writer_appends(location, keys, tmp_path, seed_rows):
    pipeline = pipeline_for(location, keys, tmp_path)
    messages, wrapped = sealed_bills(pipeline, seed_rows[:200])
    load(pipeline, {0: messages[0][:10]}, wrapped)  # 10 rows
    batches = [messages[0][10:], messages[1], messages[2], messages[3]]  # 40, 50, 50, 50 rows
    seen: list[int] = []

    def write():
        for batch in batches:
            pipeline.store_batch("bills.sealed", batch)

    writer = threading.Thread(target=write)
    writer.start()
    while writer.is_alive():
        seen.append(connect(location if isinstance(location, str) else pipeline.store).execute(
            "SELECT count(*) FROM bills").fetchone()[0])
    writer.join()
    seen.append(connect(pipeline.store).execute("SELECT count(*) FROM bills").fetchone()[0])
    assert set(seen) <= {10, 50, 100, 150, 200}, seen  # never half a commit
    assert seen == sorted(seen) and seen[-1] == 200


def test_replay_into_a_fresh_store_rebuilds_the_same_ledger(location, keys, tmp_path, seed_rows, request):
    """Rebuild = replaying the sealed topics through the sink: same rows, same leaves, same roots."""
    first = pipeline_for(tmp_path / "original", keys, tmp_path)
    messages, wrapped = sealed_bills(first, seed_rows[:300])
    load(first, messages, wrapped)
    carry_keys(first.store, open_store(location, work_dir=tmp_path / "carry"))  # subject keys are on no topic
    rebuilt = pipeline_for(location, keys, tmp_path)
    assert load(rebuilt, messages, wrapped) == 300
    assert load(rebuilt, messages, wrapped) == 0
    verifier = keys[1].ledger_verifier
    want = audit_store(first.store, verifier, registry=capabilities.registry())
    got = audit_store(rebuilt.store, verifier, registry=capabilities.registry())
    assert [f for _, fs in got for f in fs] == []
    summary = lambda results: sorted((s.log, s.leaves, s.signed_size) for s, _ in results)  # noqa: E731
    assert summary(got) == summary(want)
    assert sum(s.leaves for s, _ in got if "/subjects/" not in s.log) == 300 + len(wrapped)
    for table, p in rebuilt.store.log_keys():
        assert rebuilt.store.hash_store(table, p).read() == first.store.hash_store(table, p).read()
