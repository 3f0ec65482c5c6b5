"""Unwrap counts per process: kept in the store, added up per hour, short commands sharing a file, silent
processes' files removed."""

from __future__ import annotations

from streams.kms.usage import KEEP_S, Usage, hourly, process_name
from streams.store.segments import SegmentStore


def test_counts_add_up_per_hour_and_short_commands_share_a_file(tmp_path):
    store, now = SegmentStore(tmp_path), [1_800_000_000.0]
    first = Usage("reader", process="reader@host", clock=lambda: now[0])
    first.attach(store)
    for _ in range(3):
        first.count("dek")
    first.flush()
    second = Usage("reader", process="reader@host", clock=lambda: now[0])  # the next run of the same command
    second.attach(store)
    second.count("index")
    now[0] += 3600
    second.count("dek")
    second.flush()
    worker = Usage("worker", process="worker@host:42", clock=lambda: now[0])
    worker.attach(store)
    worker.count("index")
    rows = hourly(store, now=now[0])
    assert [(r["hour"], r["process"], r["unwraps"]) for r in rows] == [
        ("2027-01-15T09:00Z", "reader@host", 1), ("2027-01-15T09:00Z", "worker@host:42", 1),
        ("2027-01-15T08:00Z", "reader@host", 4)]
    assert first.totals == {"dek": 3} and second.totals == {"index": 1, "dek": 1}  # each process's own, for metrics
    assert hourly(store, now=now[0] + KEEP_S + 7200) == [] and store.blobs.list("kms/usage/") == []


def test_long_running_processes_are_named_by_pid():
    assert process_name("worker").count(":") == 1 and ":" not in process_name("reader")
