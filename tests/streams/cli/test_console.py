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


def test_user_passwd_role_and_sessions(tmp_path):
    run = CliRunner()
    base = ["--data-dir", str(tmp_path), "console", "user"]
    env = {"METERSEAL_USER_PASSWORD": "a long enough password"}
    assert run.invoke(main, [*base, "add", "dana", "--role", "operator"], env=env).exit_code == 0
    users = UserStore.for_data_dir(tmp_path)
    first = users.get("dana")
    r = run.invoke(main, [*base, "passwd", "dana"], env={"METERSEAL_USER_PASSWORD": "another long password"})
    assert r.exit_code == 0 and "sessions have ended" in r.output
    assert users.verify("dana", "another long password") and not users.verify("dana", "a long enough password")
    r = run.invoke(main, [*base, "passwd", "dana"], env={"METERSEAL_USER_PASSWORD": "short"})
    assert r.exit_code != 0 and "12 characters" in r.output
    r = run.invoke(main, [*base, "role", "dana", "--role", "customer", "--meter", "M-9"])
    assert r.exit_code == 0 and users.get("dana").meters == ("M-9",)
    assert run.invoke(main, [*base, "sessions", "dana"]).output.startswith("dana: sessions last ended never")
    r = run.invoke(main, [*base, "sessions", "dana", "--end"])
    assert r.exit_code == 0 and "ended every console session of dana" in r.output
    assert "UTC" in run.invoke(main, [*base, "sessions", "dana"]).output
    now = users.get("dana")
    assert now.account_id == first.account_id and now.auth != first.auth  # the same account, no old session
    for command in (["passwd", "nobody"], ["role", "nobody", "--role", "admin"], ["sessions", "nobody", "--end"]):
        r = run.invoke(main, [*base, *command], env=env)
        assert r.exit_code != 0 and "no user" in r.output, command
