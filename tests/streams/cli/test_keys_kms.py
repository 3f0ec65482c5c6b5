"""`meterseal keys init --kms`, `show`, `rotate`, `rewrap` and `ledger verify` as separate processes, each with
its own token and exactly its shipped policy; no passphrase anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from streams.kms.access import open_keys
from streams.kms.uri import parse
from streams.pipeline import Pipeline
from streams.seal import Source
from streams.settings import Settings
from streams.store.segments import SegmentStore

pytestmark = pytest.mark.kms


def run(data, token, *args, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("METERSEAL_PASSPHRASE", "BAO_TOKEN", "VAULT_TOKEN")}
    environ.update(METERSEAL_DATA_DIR=str(data), BAO_TOKEN=token, **env)
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=environ, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def test_the_key_commands_with_their_policies(openbao, bao_uri, tmp_path):
    data, mount = tmp_path / "data", parse(bao_uri).mount
    tokens = {role: openbao.token(openbao.policy(role, mount=mount)) for role in ("worker", "auditor", "admin")}
    made = run(data, tokens["admin"], "keys", "init", "--kms", bao_uri)
    assert made.returncode == 0, made.stderr
    assert "dek created" in made.stderr and "audit device(s) on: meterseal" in made.stderr
    shown = json.loads(run(data, "", "keys", "show").stdout)
    assert shown["kms"]["uri"] == bao_uri and shown["owners"] == []
    # a worker seals a little (its DEKs made by the service, version 1)
    worker = open_keys(Settings.from_env({}, data_dir=data), role="worker", environ={"BAO_TOKEN": tokens["worker"]})
    settings = Settings.from_env({}, data_dir=data, dek_max_records=5)
    pipeline = Pipeline(settings, worker.index_key(), worker.dek_maker(), SegmentStore(settings.store_dir), worker.signer())
    states: dict = {}
    batch = [(0, i, pipeline.seal_reading(json.dumps({"meter_id": "M1", "ts": f"2024-03-01T0{i}:00:00Z", "kwh": 0.5,
                                                       "register_kwh": i, "region": "north", "category": "Domestic"}).encode(),
                                          Source("readings.raw", 0, i), states).encode()) for i in range(9)]
    pipeline.store_batch("readings.sealed", batch)
    pipeline.checkpoint_due(force=True)
    rotated = run(data, tokens["admin"], "keys", "rotate")
    assert rotated.returncode == 0 and "version 2" in rotated.stderr, rotated.stderr
    assert run(data, tokens["worker"], "keys", "rotate").returncode == 77  # a worker may not rotate
    rewrapped = run(data, tokens["admin"], "keys", "rewrap")
    assert rewrapped.returncode == 0 and "2 DEK(s) re-wrapped" in rewrapped.stderr, rewrapped.stderr
    verified = run(data, tokens["auditor"], "ledger", "verify")
    assert verified.returncode == 0 and "the key service holds them" in verified.stdout, verified.stdout + verified.stderr
    offline = run(data, "", "ledger", "verify")  # no token: the keystore's vkeys, as a third party would
    assert offline.returncode == 0 and "key service" not in offline.stdout
    search = run(data, tokens["auditor"], "search", "--meter", "M1")
    assert search.returncode == 77 and f"{mount}/decrypt/meterseal-index" in search.stderr, search.stderr
