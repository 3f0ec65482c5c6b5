import hashlib
import json

from click.testing import CliRunner

from fl import rounds
from streams import capabilities
import pytest

from fl.data import region_data, region_readings, region_readings_with_key
from streams.exceptions import InvalidEnvelope, KeystoreError
from streams.keys.regions import RegionKey, RegionKeyring
from streams.unseal import SEALED_COLUMNS, open_many
from streams.store.segments import connect
from streams.cli.main import main
from streams.keys.keystore import Keystore
from streams.store.query import Reader
from streams.store.segments import SegmentStore


def test_each_client_opens_only_its_regions_readings(store):
    data, keys, readings = store
    reader = Reader(data / "store", keys)
    for region in ("north", "south", "east"):
        mine = region_readings(reader, region)
        assert {r["region"] for r in mine} == {region}
        assert len(mine) == sum(r["region"] == region for r in readings)


def test_each_region_key_opens_its_region_and_no_other(store):
    """The region-scoped capability: a region's key file opens exactly its region's readings, and not one
    record of another region (no DEK spans regions; other regions' DEKs have no grant for it)."""
    data, keys, readings = store
    con = connect(data / "store")
    spans = con.execute("SELECT key_id FROM readings GROUP BY key_id HAVING count(DISTINCT region) > 1").fetchall()
    assert spans == []
    rows = {r: [dict(zip(SEALED_COLUMNS, v)) for v in con.execute(
        f"SELECT {', '.join(SEALED_COLUMNS)} FROM readings WHERE region = ? LIMIT 5", [r]).fetchall()]
        for r in ("north", "south", "east")}
    for region in ("north", "south", "east"):
        key = RegionKey.load(data / "regions" / f"{region}.key", f"{region}-pw")
        mine = region_readings_with_key(data / "store", key)
        assert len(mine) == sum(r["region"] == region for r in readings) and {r["region"] for r in mine} == {region}
        ring = RegionKeyring(SegmentStore(data / "store"), key)
        for other in {"north", "south", "east"} - {region}:
            with pytest.raises(InvalidEnvelope):
                open_many(rows[other][:1], ring)
            relabelled = {**rows[other][0], "region": region}  # the clear column is bound into the AEAD
            with pytest.raises(InvalidEnvelope):
                open_many([relabelled], ring)
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        RegionKey.load(data / "regions" / "north.key", "south-pw")


def test_rounds_report_measured_metrics_that_change_and_baselines(store):
    data, keys, _ = store
    reader = Reader(data / "store", keys)
    datas = [region_data(region_readings(reader, r), r, step_s=900) for r in ("north", "south", "east")]
    report = rounds.run(datas, rounds=3, epochs=1)
    maes = [h["mae"] for h in report["rounds"]]
    assert [h["round"] for h in report["rounds"]] == [1, 2, 3] and len(set(maes)) == 3
    assert all(h["mae"] > 0 and h["rmse"] >= h["mae"] for h in report["rounds"])
    assert set(report["baselines"]) == {"persistence", "local_only", "centralized"}
    assert set(report["rounds"][0]["per_region"]) == {"north", "south", "east"}
    prox = rounds.run(datas, rounds=2, epochs=1, strategy="fedprox", baselines=False)
    assert prox["strategy"] == "fedprox" and prox["rounds"][1]["mae"] != report["rounds"][1]["mae"]


def test_fl_schedule_runs_when_a_region_has_enough_new_readings(store):
    data, _, _ = store
    from fl.provenance import model_rows

    before = {r["run_id"] for r in model_rows(SegmentStore(data / "store"))}
    result = CliRunner(env={"METERSEAL_PASSPHRASE": "pw", "METERSEAL_REGIONS": "north,south,east"}).invoke(
        main, ["--data-dir", str(data), "fl", "schedule", "--after-readings", "1000", "--every-min", "0",
               "--rounds", "1", "--max-runs", "1", "--poll-s", "0.1"])
    assert result.exit_code == 0, result.output
    assert "has 5760 new readings" in result.output  # 2 meters x 2 days of minutes in the first region
    runs = {r["run_id"] for r in model_rows(SegmentStore(data / "store"))} - before
    assert len(runs) == 1


def test_fl_run_cli_json(store):
    data, _, _ = store
    result = CliRunner(env={"METERSEAL_PASSPHRASE": "pw", "METERSEAL_REGIONS": "north,south,east"}).invoke(
        main, ["--data-dir", str(data), "fl", "run", "--rounds", "2", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    assert all(c.startswith("region key") for c in report["capabilities"].values())  # no client got the owner key
    assert {"mae", "rmse", "r2"} <= set(report["rounds"][0]) and {"mae", "rmse", "r2"} <= set(report["baselines"]["persistence"])
    # every round's global model is saved, its SHA-256 is a leaf of the ledger's model log, and it verifies
    from fl.provenance import model_rows, run_dir, weights_from
    from streams.store.audit import audit_store

    store_ = SegmentStore(data / "store")
    out = run_dir(store_, report["run_id"])
    assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "history.json").read_text())["rounds"] == report["rounds"]
    rows = {r["model_sha256"]: r for r in model_rows(store_) if r["run_id"] == report["run_id"]}
    assert set(rows) == {h["model_sha256"] for h in report["rounds"]} and len(rows) == 2
    for h in report["rounds"]:
        blob = (out / f"round-{h['round']:03d}.weights").read_bytes()
        assert hashlib.sha256(blob).hexdigest() == h["model_sha256"] and weights_from(blob)
        assert json.loads(rows[h["model_sha256"]]["metrics"]) == {k: h[k] for k in ("mae", "rmse", "r2")}
    verifier = Keystore.load(data).ledger_verifier
    results = {s.log.split("/")[-2]: (s, f) for s, f in audit_store(data / "store", verifier, registry=capabilities.registry())}
    summary, findings = results["models"]
    assert not findings and summary.leaves >= 2 and summary.signed_size == summary.leaves
    # a model file swapped after the fact is caught
    (out / "round-001.weights").write_bytes(b"MSWEIGHTS1\n" + b"\0" * 40)
    findings = [f for s, f in audit_store(data / "store", verifier, registry=capabilities.registry()) if s.log.endswith("/models/0")][0]
    assert [f.kind for f in findings] == ["model-weights"]
    # ...and so is an edited metric
    (out / "round-001.weights").unlink()
    row_path = out / "round-002.json"
    row = json.loads(row_path.read_text())
    row["metrics"] = row["metrics"].replace('"mae":', '"mae":0.0001,"was":')
    row_path.write_text(json.dumps(row))
    findings = [f for s, f in audit_store(data / "store", verifier, registry=capabilities.registry()) if s.log.endswith("/models/0")][0]
    assert "model-weights" in {f.kind for f in findings} and len({f.kind for f in findings}) >= 2
