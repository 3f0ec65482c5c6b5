"""The DP query engine over the sealed store: the functions the CLI (``meterseal dp``) and the console's
analyst page call. Stable API: ``answer_query``, ``budget_status``, ``set_budget``, ``DPQuery``, ``Bounds``.

Who holds what: the engine runs as the **data owner** (it opens readings with the owner's private keys and
signs the privacy log with the ledger key); an **analyst** only ever receives the noisy rows, their noise
scales and intervals, and what is left of the budget. The exact aggregates never leave ``answer_query``.

Order of a release: plan (OpenDP measurement, its rho from OpenDP's privacy map) → open the range's
readings and bound them → **spend** (both budgets checked, the event fsynced and its ledger leaf signed)
→ run the measurement through an OpenDP privacy filter sized to the remaining budget → return. A refused
query raises ``BudgetExceeded`` before any noise is drawn: nothing is released.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.note import Signer
from streams.keys.keystore import UnlockedKeys
from streams.store.query import Query, Reader

from . import budget as budgets
from . import dp
from .dp import Bounds, BudgetExceeded, DPError, DPQuery  # noqa: F401  (re-exported: the engine's API)

DATASET = "readings"  # the store's readings table: the data set whose budget every reading query draws on
DELTA = 1e-6  # the delta at which the (epsilon, delta) equivalent of rho is shown


@dataclass
class DPAnswer:
    """A released answer: rows (group keys, value, noise scale, 95 % interval) and what it cost."""

    query: DPQuery
    rows: list[dict[str, Any]]
    rho: float  # the cost charged (OpenDP's privacy map of the measurement)
    analyst: str
    dataset: str
    spend_leaf: int
    remaining_analyst: float
    remaining_dataset: float
    noise_scale: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query.describe(), "analyst": self.analyst, "dataset": self.dataset,
                "rho": self.rho, "epsilon_at_delta_1e-6": dp.approx_dp(self.rho, DELTA),
                "sensitivity": dict(zip(("sum_kwh", "count"), dp.sensitivity(self.query))),
                "noise_scale": self.noise_scale, "interval": "95 % (noise only; see bounds)",
                "bounds": (f"kWh per reading clamped to [0, {self.query.bounds.clamp_kwh}]; at most "
                           f"{self.query.bounds.per_hour} readings per meter per hour (earliest kept)"
                           if self.query.bounds.hour_kwh is None else
                           f"each meter's hourly kWh sum clamped to [0, {self.query.bounds.hour_kwh}] (hourly "
                           f"rollups); at most {self.query.bounds.per_hour} readings per meter per hour counted"),
                "privacy_unit": "one meter (all its readings)", "spend_leaf": self.spend_leaf,
                "remaining": {"analyst": self.remaining_analyst, "dataset": self.remaining_dataset},
                "rows": self.rows}


def _columns(records: Any, owner: UnlockedKeys, query: DPQuery) -> dp.Columns:
    """The range's readings, or with ``bounds.hour_kwh`` every meter's hourly rollups over it (no reading is
    opened: one row per meter-hour)."""
    reader = Reader(records, owner)
    if query.bounds.hour_kwh is not None:
        import datetime as dt

        from streams.rollups.read import all_meter_usage
        from streams.store.base import connect

        lo = dt.datetime(query.start.year, query.start.month, query.start.day, tzinfo=dt.timezone.utc)
        hi = lo + dt.timedelta(days=(query.end - query.start).days + 1)
        return dp.Columns.from_hours(all_meter_usage(connect(reader.store), reader._opener(), reader.index, "hour",
                                                     lo, hi))
    hits = reader.search(Query(start=query.start, end=query.end), kinds=["readings"])
    return dp.Columns.from_records(reader.open_many(hits))


def answer_query(store_dir: Path | str, *, owner: UnlockedKeys, signer: Signer, analyst: str, query: DPQuery,
                 rho: float, default_dataset_rho: float, dataset: str = DATASET, records: Any = None) -> DPAnswer:
    """Answer ``query`` for ``analyst`` at privacy cost ``rho`` (zCDP), charging both budgets first.

    The budgets and the privacy log are local files under ``store_dir`` (the owner's data dir); the readings
    are read from ``records`` (a directory, ``s3://...`` or a ``Store``; default ``store_dir``).

    ``owner`` opens the readings (the data owner's keys); ``signer`` signs the privacy log's checkpoint
    (the keystore's ledger key). Raises ``BudgetExceeded`` (nothing released) when either budget is short."""
    store_dir = Path(store_dir)
    plan = dp.plan(query, rho)
    cost = plan.cost
    budgets.check(store_dir, analyst=analyst, dataset=dataset, rho=cost,  # refuse before opening anything
                  default_dataset_rho=default_dataset_rho)
    sums, counts = dp.bounded_aggregates(_columns(store_dir if records is None else records, owner, query), query)
    event, after = budgets.spend(store_dir, signer, analyst=analyst, dataset=dataset, rho=cost,
                                 query=query.describe(), default_dataset_rho=default_dataset_rho)
    rows = dp.release(plan, sums, counts, invoke=_filtered(plan, granted=cost))
    left_analyst, left_dataset = after.remaining(analyst=analyst, dataset=dataset,
                                                 default_dataset_rho=default_dataset_rho)
    scales = {"sum_kwh": plan.sum_scale, "count": plan.count_scale}
    if query.metric != "mean":
        scales = {k: v for k, v in scales.items() if k.startswith(query.metric)}
    return DPAnswer(query, rows, cost, analyst, dataset, event["leaf_index"], left_analyst, left_dataset, scales)


def _filtered(plan: dp.Plan, *, granted: float):
    """Run the measurement through OpenDP's privacy filter (an odometer capped at the budget this release
    was granted), so OpenDP itself refuses a measurement that costs more than was charged."""
    def invoke(measurement, vector):
        o = dp.opendp()
        space = o.vector_domain(o.atom_domain(T=float, nan=False)), o.l2_distance(T=float)
        odometer = o.c.make_fully_adaptive_composition(*space, o.zero_concentrated_divergence())
        queryable = o.c.make_privacy_filter(odometer, d_in=plan.d_in, d_out=granted)(vector)
        try:
            return queryable(measurement)
        except Exception as exc:  # OpenDP's own refusal: nothing was released
            raise BudgetExceeded(f"OpenDP's privacy filter refused the release: {exc}") from None
    return invoke


def set_budget(store_dir: Path | str, *, signer: Signer, rho: float, analyst: str | None = None,
               dataset: str | None = None) -> dict[str, Any]:
    """The data owner sets an analyst's or a data set's total rho (a ledgered event)."""
    return budgets.set_budget(store_dir, signer, rho=rho, analyst=analyst, dataset=dataset)


def budget_status(store_dir: Path | str, *, default_dataset_rho: float, analyst: str | None = None) -> dict[str, Any]:
    """Budgets, spends and what is left, per analyst (or just ``analyst``) and per data set; with the
    (epsilon, delta=1e-6) equivalent of each spent rho. Needs no key."""
    state = budgets.load(store_dir)
    names = [analyst] if analyst else sorted(state.analysts.keys() | state.spent_analyst.keys())

    def entry(budget: float, spent: float, **extra: Any) -> dict[str, Any]:
        return {**extra, "rho_budget": budget, "rho_spent": spent, "rho_left": max(budget - spent, 0.0),
                "epsilon_spent_at_delta_1e-6": dp.approx_dp(spent, DELTA) if spent else 0.0}

    datasets = sorted(state.datasets.keys() | state.spent_dataset.keys() | {DATASET})
    return {
        "analysts": [entry(state.analysts.get(a, 0.0), state.spent_analyst.get(a, 0.0), analyst=a,
                           releases=state.releases.get(a, 0)) for a in names],
        "datasets": [entry(state.dataset_budget(d, default_dataset_rho), state.spent_dataset.get(d, 0.0), dataset=d,
                           default=d not in state.datasets) for d in datasets],
        "events": state.events,
    }

