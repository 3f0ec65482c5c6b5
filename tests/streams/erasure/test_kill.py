"""An erasure stopped after each stage in turn finishes when run again, and ends where an uninterrupted one does:
stopped in-process at every stage boundary exactly, and SIGKILLed as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from streams import capabilities
from streams.erasure.job import STAGES
from streams.store.audit import audit_store
from streams.store.base import connect
from tests.streams.erasure.conftest import PASS, Rig, reading


def _cli(rig: Rig, *args: str) -> subprocess.Popen:
    env = {**os.environ, "METERSEAL_DATA_DIR": str(rig.data), "METERSEAL_PASSPHRASE": PASS,
           "METERSEAL_ERASURE_GRACE_S": "0", "METERSEAL_REGIONS": "north,south"}
    return subprocess.Popen([sys.executable, "-m", "streams.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_an_erasure_killed_after_each_stage_finishes_when_run_again(rig):
    rig.ingest([reading("A", m, account="ACC-A") for m in range(10)] + [reading("B", m, account="ACC-B") for m in range(10)])
    erase = ("subject", "erase", "--meter", "A", "--yes", "--reason", "gdpr-art17", "--format", "json")
    killed_after, finished = [], None
    for stage in STAGES[:-1]:  # kill right after each stage in turn (the next may have begun: SIGKILL is no pause)
        proc = _cli(rig, *erase)
        for line in proc.stderr:
            if line.startswith(f"erasure: {stage} done"):
                proc.send_signal(signal.SIGKILL)  # no cleanup, nothing flushed
                break
        proc.wait(60)
        job = json.loads(next((rig.data / "store" / "erasures" / "jobs").iterdir()).read_text())
        if proc.returncode == 0:
            finished = proc  # the previous kill landed late enough that this run finished the job
            break
        assert proc.returncode == -signal.SIGKILL and job["status"] == "running"
        assert STAGES.index(job["stages"][-1]) >= STAGES.index(stage)
        killed_after.append(job["stages"][-1])
    assert len(killed_after) >= 2, killed_after  # (how late a SIGKILL lands depends on the machine's load)
    proc = finished or _cli(rig, *erase)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["resumed"] and report["records"]["readings"] == 10 and report["erased"]
    assert "erasure: fence done" not in err  # only what was left ran
    index = rig.pipeline.index
    con = connect(rig.data / "store")
    assert con.execute("SELECT count(*) FROM readings WHERE account_tok = ?", [index.account("ACC-A")]).fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM readings").fetchone()[0] == 10
    results = audit_store(rig.data / "store", rig.keystore.ledger_verifiers, registry=capabilities.registry())
    assert [str(f) for _, fs in results for f in fs] == []
    assert {s.log.split("/")[-2]: s.redacted for s, _ in results}["readings"] == 10
    again = _cli(rig, *erase)
    out, _ = again.communicate(timeout=60)
    assert json.loads(out)["already_erased"]
    job = json.loads(next((rig.data / "store" / "erasures" / "jobs").iterdir()).read_text())
    assert "sealed" not in job and job["status"] == "done"  # the ids and tokens left with the job


class Killed(BaseException):
    """Raised by the progress callback: nothing after it in the job runs, as if the process died there."""


def test_an_erasure_stopped_at_every_stage_boundary_resumes_from_there(rig):
    from streams.erasure.job import Owner, erase

    rig.ingest([reading("A", m, account="ACC-A") for m in range(10)] + [reading("B", m, account="ACC-B") for m in range(10)])

    def run(stop_after: str | None = None) -> dict:
        def progress(stage: str, detail: str) -> None:
            seen.append(stage)
            if stage == stop_after:
                raise Killed(stage)

        return erase(rig.pipeline.store, owner=Owner(rig.keys.index_key, rig.keys.unwrappers()), signers=[rig.signer],
                     registry=capabilities.registry(), kind="meter", subject_id="A", grace_s=0, data_dir=rig.data,
                     progress=progress)

    for stage in STAGES:
        seen: list[str] = []
        try:
            run(stop_after=stage)
        except Killed:
            pass
        assert seen[-1] == stage and [s for s in seen if s != "resume"] == [stage]  # exactly one stage a run
    seen = []
    report = run()
    assert report["resumed"] and report["records"]["readings"] == 10 and seen == ["resume"]
    results = audit_store(rig.data / "store", rig.keystore.ledger_verifiers, registry=capabilities.registry())
    assert [str(f) for _, fs in results for f in fs] == []
