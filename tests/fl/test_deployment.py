"""A real Flower deployment on loopback: `meterseal fl superlink`, one `meterseal fl supernode` per region
(separate processes, each opening only its region's readings), and `meterseal fl deploy --secagg`.
Marked ``flower`` (real processes, ~1-2 minutes); run in CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from streams.ingest.broker import free_port

pytestmark = pytest.mark.flower


def test_secagg_round_over_real_superlink_and_supernodes(store, tmp_path):
    data, _, _ = store
    # the SuperNodes get only their region key files (and their passphrases), never the owner's passphrase
    env = {**{k: v for k, v in os.environ.items() if k != "METERSEAL_PASSPHRASE"}, "METERSEAL_DATA_DIR": str(data),
           "METERSEAL_REGIONS": "north,south,east"}
    node_env = {region: {**env, "METERSEAL_REGION_PASSPHRASE": f"{region}-pw"} for region in ("north", "south", "east")}
    cli = [sys.executable, "-m", "streams.cli", "fl"]
    link_port = free_port()
    procs = []

    def start(args: list[str], log: str, environ: dict = env) -> None:
        with open(tmp_path / log, "wb") as fh:
            procs.append(subprocess.Popen(cli + args, env=environ, stdout=fh, stderr=subprocess.STDOUT))

    try:
        start(["superlink", "--port", str(link_port)], "superlink.log")
        time.sleep(4)
        for region in ("north", "south", "east"):
            start(["supernode", "--region", region, "--superlink", f"127.0.0.1:{link_port}", "--port", str(free_port()),
                   "--region-key", str(data / "regions" / f"{region}.key")], f"node-{region}.log", node_env[region])
        done = subprocess.run(cli + ["deploy", "--superlink", f"127.0.0.1:{link_port}", "--rounds", "1", "--secagg",
                                     "--regions", "3", "--interval", "15", "--format", "json"],
                              env=env, capture_output=True, text=True, timeout=600)
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(tmp_path.glob("*.log")))
        assert done.returncode == 0, done.stdout + done.stderr + logs
        history = json.loads(done.stdout)
        assert history["secagg"] is True and history["strategy"] == "fedavg"
        (r1,) = history["rounds"]
        # federated evaluation: the regions measured the aggregated model on their own held-out windows
        assert r1["round"] == 1 and r1["mae"] > 0 and r1["rmse"] >= r1["mae"] and r1["n"] > 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
