import json
import pytest

from click.testing import CliRunner

from streams.cli.main import main


SECRET = "correct-horse-battery-staple"  # long enough never to turn up by chance in base64 output


def run(tmp_path, *args, passphrase=SECRET, **env):
    environ = {"METERSEAL_DATA_DIR": str(tmp_path), "METERSEAL_PASSPHRASE": passphrase, **env}
    return CliRunner().invoke(main, list(args), env=environ, catch_exceptions=False)


def test_keys_init_show_rotate(tmp_path):
    assert run(tmp_path, "keys", "init", "--scheme", "hpke").exit_code == 0
    shown = json.loads(run(tmp_path, "keys", "show").output)
    assert [o["scheme"] for o in shown["owners"]] == ["hpke_mlkem768_x25519"]
    assert SECRET not in run(tmp_path, "keys", "show").output
    assert run(tmp_path, "keys", "show", "--owner").output.startswith("hpke_mlkem768_x25519 ")
    assert run(tmp_path, "keys", "show", "--public").output.startswith("meterseal-ledger+")
    assert run(tmp_path, "keys", "rotate", "--scheme", "rsa").exit_code == 0
    shown = json.loads(run(tmp_path, "keys", "show").output)
    assert [(o["scheme"], o["active"]) for o in shown["owners"]] == [("hpke_mlkem768_x25519", False), ("rsa_oaep_3072_sha256", True)]
    assert run(tmp_path, "keys", "show", "--owner").output.startswith("-----BEGIN PUBLIC KEY-----")


def test_errors_are_one_clear_line_not_a_traceback(tmp_path):
    result = run(tmp_path, "keys", "show")
    assert result.exit_code == 2 and "run `meterseal keys init`" in result.output and "Traceback" not in result.output
    run(tmp_path, "keys", "init")
    result = run(tmp_path, "keys", "rotate", passphrase="wrong")
    assert result.exit_code == 2 and "wrong passphrase" in result.output
    result = run(tmp_path, "keys", "init")
    assert result.exit_code == 2 and "already exists" in result.output


def test_no_passphrase_without_a_terminal_is_an_error(tmp_path):
    result = CliRunner().invoke(main, ["keys", "init"], env={"METERSEAL_DATA_DIR": str(tmp_path), "METERSEAL_PASSPHRASE": ""})
    assert result.exit_code != 0 and "METERSEAL_PASSPHRASE" in result.output
    assert not (tmp_path / "keystore.json").exists()


def test_commands_without_a_broker_say_how_to_get_one(tmp_path, seed_csv):
    result = run(tmp_path, "ingest", "bills", str(seed_csv))
    assert result.exit_code == 2 and "meterseal broker" in result.output


def test_status_on_an_empty_store(tmp_path):
    out = json.loads(run(tmp_path, "status").output)
    assert out == {"readings": 0, "bills": 0, "dlq": 0, "dlq_by_rule": {}, "deks": 0, "readings_device_signed": 0}


def test_help_explains_every_command():
    out = CliRunner().invoke(main, ["--help"]).output
    for command in ("broker", "demo", "ingest", "keys", "ledger", "status", "worker"):
        assert command in out
    assert "uci" in CliRunner().invoke(main, ["ingest", "--help"]).output


def test_bench_commands_measure_and_report_ratios():
    out = json.loads(CliRunner().invoke(main, ["bench", "ledger", "--leaves", "2000", "--format", "json"]).output)
    assert out["leaves"] == 2000 and out["append_leaves_per_s"] > 0 and out["audit_s"] >= 0
    # ratios are rounded from the unrounded rates, so they may differ from the printed rates' ratio by a rounding step
    assert out["append_vs_chain"] == pytest.approx(out["append_leaves_per_s"] / out["hash_chain_per_s"], abs=0.011)
    out = json.loads(CliRunner().invoke(main, ["bench", "seal", "--records", "400", "--format", "json"]).output)
    assert out["seal_ratio"] == pytest.approx(out["seal_per_s"] / out["prototype_seal_per_s"], abs=0.11)


def test_bench_store_small():
    out = json.loads(CliRunner().invoke(main, ["bench", "store", "--readings", "20000", "--format", "json"]).stdout)
    assert out["readings"] == 20000 and out["range_hits"] > 0 and out["unseal_per_s"] > 0 and out["sql_unseal_per_s"] > 0
    assert out["unseal_vs_prototype"] == pytest.approx(out["unseal_per_s"] / out["prototype_open_per_s"], abs=0.11)


def test_keys_region_add_export_grant(tmp_path):
    """The region-key commands end to end: add (key file + keystore entry), show, export, grant on a store."""
    from streams.keys.keystore import Keystore
    from streams.keys.regions import RegionKey, RegionKeyring
    from streams.unseal import SEALED_COLUMNS, open_many
    from streams.store.segments import SegmentStore, connect
    from tests.streams.keys.test_regions import _seal_some

    region = {"METERSEAL_REGION_PASSPHRASE": "north-pw"}
    assert run(tmp_path, "keys", "init").exit_code == 0
    keystore = Keystore.load(tmp_path)
    _seal_some(tmp_path, keystore, keystore.unlock(SECRET))  # a store sealed before the region had a key
    added = run(tmp_path, "keys", "region", "add", "north", "--out", str(tmp_path / "north.key"), **region)
    assert added.exit_code == 0 and "stored DEK(s) granted" in added.output, added.output
    assert [r["region"] for r in json.loads(run(tmp_path, "keys", "show").output)["regions"]] == ["north"]
    assert run(tmp_path, "keys", "region", "add", "north", **region).exit_code == 2  # already has a key: clear error
    key = RegionKey.load(tmp_path / "north.key", "north-pw")
    con = connect(tmp_path / "store")
    rows = [dict(zip(SEALED_COLUMNS, r)) for r in con.execute(
        f"SELECT {', '.join(SEALED_COLUMNS)} FROM readings WHERE region = 'north'").fetchall()]
    assert len(open_many(rows, RegionKeyring(SegmentStore(tmp_path / "store"), key))) == 20
    exported = run(tmp_path, "keys", "region", "export", "north", "--out", str(tmp_path / "again.key"), **region)
    assert exported.exit_code == 0 and RegionKey.load(tmp_path / "again.key", "north-pw").pair == key.pair
    regrant = run(tmp_path, "keys", "region", "grant", "north")
    assert regrant.exit_code == 0 and "0 stored DEK(s) granted" in regrant.output
