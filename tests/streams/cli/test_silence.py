"""``meterseal alerts silence`` (make, list, expire; a warning when it matches nothing) and ``alerts history``."""

from __future__ import annotations

import json

from click.testing import CliRunner

from streams.cli.main import main
from streams.keys.keystore import Keystore
from streams.notify import history
from streams.store.segments import SegmentStore

PASSPHRASE = "silence-cli-passphrase"


def run(data, *args, expect=0):
    result = CliRunner(env={"METERSEAL_PASSPHRASE": PASSPHRASE}).invoke(main, ["--data-dir", str(data), *args])
    assert result.exit_code == expect, result.output
    return result


def test_silence_make_list_expire_and_history(tmp_path):
    import time

    keys = Keystore.init(tmp_path, PASSPHRASE).unlock(PASSPHRASE)
    from streams.crypto.tokens import BlindIndex

    tok = BlindIndex(keys.index_key).meter("M1")
    alert = {"format": 1, "alert_id": "x1", "meter_tok": tok, "ts": "2025-03-01T00:00:00+00:00", "kind": "theft",
             "score": 0.9, "severity": "warning", "reason": "low", "region": "north", "kwh": None,
             "ingested_at_ms": None, "detected_at_ms": int(time.time() * 1000)}
    history.record(SegmentStore(tmp_path / "store"), 0, [(0, alert)])
    made = json.loads(run(tmp_path, "alerts", "silence", "-m", "region=north", "--for", "1h", "--reason",
                          "crew on site").stdout.splitlines()[0])
    assert made["matches_recent_alerts"] == 1
    nothing = run(tmp_path, "alerts", "silence", "-m", "region=atlantis", "--reason", "typo")
    assert "matches none of the alerts" in nothing.output
    assert "label must be one of" in run(tmp_path, "alerts", "silence", "-m", "colour=red", "--reason", "x", expect=2).output
    listed = run(tmp_path, "alerts", "silence").stdout
    assert made["id"] in listed and "active" in listed and "crew on site" in listed
    run(tmp_path, "alerts", "silence", "expire", made["id"])
    assert f"{made['id']}  expired" in run(tmp_path, "alerts", "silence").stdout
    assert "say why" in run(tmp_path, "alerts", "silence", "-m", "kind=theft", expect=2).output
    found = [json.loads(line) for line in run(tmp_path, "alerts", "history", "--meter", "M1").stdout.splitlines()]
    assert [f["alert_id"] for f in found] == ["x1"]
    assert run(tmp_path, "alerts", "history", "--region", "south").stdout == ""
