"""The sharing commands end to end on a real store: party keygen/add, grant create/list/revoke, share
export/open (json, csv, espi), export espi, and ledger verify covering the consent log."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from streams.cli.main import main
from tests.conftest import DATA
from tests.streams.share.conftest import PASS


def test_grant_export_open_revoke(shared_store, tmp_path):
    data, keystore, _, _, readings, _ = shared_store
    owner = {"METERSEAL_DATA_DIR": str(data), "METERSEAL_PASSPHRASE": PASS}
    recipient = {"METERSEAL_DATA_DIR": str(tmp_path / "nothing-here"), "METERSEAL_PARTY_PASSPHRASE": "party-pw"}
    run = CliRunner().invoke

    made = run(main, ["party", "keygen", "--out", str(tmp_path / "p")], env=recipient)
    assert made.exit_code == 0, made.output
    assert run(main, ["party", "add", "cli-party", "--public-key", str(tmp_path / "p" / "party.pub")], env=owner).exit_code == 0
    assert "cli-party" in run(main, ["party", "list"], env=owner).output
    made = run(main, ["grant", "create", "--to", "cli-party", "--meter", "M-B", "--from", "2024-03-01", "--to", "2024-03-01",
                      "--purpose", "demand response"], env=owner)
    assert made.exit_code == 0, made.output
    grant = json.loads(made.output)
    assert grant["state"] == "active" and grant["meters"] == ["M-B"] and grant["end"] == "2024-03-01"
    bundle = tmp_path / "b.json"
    exported = run(main, ["share", "export", grant["grant_id"], "-o", str(bundle)], env=owner)
    assert exported.exit_code == 0, exported.output

    vkeys = run(main, ["keys", "show", "--public"], env=owner).output.split()
    assert len(vkeys) == 2
    key = ["--key", str(tmp_path / "p" / "party.key")]
    opened = run(main, ["share", "open", str(bundle), *key, "--vkey", vkeys[0], "--vkey", vkeys[1]], env=recipient)
    assert opened.exit_code == 0, opened.output
    doc = json.loads(opened.stdout)
    want = [r for r in readings if r["meter_id"] == "M-B" and r["ts"].startswith("2024-03-01")]
    assert [(r["ts"], r["kwh"]) for r in doc["records"]] == [(w["ts"], w["kwh"]) for w in want] and len(want) == 24
    assert all(r["verified"] is True for r in doc["records"]) and doc["attested_fields"] == []
    assert "keys checked: meterseal-ledger (Ed25519), meterseal-ledger-mldsa65 (ML-DSA-65)" in opened.stderr
    as_csv = run(main, ["share", "open", str(bundle), *key, "--vkey", vkeys[1], "--format", "csv"], env=recipient)
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == 24 and rows[0]["meter_id"] == "M-B" and rows[0]["verified"] == "True"
    assert run(main, ["share", "open", str(bundle), *key], env=recipient).exit_code != 0  # no trusted key given
    espi_out = tmp_path / "share.xml"
    assert run(main, ["share", "open", str(bundle), *key, "--vkey", vkeys[0], "--format", "espi", "-o", str(espi_out)],
               env=recipient).exit_code == 0
    own_out = tmp_path / "own.xml"
    assert run(main, ["export", "espi", "--meter", "M-B", "--from", "2024-03-01", "--to", "2024-03-02", "-o", str(own_out)],
               env=owner).exit_code == 0
    xmlschema = pytest.importorskip("xmlschema", reason="xmlschema is missing: pip install -e '.[test]'")
    schema = xmlschema.XMLSchema(str(DATA / "vectors" / "greenbutton" / "espi.xsd"))
    for path in (espi_out, own_out):
        assert list(schema.iter_errors(path.read_text())) == []

    revoked = run(main, ["grant", "revoke", grant["grant_id"], "--reason", "moved out"], env=owner)
    assert revoked.exit_code == 0, revoked.output
    refused = run(main, ["share", "export", grant["grant_id"], "-o", str(tmp_path / "again.json")], env=owner)
    assert refused.exit_code == 2 and "revoked" in refused.output
    listed = json.loads(run(main, ["grant", "list", "--format", "json", "--meter", "M-B"], env=owner).output)
    assert {g["grant_id"]: g["state"] for g in listed}[grant["grant_id"]] == "revoked"
    verified = run(main, ["ledger", "verify"], env=owner)
    assert verified.exit_code == 0, verified.output
    assert "meterseal-ledger-mldsa65 (ML-DSA-65)" in verified.output
    # a flipped byte in the bundle fails, naming what failed
    raw = bytearray(bundle.read_bytes())
    raw[raw.index(b'"envelope":"') + 30] ^= 0x01
    bad = tmp_path / "bad.json"
    bad.write_bytes(bytes(raw))
    failed = run(main, ["share", "open", str(bad), *key, "--vkey", vkeys[0]], env=recipient)
    assert failed.exit_code == 1 and "INVALID: record 0" in failed.stderr
