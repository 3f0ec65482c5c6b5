"""The capability registry: every log a store can hold is registered by the capability that writes it."""

from __future__ import annotations

import ast
from pathlib import Path

from streams import capabilities
from streams.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


def test_every_capability_registers_once_and_the_registry_is_fresh_each_time():
    first, second = capabilities.registry(), capabilities.registry()
    assert first is not second
    assert {log.table for log in first.logs} >= {"readings", "bills", "deks", "consent", "models", "privacy"}


def test_every_registration_module_is_installed():
    """A capability's ``registration.py`` that ``streams.capabilities`` does not call would be forgotten by the
    audit and by erasure: each one must be imported there."""
    installed = ast.parse((ROOT / "streams" / "capabilities.py").read_text())
    imported = {f"{node.module}.{alias.name}" if node.module else alias.name
                for node in ast.walk(installed) if isinstance(node, ast.ImportFrom) for alias in node.names}
    found = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts)
                   for package in ("streams", "fl", "agents", "ledger") for p in (ROOT / package).rglob("registration.py"))
    assert found and [m for m in found if m not in imported] == []


def test_a_log_no_capability_registered_is_a_finding(tmp_path):
    from ledger.note import Signer

    from streams.store.audit import audit_store
    from streams.store.segments import SegmentStore

    store = SegmentStore(tmp_path / "store")
    store.hash_store("notes", 0).append([bytes(32)])
    signer = Signer.generate("meterseal-ledger")
    (summary, findings), = audit_store(store, signer.verifier, registry=Registry())
    assert [f.kind for f in findings] == ["unregistered"] and summary.leaves == 1
