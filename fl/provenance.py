"""Provenance of global models: every version saved with its SHA-256 and metrics, the hash a leaf of the
ledger's model log (``store/ledger/models/p000``), under signed checkpoints like every other log.

Layout under ``<store>/models/<run id>/``: ``round-NNN.weights`` (the weights, ``weights_bytes``),
``round-NNN.json`` (the provenance row: hash, run, round, strategy, metrics, leaf index),
``history.json`` and ``metrics.png``. ``meterseal ledger verify`` re-hashes every row and weights file.

>>> import numpy as np
>>> blob = weights_bytes([np.ones((2, 3), np.float32), np.zeros(3, np.float32)])
>>> [w.shape for w in weights_from(blob)]
[(2, 3), (3,)]
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ledger import leaf
from ledger.hashing import leaf_hash
from ledger.log import Log
from ledger.note import Signer
from streams.store.base import Store
from streams.store.segments import log_origin

_MAGIC = b"MSWEIGHTS1\n"


def weights_bytes(weights: list[np.ndarray]) -> bytes:
    """A deterministic byte form of a model's weights: a JSON header of shapes, then float32 data."""
    arrays = [np.ascontiguousarray(w, dtype=np.float32) for w in weights]
    header = json.dumps([list(a.shape) for a in arrays]).encode()
    return _MAGIC + len(header).to_bytes(4, "big") + header + b"".join(a.tobytes() for a in arrays)


def weights_from(blob: bytes) -> list[np.ndarray]:
    if not blob.startswith(_MAGIC):
        raise ValueError("not a meterseal weights file")
    n = int.from_bytes(blob[len(_MAGIC):len(_MAGIC) + 4], "big")
    at = len(_MAGIC) + 4
    shapes, at = json.loads(blob[at:at + n]), at + n
    out = []
    for shape in shapes:
        size = int(np.prod(shape)) * 4
        out.append(np.frombuffer(blob[at:at + size], np.float32).reshape(shape))
        at += size
    return out


def model_row(blob: bytes, *, run_id: str, round_: int, strategy: str, metrics: dict[str, Any],
              created_at_ms: int) -> dict[str, Any]:
    return {"model_sha256": hashlib.sha256(blob).hexdigest(), "run_id": run_id, "round": round_, "strategy": strategy,
            "metrics": json.dumps(metrics, sort_keys=True, separators=(",", ":")), "created_at_ms": created_at_ms}


def run_dir(store: Store, run_id: str) -> Path:
    """This machine's folder of a run (history.json, metrics.png): under the local store, or the data dir's."""
    return store.root / "models" / run_id


def record_model(store: Store, signer: Signer, weights: list[np.ndarray], *, run_id: str, round_: int,
                 strategy: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """Save one global model version (store objects ``models/<run>/round-NNN.*``: files locally, S3 objects
    on ``s3://``) and append its hash to the model log (signed checkpoint); returns the row."""
    blob = weights_bytes(weights)
    row = model_row(blob, run_id=run_id, round_=round_, strategy=strategy, metrics=metrics,
                    created_at_ms=int(time.time() * 1000))
    run_dir(store, run_id).mkdir(parents=True, exist_ok=True)  # the run's local history and plot go here
    prefix = f"models/{run_id}/round-{round_:03d}"
    store.blobs.put(prefix + ".weights", blob)
    with store.locked("models", 0):
        log = Log(log_origin(signer.verifier.key_hash.hex(), "models", 0), store.hash_store("models", 0),
                  store.checkpoint_store("models", 0))
        row["leaf_index"] = log.size
        store.blobs.put(prefix + ".json", json.dumps(row, indent=2).encode())
        log.append([leaf_hash(leaf.encode_model_event(row))])
        log.checkpoint(signer)
    return row


def model_rows(store: Store) -> list[dict[str, Any]]:
    """Every saved model version's provenance row, by leaf index; ``weights_ok`` says if its weights still hash right."""
    rows = []
    for key in store.blobs.list("models/"):
        name = key.rsplit("/", 1)[-1]
        if key.count("/") != 2 or not (name.startswith("round-") and name.endswith(".json")):
            continue
        row = json.loads(store.blobs.get(key))
        weights = store.blobs.get(key[: -len(".json")] + ".weights")
        row["weights_ok"] = weights is not None and hashlib.sha256(weights).hexdigest() == row["model_sha256"]
        rows.append(row)
    return sorted(rows, key=lambda r: r.get("leaf_index", -1))


EXCLUSIONS = "models/exclusions/"


def record_exclusion(store: Store, *, erasure_id: str, subject_hash: str, at: float) -> bool:
    """Note in the models' provenance that an erased subject is excluded from every model trained from now on (its
    rows are gone from the store the rounds read); models saved before keep what they learned — a trained model
    cannot be untrained, only no longer used. False if noted already (a rerun of the erasure)."""
    doc = {"erasure_id": erasure_id, "subject_hash": subject_hash, "at_ms": int(at * 1000),
           "models_before": len(model_rows(store))}
    return store.blobs.create(f"{EXCLUSIONS}{erasure_id}.json", json.dumps(doc, sort_keys=True).encode())


def exclusions(store: Store) -> list[dict[str, Any]]:
    return [json.loads(store.blobs.get(k)) for k in store.blobs.list(EXCLUSIONS) if k.endswith(".json")]
