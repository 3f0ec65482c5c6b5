"""The console's Connect My Data pages: the admin registers parties, sees their status and rotates credentials
(CSRF-protected forms); the auditor sees consent-log events; the CLI registers and rotates the same way."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from tests.streams.console.conftest import PASSPHRASE, login, session_csrf

from .conftest import SCOPE


def test_admin_registers_rotates_and_sets_status_with_csrf(served_connect):
    base, connect = served_connect.url, served_connect.state.connect
    admin = login(base, "root")
    csrf = session_csrf(admin)
    form = {"name": "page-app", "redirect_uri": "https://page.example/cb", "scope": SCOPE, "purpose": "<b>x</b>"}
    assert admin.post("/admin/parties", data=form).status_code == 403  # no CSRF token: nothing registered
    page = admin.post("/admin/parties", data={**form, "csrf_token": csrf})
    assert page.status_code == 200
    secret = re.search(r"client_secret <code>([^<]+)</code>", page.text)[1]
    client = connect.client("page-app")
    assert client.check_secret(secret) and secret not in admin.get("/admin").text  # shown once
    rotated = admin.post("/admin/parties/page-app/rotate", data={"csrf_token": csrf})
    new = re.search(r"client_secret <code>([^<]+)</code>", rotated.text)[1]
    assert new != secret and connect.client("page-app").check_secret(new)
    assert not connect.client("page-app").check_secret(secret)
    assert admin.post("/admin/parties/page-app/status", data={"csrf_token": csrf, "status": "on-hold"}).status_code == 303
    assert connect.client("page-app").status == "on-hold" and "on-hold" in admin.get("/admin").text
    bad = admin.post("/admin/parties", data={**form, "name": "bad-uri", "redirect_uri": "http://evil.example/cb",
                                             "csrf_token": csrf})
    assert bad.status_code == 400 and "loopback" in bad.text


def test_auditor_sees_consent_log_events(served_connect, party):
    from .flow import new_tokens

    new_tokens(served_connect.url, party, meters=["M-A1"])
    page = login(served_connect.url, "audrey").get("/auditor", headers={"accept": "text/html"})
    assert 'aria-label="Consent-log events"' in page.text and party["client_id"] in page.text
    assert "M-A1" not in page.text  # events name the meter count, not the meters


def test_cli_party_add_prints_credentials_once_and_rotates(connect_data, monkeypatch, tmp_path):
    from streams.cli.main import main
    from streams.share.parties import PartyKey

    monkeypatch.setenv("METERSEAL_PASSPHRASE", PASSPHRASE)
    key = PartyKey.generate()
    pub = tmp_path / "party.pub"
    pub.write_text(key.public_key.text())
    runner, data = CliRunner(), str(connect_data["dir"])
    added = runner.invoke(main, ["--data-dir", data, "party", "add", "cli-app", "--public-key", str(pub),
                                 "--redirect-uri", "https://cli.example/cb", "--scope", SCOPE, "--format", "json"])
    assert added.exit_code == 0, added.output
    doc = json.loads(added.output[added.output.index("{"):added.output.rindex("}") + 1])
    assert doc["client_id"].startswith("ms-") and doc["client_secret"] and "secret_hash" not in doc
    rotated = runner.invoke(main, ["--data-dir", data, "party", "credentials", "cli-app", "--rotate", "--format", "json"])
    new = json.loads(rotated.output[rotated.output.index("{"):rotated.output.rindex("}") + 1])
    assert new["client_id"] == doc["client_id"] and new["client_secret"] != doc["client_secret"]
    status = runner.invoke(main, ["--data-dir", data, "party", "status", "cli-app", "on-hold"])
    assert status.exit_code == 0 and "on-hold" in status.output
    bad = runner.invoke(main, ["--data-dir", data, "party", "add", "bad-scope", "--redirect-uri",
                               "https://x.example/cb", "--scope", "FB=4_99"])
    assert bad.exit_code == 2 and "unknown function block 99" in bad.output
