"""``meterseal bench share``: the size and open time of a one-meter, one-month share bundle on real data.

A fresh store is sealed in-process through the worker's own pipeline (``Pipeline``: per-region DEKs, envelope
v2, ledger leaves, signed Ed25519 + ML-DSA-65 checkpoints) from the UCI household series as a small fleet; one
meter's month is then granted, exported and opened the way a recipient would (every proof, signature and
record checked).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import tempfile
import time
from pathlib import Path


def bench_share(*, meters: int = 2, days: int = 30, interval_min: int = 1) -> dict:
    from streams.ingest.sources import uci_readings
    from streams.keys.keystore import Keystore
    from streams.pipeline import Pipeline
    from streams.seal import Sealed, Source
    from streams.settings import Settings
    from streams.share.bundle import export_bundle, open_bundle
    from streams.share.grants import create_grant
    from streams.share.parties import PartyKey, add_party
    from streams.store.segments import SegmentStore

    per_meter = (days + 1) * 24 * 60  # the series starts mid-day: the bundle takes the next `days` whole days
    with tempfile.TemporaryDirectory(prefix="meterseal-bench-share-") as tmp:
        data = Path(tmp)
        keystore = Keystore.init(data, "bench")
        keys, signer = keystore.unlock("bench"), keystore.ledger_signer("bench")
        settings = Settings.from_env({}, data_dir=data)
        pipeline = Pipeline(settings, keys.index_key, keystore.owner_public, SegmentStore(settings.store_dir), signer)
        readings = _aggregate(uci_readings(meters=meters, limit=meters * per_meter), interval_min)
        started, states, batch, sealed = time.perf_counter(), {}, [], 0
        for i, r in enumerate(readings):
            p = int(r["meter_id"][-5:]) % settings.partitions
            out = pipeline.seal_reading(json.dumps(r).encode(), Source("readings.raw", p, i), states)
            if isinstance(out, Sealed):
                batch.append((p, i, out.encode()))
                sealed += 1
            if len(batch) >= 5000:
                pipeline.store_batch("readings.sealed", batch)
                batch = []
        pipeline.store_batch("readings.sealed", batch)
        pipeline.checkpoint_due(force=True)
        seal_s = time.perf_counter() - started
        meter = readings[0]["meter_id"]
        first = dt.datetime.fromisoformat(readings[0]["ts"]).date() + dt.timedelta(days=1)
        party_key = PartyKey.generate()
        party = add_party(settings.store_dir, "bench", party_key.public_key)
        grant = create_grant(settings.store_dir, signer=signer, index_key=keys.index_key, party=party, meters=[meter],
                             start=first, end=first + dt.timedelta(days=days - 1))
        started = time.perf_counter()
        blob, summary = export_bundle(settings.store_dir, grant.grant_id, owner=keys, signer=signer)
        export_s = time.perf_counter() - started
        timings = {}
        for label, verifiers in (("both_keys", keystore.ledger_verifiers), ("ed25519_only", [keystore.ledger_verifier]),
                                 ("ml_dsa_65_only", [keystore.ledger_pq_verifier])):
            started = time.perf_counter()
            opened = open_bundle(blob, party=party_key, verifiers=verifiers)
            timings[label] = time.perf_counter() - started
        n = len(opened.records)
    return {"store_readings": sealed, "interval_min": interval_min, "seal_s": round(seal_s, 2),
            "bundle_records": n, "bundle_days": days, "bundle_bytes": len(blob),
            "bundle_bytes_per_record": round(len(blob) / n, 1), "bundle_gzip_bytes": len(gzip.compress(blob)),
            "export_s": round(export_s, 2), "open_s": round(timings["both_keys"], 4),
            "open_records_per_s": round(n / timings["both_keys"]),
            "open_s_ed25519_only": round(timings["ed25519_only"], 4),
            "open_s_ml_dsa_65_only": round(timings["ml_dsa_65_only"], 4),
            "note": "UCI household series as a fleet; one meter's month granted; open = every checkpoint signature, "
                    "inclusion proof, record-key commitment, AES-GCM open, scope check and the owner's signature"}


def _aggregate(readings, interval_min: int) -> list[dict]:
    rows = list(readings)
    if interval_min <= 1:
        return rows
    out, acc = [], {}
    for r in rows:
        ts = dt.datetime.fromisoformat(r["ts"].replace("Z", "+00:00"))
        end = ts + dt.timedelta(minutes=(-ts.minute) % interval_min)
        key = (r["meter_id"], end)
        if key in acc:
            acc[key]["kwh"] += r["kwh"]
            acc[key]["register_kwh"] = r["register_kwh"]
        else:
            acc[key] = {**r, "ts": end.isoformat()}
            out.append(acc[key])
    for r in out:
        r["kwh"] = round(r["kwh"], 6)
    return out
