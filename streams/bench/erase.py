"""``meterseal bench erase``: erasing one meter from a store of many sealed readings, local and on S3.

The store is built through the worker's own code (``Pipeline``: envelope v3 under per-customer subject keys,
segments of a worker's size, every reading a ledger leaf, the subject log), without a broker. Then one meter is
erased as ``meterseal subject erase`` does it (``streams.erasure.job.erase``), timed stage by stage, with the
bytes of the segments it rewrote, and the ledger is audited afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import schemas
from streams import capabilities
from streams.erasure.job import Owner, erase
from streams.keys.keystore import Keystore
from streams.pipeline import Pipeline
from streams.seal import Sealed, Source
from streams.settings import Settings
from streams.store.audit import audit_store
from streams.store.base import open_store

PASSPHRASE = "bench-erase"
SEGMENT_ROWS = 2000  # METERSEAL_STORE_BATCH: what a worker writes in one segment


def build(data: Path, location: Any, n: int, meters: int, *, partitions: int = 4,
          progress: Callable[[str], None] = lambda _: None) -> tuple[Keystore, Pipeline, float]:
    """``n`` readings of ``meters`` meters (each its own account), every 15 minutes, sealed and stored by a
    ``Pipeline``; returns the keystore, the pipeline and the seconds it took."""
    keystore = Keystore.init(data, PASSPHRASE)
    settings = Settings.from_env({}, data_dir=data, regions="north", partitions=partitions, dek_max_records=1_000_000,
                                 dek_max_age_s=1e9, checkpoint_leaves=10**9, checkpoint_s=1e9)
    store = open_store(location, work_dir=data / "work")
    pipeline = Pipeline(settings, keystore.index_key(PASSPHRASE), keystore.owner_public, store,
                        keystore.ledger_signer(PASSPHRASE), clock=lambda: 1.8e9)
    start = time.perf_counter()
    base = 1_577_836_800  # 2020-01-01
    pending: dict[int, list[tuple[int, dict[str, Any]]]] = {p: [] for p in range(partitions)}
    offsets = [0] * partitions
    done = 0
    for first in range(0, n, 10_000):
        raw, sources = [], []
        for i in range(first, min(n, first + 10_000)):
            m = i % meters
            ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + 900 * (i // meters)))
            raw.append(json.dumps({"meter_id": f"ERASE-{m:05d}", "ts": ts, "kwh": 0.25 + (i % 7) / 10,
                                   "register_kwh": float(i // meters), "region": "north", "category": "Domestic",
                                   "account_id": f"ACC-{m:05d}"}).encode())
            sources.append(Source("readings.raw", m % partitions, 0))
        for data_, src, outcome in zip(raw, sources, pipeline.sealer.readings(raw, sources)):
            if type(outcome) is not Sealed:
                raise RuntimeError(f"bench reading refused: {outcome.record['reason']}")
            p = src.partition
            pending[p].append((offsets[p], outcome.record))
            offsets[p] += 1
            if len(pending[p]) >= SEGMENT_ROWS:
                done += pipeline.store_sealed("readings", p, pending[p])
                pending[p] = []
        for _, wrapped in pipeline.take_new_keys():
            pipeline.store_key(schemas.encode("wrapped_key", wrapped), 0)
        if first % 1_000_000 == 0:
            progress(f"  {first:,} sealed, {done:,} stored")
    for p, rows in pending.items():
        done += pipeline.store_sealed("readings", p, rows)
    pipeline.checkpoint_due(force=True)
    return keystore, pipeline, time.perf_counter() - start


def _segment_bytes(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in (root / "readings").rglob("*.parquet")}


def bench_erase(n: int = 10_000_000, meters: int = 1000, *, s3: bool = False, trial: bool = False,
                trial_port: int = 15460, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Build an ``n``-reading store (local, or on S3 with ``s3``), erase one meter, audit the ledger."""
    from streams.bench.objstore import _servers

    base = Path(tempfile.mkdtemp(prefix="meterseal-bench-erase-"))
    with _servers(trial and s3, base, trial_port) if s3 else contextlib.nullcontext():
        location: Any = base / "data" / "store"
        if s3:
            from streams.store.objects import s3_client

            bucket = f"ms-erase-{os.urandom(4).hex()}"
            s3_client().create_bucket(Bucket=bucket)
            location = f"s3://{bucket}/store"
        progress(f"building a {n:,}-reading store of {meters} meters ({'S3' if s3 else 'local'})")
        keystore, pipeline, build_s = build(base / "data", location, n, meters, progress=progress)
        unlocked = keystore.unlock(PASSPHRASE)
        before = {} if s3 else _segment_bytes(pipeline.store.root)
        stages: dict[str, float] = {}
        last = [time.perf_counter()]

        def stage(name: str, detail: str) -> None:
            now = time.perf_counter()
            stages[name] = round(now - last[0], 2)
            last[0] = now
            progress(f"  {name}: {detail} ({stages[name]} s)")

        start = time.perf_counter()
        report = erase(pipeline.store, owner=Owner(unlocked.index_key, unlocked.unwrappers()),
                       signers=[keystore.ledger_signer(PASSPHRASE)], registry=capabilities.registry(), kind="meter",
                       subject_id="ERASE-00007", reason="bench", grace_s=0, data_dir=base / "data", progress=stage)
        erase_s = time.perf_counter() - start
        rewritten = 0
        if not s3:
            after = _segment_bytes(pipeline.store.root)
            rewritten = sum(size for path, (mtime, size) in before.items() if after.get(path, (None,))[0] != mtime)
        start = time.perf_counter()
        results = audit_store(pipeline.store, keystore.ledger_verifiers, registry=capabilities.registry())
        verify_s = time.perf_counter() - start
        problems = [str(f) for _, fs in results for f in fs]
    store_bytes = sum(p.stat().st_size for p in (base / "data").rglob("*") if p.is_file()) if not s3 else None
    return {"readings": n, "meters": meters, "backend": "s3" if s3 else "local", "build_s": round(build_s, 1),
            "erase_s": round(erase_s, 2), "erase_stages_s": stages, "erased_readings": report["records"]["readings"],
            "segment_bytes_rewritten": rewritten, "store_bytes": store_bytes,
            "verify_s": round(verify_s, 1), "verify_problems": problems[:3],
            "redacted_leaves": sum(s.redacted for s, _ in results), "goal_erase_s": 60,
            "note": "one meter (its account: the customer) erased from a store the worker's code built; segments of "
                    f"{SEGMENT_ROWS} readings as a worker writes them, so every segment of the meter's partition "
                    "holds some of its readings and is rewritten; erase_s includes the subject resolution, fence, "
                    "keys, deletes, holders and the erasure log leaf (grace 0 s: no worker to wait for)"}
