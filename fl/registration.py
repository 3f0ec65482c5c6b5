"""What federated learning keeps, registered with the capability registry (``streams.registry``): the model log
(each saved global model's provenance row; a row whose weights file is missing or no longer hashes right is a
finding of its own), and a holder that notes in the provenance that an erased subject is excluded from models
trained afterwards (the rounds read the store, where its rows are gone; models saved before cannot be untrained)."""

from __future__ import annotations

from typing import Any

from ledger import leaf as leaf_codec

from fl.provenance import model_rows, record_exclusion
from streams.registry import ErasureContext, LedgerLog, Registry, Subject, SubjectHolder


def _weights(rows: list[dict[str, Any]]) -> list[tuple[str, str, int | None]]:
    return [("model-weights", f"run {r['run_id']} round {r['round']}: weights file missing or not hashing to "
             f"{r['model_sha256']}", r.get("leaf_index")) for r in rows if not r["weights_ok"]]


def _exclude(context: ErasureContext, subject: Subject) -> int:
    return int(record_exclusion(context.store, erasure_id=context.erasure_id, subject_hash=subject.subject_hash,
                                at=context.now))


def register(registry: Registry) -> None:
    registry.add_log(LedgerLog("models", rows=lambda store, partition: model_rows(store),
                               encode=leaf_codec.encode_model_event, check=_weights))
    registry.add_holder(SubjectHolder("federated learning", "models trained from the subject's readings (noted as "
                                      "excluded from later models; earlier ones cannot be untrained)", _exclude))
