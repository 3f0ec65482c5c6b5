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
