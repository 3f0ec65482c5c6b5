"""Privacy budgets that survive restarts: per analyst *and* per data set, kept in the store and in a ledger log.

zCDP losses add up under composition, so a budget is a total rho. Analysts may collude, so every data set
has its own total too: a release is allowed only if it fits under the analyst's *and* the data set's
remaining budget. A data set without a budget set by the owner gets the settings' default
(``METERSEAL_DP_DATASET_RHO``); an analyst without one gets nothing (refused until the owner sets it).

Layout under ``<store>/privacy/``: ``events.jsonl``, one JSON object per line — ``limit`` events (the
owner sets an analyst's or a data set's budget) and ``spend`` events (a release). Each event is also a
leaf of the ledger's **privacy log** (``<store>/ledger/privacy/p000``, signed checkpoints), appended the
way ``fl.provenance`` appends model hashes. Order for a release, under the log's lock: check both
budgets, write the spend (fsync), append its leaf and sign a checkpoint, and only then may the caller
run the mechanism and release. A crash after the spend loses budget, never privacy.

On load the events are checked against the log: a log with more leaves than events (a spend line
deleted to win budget back) or a leaf that does not match its event refuses every query (fail closed);
an event whose leaf is missing (a crash between the two writes) gets its leaf appended by the next spend.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger import leaf
from ledger.hashing import leaf_hash
from ledger.log import FileCheckpoints, Log
from ledger.note import Signer
from ledger.storage import FileHashStore
from streams.store.segments import SegmentStore, log_origin

from .dp import BudgetExceeded, DPError

LOG = ("privacy", 0)
NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
SLACK = 1e-12  # float summation slack when comparing spent + cost with a budget


class BudgetLogError(DPError):
    """The budget events and their ledger log disagree: every query is refused until the owner looks."""


@dataclass
class BudgetState:
    """Budgets and spends replayed from the events (nothing else is kept)."""

    analysts: dict[str, float] = field(default_factory=dict)
    datasets: dict[str, float] = field(default_factory=dict)
    spent_analyst: dict[str, float] = field(default_factory=dict)
    spent_dataset: dict[str, float] = field(default_factory=dict)
    releases: dict[str, int] = field(default_factory=dict)
    events: int = 0

    def dataset_budget(self, dataset: str, default: float) -> float:
        return self.datasets.get(dataset, default)

    def remaining(self, *, analyst: str, dataset: str, default_dataset_rho: float) -> tuple[float, float]:
        """(analyst's remaining rho, data set's remaining rho)."""
        return (self.analysts.get(analyst, 0.0) - self.spent_analyst.get(analyst, 0.0),
                self.dataset_budget(dataset, default_dataset_rho) - self.spent_dataset.get(dataset, 0.0))


def _dir(store_root: Path) -> Path:
    if str(store_root).startswith("s3:/"):  # Path() would make "s3:/..." a local folder: refuse instead
        raise DPError(f"DP budgets are local files in the data owner's data dir, not in an object store ({store_root}): "
                      "pass the data dir's store folder (`meterseal dp` does); the readings may still be on s3://")
    return Path(store_root) / "privacy"


def _events_path(store_root: Path) -> Path:
    return _dir(store_root) / "events.jsonl"


def read_events(store_root: Path | str) -> list[dict[str, Any]]:
    """Every whole event line (a torn last line — a crash mid-write, before anything was released — is skipped)."""
    path = _events_path(Path(store_root))
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        lines.pop()  # no newline at the end: torn write
    try:
        return [json.loads(line) for line in lines]
    except ValueError:
        raise BudgetLogError(f"{path}: a budget event line is not JSON; restore it from backup "
                             "(queries are refused until then)") from None


def _hashes(store_root: Path) -> FileHashStore:
    _dir(store_root)
    return FileHashStore(SegmentStore(store_root).hash_path(*LOG))


def load(store_root: Path | str) -> BudgetState:
    """Replay the events into budgets and spends, after checking them against the privacy log."""
    store_root = Path(store_root)
    events = read_events(store_root)
    stored = _hashes(store_root).read()
    if len(stored) > len(events):
        raise BudgetLogError(f"the privacy log has {len(stored)} leaves but only {len(events)} budget events are in "
                             f"{_events_path(store_root)}: events were removed; queries are refused")
    for i, h in enumerate(stored):
        if leaf_hash(leaf.encode_privacy_event(events[i])) != h:
            raise BudgetLogError(f"budget event {i} does not match its leaf in the privacy log: it was altered; "
                                 "queries are refused")
    state = BudgetState(events=len(events))
    for e in events:
        rho = float(e["rho"])
        if e["event"] == "limit":
            (state.analysts if e["analyst"] else state.datasets)[e["analyst"] or e["dataset"]] = rho
        elif e["event"] == "spend":
            state.spent_analyst[e["analyst"]] = math.fsum([state.spent_analyst.get(e["analyst"], 0.0), rho])
            state.spent_dataset[e["dataset"]] = math.fsum([state.spent_dataset.get(e["dataset"], 0.0), rho])
            state.releases[e["analyst"]] = state.releases.get(e["analyst"], 0) + 1
    return state


def _check_name(kind: str, name: str) -> str:
    if not NAME.fullmatch(name or ""):
        raise DPError(f"{kind} name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-'")
    return name


def _append(store_root: Path, signer: Signer, event: dict[str, Any]) -> dict[str, Any]:
    """Write one event durably, then its leaf (catching up leaves a crash left out), then a checkpoint.
    Called under the log's lock."""
    store = SegmentStore(store_root)
    log = Log(log_origin(signer.verifier.key_hash.hex(), *LOG), FileHashStore(store.hash_path(*LOG)),
              FileCheckpoints(store.checkpoint_dir(*LOG)))
    events = read_events(store_root)
    event = {**event, "leaf_index": len(events)}
    path = _events_path(store_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.read_bytes() if path.exists() else b""
    if data and not data.endswith(b"\n"):  # cut a torn last line (a crash mid-write) back before appending
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)
    with open(path, "ab") as fh:
        fh.write(json.dumps(event, sort_keys=True, separators=(",", ":")).encode() + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(path.parent)
    events.append(event)
    missing = events[log.size:]
    log.append([leaf_hash(leaf.encode_privacy_event(e)) for e in missing])
    log.checkpoint(signer)
    return event


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def set_budget(store_root: Path | str, signer: Signer, *, rho: float, analyst: str | None = None,
               dataset: str | None = None, clock=time.time) -> dict[str, Any]:
    """The owner sets an analyst's or a data set's total budget (rho, zCDP). Spends so far still count."""
    if (analyst is None) == (dataset is None):
        raise DPError("set a budget for either --analyst or --dataset")
    if not (math.isfinite(rho) and rho >= 0):
        raise DPError("--rho must be a number >= 0")
    event = {"event": "limit", "analyst": _check_name("analyst", analyst) if analyst else "",
             "dataset": _check_name("dataset", dataset) if dataset else "", "rho": float(rho), "query": "",
             "created_at_ms": int(clock() * 1000)}
    store_root = Path(store_root)
    _dir(store_root)  # refuses s3:// before the lock file is made
    with SegmentStore(store_root).locked(*LOG):
        load(store_root)  # refuse to build on a log that does not check out
        return _append(store_root, signer, event)


def _check(state: BudgetState, *, analyst: str, dataset: str, rho: float, default_dataset_rho: float) -> None:
    """``BudgetExceeded`` unless ``rho`` fits under the analyst's and the data set's remaining budget."""
    left_analyst, left_dataset = state.remaining(analyst=analyst, dataset=dataset,
                                                 default_dataset_rho=default_dataset_rho)
    if analyst not in state.analysts:
        raise BudgetExceeded(f"analyst {analyst!r} has no privacy budget: the data owner sets one with "
                             f"`meterseal dp budget set --analyst {analyst} --rho R`; nothing was released")
    if rho > left_analyst + SLACK:
        raise BudgetExceeded(f"analyst {analyst!r} has rho {max(left_analyst, 0):.6g} left of "
                             f"{state.analysts[analyst]:.6g}; this query needs {rho:.6g}. Nothing was released")
    if rho > left_dataset + SLACK:
        raise BudgetExceeded(f"data set {dataset!r} has rho {max(left_dataset, 0):.6g} left of "
                             f"{state.dataset_budget(dataset, default_dataset_rho):.6g} (all analysts together); "
                             f"this query needs {rho:.6g}. Nothing was released")


def check(store_root: Path | str, *, analyst: str, dataset: str, rho: float, default_dataset_rho: float) -> BudgetState:
    """``BudgetExceeded`` if a release of ``rho`` would not fit now (``spend`` checks again under the lock)."""
    state = load(store_root)
    _check(state, analyst=analyst, dataset=dataset, rho=rho, default_dataset_rho=default_dataset_rho)
    return state


def spend(store_root: Path | str, signer: Signer, *, analyst: str, dataset: str, rho: float, query: dict[str, Any],
          default_dataset_rho: float, clock=time.time) -> tuple[dict[str, Any], BudgetState]:
    """Record a release's cost before it happens; ``BudgetExceeded`` (nothing written) if it does not fit.
    Returns the spend event and the state after it."""
    _check_name("analyst", analyst)
    store_root = Path(store_root)
    _dir(store_root)  # refuses s3:// before the lock file is made
    with SegmentStore(store_root).locked(*LOG):
        state = load(store_root)
        _check(state, analyst=analyst, dataset=dataset, rho=rho, default_dataset_rho=default_dataset_rho)
        event = _append(store_root, signer, {
            "event": "spend", "analyst": analyst, "dataset": _check_name("dataset", dataset), "rho": float(rho),
            "query": json.dumps(query, sort_keys=True, separators=(",", ":")), "created_at_ms": int(clock() * 1000)})
        return event, load(store_root)
