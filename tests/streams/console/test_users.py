from __future__ import annotations

import json

import pytest

from streams.console.users import UserStore
from streams.exceptions import ConfigError


def test_argon2id_hashes_only_and_verify(tmp_path):
    users = UserStore(tmp_path / "users.json")
    users.add("carol", "customer", password="a long password!", meters=["M-1", "M-2"])
    doc = json.loads((tmp_path / "users.json").read_text())
    assert doc["users"]["carol"]["hash"].startswith("$argon2id$")
    assert "a long password!" not in (tmp_path / "users.json").read_text()
    assert (tmp_path / "users.json").stat().st_mode & 0o077 == 0
    assert users.verify("carol", "a long password!").meters == ("M-1", "M-2")
    assert users.verify("carol", "a long password?") is None
    assert users.verify("nobody", "a long password!") is None


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "x y", "role": "admin", "password": "p" * 12}, "user name"),
    ({"name": "x", "role": "root", "password": "p" * 12}, "role"),
    ({"name": "x", "role": "customer", "password": "p" * 12}, "needs its meters"),
    ({"name": "x", "role": "admin", "password": "p" * 12, "meters": ["M"]}, "only customer"),
    ({"name": "x", "role": "admin", "password": "short"}, "12 characters"),
])
def test_bad_accounts_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        UserStore(tmp_path / "u.json").add(kwargs.pop("name"), kwargs.pop("role"), **kwargs)


def test_remove_and_duplicates(tmp_path):
    users = UserStore(tmp_path / "u.json")
    users.add("ana", "auditor", password="p" * 12)
    with pytest.raises(ConfigError, match="exists"):
        users.add("ana", "auditor", password="p" * 12)
    users.remove("ana")
    assert users.list() == [] and users.verify("ana", "p" * 12) is None
    with pytest.raises(ConfigError, match="no user"):
        users.remove("ana")


def test_account_ids_are_never_reused_and_auth_follows_every_change(tmp_path):
    users = UserStore(tmp_path / "u.json")
    seen_ids, seen_auth = set(), set()
    for _ in range(3):
        user = users.add("ana", "customer", password="p" * 12, meters=["M-1"])
        assert user.account_id not in seen_ids
        seen_ids.add(user.account_id)
        seen_auth.add(user.auth)
        for change in (lambda: users.passwd("ana", "q" * 12), lambda: users.set_role("ana", "customer", meters=["M-2"]),
                       lambda: users.set_role("ana", "auditor"), lambda: users.end_sessions("ana")):
            after = change()
            assert after.account_id == user.account_id and after.auth not in seen_auth
            seen_auth.add(after.auth)
        users.remove("ana")


def test_password_bounds_and_oidc_accounts(tmp_path):
    users = UserStore(tmp_path / "u.json")
    with pytest.raises(ConfigError, match="at most 1024"):
        users.add("ana", "admin", password="p" * 1025)
    users.add("ana", "admin", password="p" * 12)
    assert users.verify("ana", "p" * 2_000_000) is None  # refused without hashing a 2 MB string
    users.add("sso", "operator", subject="sub-7")
    with pytest.raises(ConfigError, match="identity provider"):
        users.passwd("sso", "p" * 12)
    assert users.verify("sso", "") is None and users.by_subject("sub-7").name == "sso"
    with pytest.raises(ConfigError, match="at most 100 meters"):
        users.add("many", "customer", password="p" * 12, meters=[f"M-{i}" for i in range(101)])


def test_an_old_users_file_still_reads(tmp_path):
    """A users file written before account ids: each account's id is derived from its name until rewritten."""
    from streams.console.users import _hasher

    (tmp_path / "u.json").write_text(json.dumps({"version": 1, "users": {
        "ana": {"role": "auditor", "meters": [], "subject": None, "hash": _hasher.hash("p" * 12)}}}))
    users = UserStore(tmp_path / "u.json")
    old = users.verify("ana", "p" * 12)
    assert old.role == "auditor" and old.account_id == "unnamed:ana"
    users.remove("ana")
    assert users.add("ana", "auditor", password="p" * 12).account_id != old.account_id


def test_erasing_a_subject_takes_its_meters_out_of_every_account(tmp_path):
    from streams import capabilities
    from streams.registry import ErasureContext, Subject

    users = UserStore.for_data_dir(tmp_path)
    users.add("one-meter", "customer", password="p" * 12, meters=["M-GONE"])
    users.add("two-meters", "customer", password="p" * 12, meters=["M-GONE", "M-KEPT"])
    users.add("other", "customer", password="p" * 12, meters=["M-KEPT"])
    before = users.get("two-meters")
    holder = next(h for h in capabilities.registry().holders if h.name == "console-accounts")
    context = ErasureContext(store=None, data_dir=tmp_path, index_key=bytes(32), signer=None)
    subject = Subject("meter", "M-GONE", meters=("M-GONE",))
    assert holder.erase(context, subject) == 2 and holder.erase(context, subject) == 0  # idempotent
    # a customer left with no meter keeps its account, with nothing in scope: it can read its erasure's receipt
    assert users.get("one-meter").meters == () and users.get("two-meters").meters == ("M-KEPT",)
    assert users.get("two-meters").auth != before.auth  # its sessions (which showed M-GONE) have ended
    assert users.get("other").meters == ("M-KEPT",)
    assert "M-GONE" not in (tmp_path / "console" / "users.json").read_text()
