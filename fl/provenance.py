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
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ledger import leaf
from ledger.hashing import leaf_hash
from ledger.log import FileCheckpoints, Log
from ledger.note import Signer
from ledger.storage import FileHashStore
from streams.store.segments import SegmentStore, log_origin

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


def run_dir(store: SegmentStore, run_id: str) -> Path:
    return store.root / "models" / run_id


def record_model(store: SegmentStore, signer: Signer, weights: list[np.ndarray], *, run_id: str, round_: int,
                 strategy: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """Save one global model version and append its hash to the model log (signed checkpoint); returns the row."""
    blob = weights_bytes(weights)
    row = model_row(blob, run_id=run_id, round_=round_, strategy=strategy, metrics=metrics,
                    created_at_ms=int(time.time() * 1000))
    directory = run_dir(store, run_id)
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory / f"round-{round_:03d}.weights", blob)
    with store.locked("models", 0):
        log = Log(log_origin(signer.verifier.key_hash.hex(), "models", 0), FileHashStore(store.hash_path("models", 0)),
                  FileCheckpoints(store.checkpoint_dir("models", 0)))
        row["leaf_index"] = log.size
        _write(directory / f"round-{round_:03d}.json", json.dumps(row, indent=2).encode())
        log.append([leaf_hash(leaf.encode_model_event(row))])
        log.checkpoint(signer)
    return row


def model_rows(store: SegmentStore) -> list[dict[str, Any]]:
    """Every saved model version's provenance row, by leaf index; ``weights_ok`` says if its file still hashes right."""
    rows = []
    for path in sorted((store.root / "models").glob("*/round-*.json")):
        row = json.loads(path.read_text())
        weights = path.with_suffix(".weights")
        row["weights_ok"] = weights.exists() and hashlib.sha256(weights.read_bytes()).hexdigest() == row["model_sha256"]
        rows.append(row)
    return sorted(rows, key=lambda r: r.get("leaf_index", -1))


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
