"""`meterseal console user add|list|remove`: accounts from the command line, passwords from the environment."""

from __future__ import annotations

from click.testing import CliRunner

from streams.cli.main import main
from streams.console.users import UserStore


def test_user_add_list_remove(tmp_path):
    run = CliRunner()
    base = ["--data-dir", str(tmp_path), "console", "user"]
    r = run.invoke(main, [*base, "add", "carol", "--role", "customer", "--meter", "M-1", "--meter", "M-2"],
                   env={"METERSEAL_USER_PASSWORD": "a long enough password"})
    assert r.exit_code == 0 and "meters M-1, M-2" in r.output
    assert UserStore.for_data_dir(tmp_path).verify("carol", "a long enough password").meters == ("M-1", "M-2")
    r = run.invoke(main, [*base, "add", "dan", "--role", "operator"], env={"METERSEAL_USER_PASSWORD": "short"})
    assert r.exit_code != 0 and "12 characters" in r.output
    r = run.invoke(main, [*base, "add", "erin", "--role", "customer"], env={"METERSEAL_USER_PASSWORD": "x" * 20})
    assert r.exit_code != 0 and "--meter" in r.output
    r = run.invoke(main, [*base, "list"])
    assert r.exit_code == 0 and r.output.splitlines() == ["carol\tcustomer\tM-1,M-2\tpassword"]
    assert "argon2" not in r.output
    assert run.invoke(main, [*base, "remove", "carol"]).exit_code == 0
    assert run.invoke(main, [*base, "list"]).output == ""
