"""What the rollups keep, registered with the capability registry (``streams.registry``).

Per-meter rollup rows (``rollup_meter``) summarize one meter's readings: a data subject's consumption, tokenized
by meter and account like the readings, so erasure deletes them by meter token and by account token. Region
cells (``rollup_region``) are aggregates over at least ``METERSEAL_ROLLUP_MIN_METERS`` meters as readers see
them and name no meter: not subject data. The partition states' open cells (sealed under the index key) hold
at most the last hours and day of each meter and are rewritten at every store write; an erasure that runs
while workers hold open cells of the subject's meter finds their rows once they close: run it again after
``METERSEAL_ROLLUP_GRACE_S`` (the holder is idempotent), or stop the workers and run ``store rollup rebuild``.
"""

from __future__ import annotations

from streams.registry import ErasureContext, Registry, Subject, SubjectHolder


def erase_rollups(context: ErasureContext, subject: Subject) -> int:
    store = context.store
    deleted = 0
    if subject.meter_toks:
        deleted += store.delete_rows("rollup_meter", "meter_tok", subject.meter_toks)
    if subject.account_toks:
        deleted += store.delete_rows("rollup_meter", "account_tok", subject.account_toks)
    return deleted


def register(registry: Registry) -> None:
    registry.add_holder(SubjectHolder("rollups", "per-meter hourly and daily rollups (rollup_meter) of the subject's "
                                      "meters and accounts", erase_rollups))
