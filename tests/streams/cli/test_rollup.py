"""``meterseal store rollup rebuild`` and ``check`` over a store written without rollups."""

from __future__ import annotations

import json

from click.testing import CliRunner

from streams.cli.main import main
from streams.keys.keystore import Keystore
from streams.pipeline import Pipeline
from streams.settings import Settings
from streams.store.segments import SegmentStore

from tests.streams.rollups.test_keeper import fleet, seal, store

PASSPHRASE = "rollup-cli-passphrase"


def run(data, *args, expect: int = 0):
    result = CliRunner(env={"METERSEAL_PASSPHRASE": PASSPHRASE}).invoke(main, ["--data-dir", str(data), *args])
    assert result.exit_code == expect, result.output
    return result


def test_rebuild_recomputes_what_was_never_kept_and_check_agrees(tmp_path):
    keystore = Keystore.init(tmp_path, PASSPHRASE)
    unlocked = keystore.unlock(PASSPHRASE)
    s = Settings.from_env({}, data_dir=tmp_path, rollups=False)
    p = Pipeline(s, unlocked.index_key, keystore.owner_public, SegmentStore(tmp_path / "store"), clock=lambda: 1.8e9)
    readings = fleet(meters=4, days=1)
    store(p, seal(p, readings, lambda r: int(r["meter_id"][1:]) % 2))
    assert not (tmp_path / "store" / "rollup_meter").exists()
    assert "differ from the raw rows" in run(tmp_path, "store", "rollup", "check", expect=2).output
    out = run(tmp_path, "store", "rollup", "rebuild").stdout
    done = json.loads(out[out.index("{"):])
    assert done["partitions"] == 2 and done["readings"] == len(readings) and done["rows"] > 0
    assert "ok:" in run(tmp_path, "store", "rollup", "check").output
    verify = run(tmp_path, "ledger", "verify")  # the rollups' DEKs are leaves of the key log
    assert verify.output.startswith("ok:")
