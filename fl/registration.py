"""What federated learning keeps, registered with the capability registry (``streams.registry``): the model log
(each saved global model's provenance row; a row whose weights file is missing or no longer hashes right is a
finding of its own)."""

from __future__ import annotations

from typing import Any

from ledger import leaf as leaf_codec

from fl.provenance import model_rows
from streams.registry import LedgerLog, Registry


def _weights(rows: list[dict[str, Any]]) -> list[tuple[str, str, int | None]]:
    return [("model-weights", f"run {r['run_id']} round {r['round']}: weights file missing or not hashing to "
             f"{r['model_sha256']}", r.get("leaf_index")) for r in rows if not r["weights_ok"]]


def register(registry: Registry) -> None:
    registry.add_log(LedgerLog("models", rows=lambda store, partition: model_rows(store),
                               encode=leaf_codec.encode_model_event, check=_weights))
