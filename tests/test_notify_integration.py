"""Alert routing end to end: a real worker routes a rollback alert to a webhook receiver on loopback (signed),
keeps it in the alert history, sends its resolution, and a restart sends nothing twice. Marked ``broker``."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time

import pytest

from streams.ingest import sources

from .rig import running_rig
from .streams.notify.servers import Hook
from .test_alerts_integration import END, after, produce

pytestmark = pytest.mark.broker


def test_a_rollback_alert_reaches_a_webhook_once_and_resolves(tmp_path):
    hook = Hook()
    rules = tmp_path / "rules.toml"
    rules.write_text(f"""
[global]
resolve_timeout = "6s"

[[receivers]]
name = "ops"
webhook_url = "{hook.url}"
hmac_secret_env = "OPS_HOOK_KEY"

[[routes]]
receiver = "ops"
matchers = ["severity=critical"]
group_by = ["kind"]
group_wait = "1s"
group_interval = "2s"
repeat_interval = "4h"
""")
    fleet = list(sources.simulate(meters=4, readings=400, end=END, seed=3))
    last = {r["meter_id"]: r for r in fleet}
    rollback = {**after(last["SIM-00001"], 15, 0.1), "register_kwh": 1.0}
    try:
        with running_rig(tmp_path, METERSEAL_ALERT_RULES=str(rules), OPS_HOOK_KEY="s3cret") as rig:
            produce(rig, fleet + [rollback])
            firing = rig.wait_for(lambda: [r for r in hook.accepted if json.loads(r["body"])["status"] == "firing"],
                                  "a notification of the rollback", timeout=120)
            body = json.loads(firing[0]["body"])
            assert body["groupLabels"] == {"kind": "rollback"} and body["alerts"][0]["labels"]["severity"] == "critical"
            assert firing[0]["headers"]["X-Meterseal-Signature"] == \
                "sha256=" + hmac.new(b"s3cret", firing[0]["body"], hashlib.sha256).hexdigest()
            tok = rig.index.meter("SIM-00001")
            history = rig.wait_for(lambda: (rig.data_dir / "store" / "alerts").exists() and rig.query(
                "SELECT kind FROM alerts WHERE meter_tok = ?", [tok]), "the alert in the history")
            assert ("rollback",) in history
            rig.stop_worker()
            rig.start_worker()  # the alerts topic is read again from its last commit: nothing is sent twice
            rig.wait_for(lambda: any(json.loads(r["body"])["status"] == "resolved" for r in hook.accepted),
                         "the resolved notification", timeout=120)
            time.sleep(3)
        ids = [r["headers"]["X-Meterseal-Notification-Id"] for r in hook.accepted]
        assert len(ids) == len(set(ids)) == 2, [json.loads(r["body"])["status"] for r in hook.accepted]
    finally:
        hook.stop()
