"""Every route x every role x every state of the account behind a session answers as the role table says.

States: a fresh login (the role's column of ``test_routes.MATRIX``, which ``test_the_matrix_is_the_role_table``
ties to ``roles.ACCESS``); the account removed; the name removed and re-added with another role and password;
the account's role changed. In the last three the old session is no one's: every route answers as it does
to an anonymous caller, whatever the new account may do.
"""

from __future__ import annotations

import shutil

import httpx
import pytest

from streams.console.feed import AlertHub

from .conftest import PARTY, PASSWORD, Served, _Quiet, login, make_state, session_csrf
from .test_routes import MATRIX, ROLES, call, concrete

STATES = ("fresh", "removed", "re-added as admin", "role changed")
OTHER_ROLE = {"admin": "auditor", "operator": "analyst", "auditor": "operator", "analyst": "admin", "customer": "operator"}


def _change(users, name: str, role: str, state: str) -> None:
    if state == "removed":
        users.remove(name)
    elif state == "re-added as admin":
        users.remove(name)
        users.add(name, "admin", password="a different long password")
    elif state == "role changed":
        users.set_role(name, OTHER_ROLE[role], meters=["M-BOB"] if OTHER_ROLE[role] == "customer" else ())


@pytest.fixture(scope="module")
def served(console_data, tmp_path_factory):
    """A console of its own, on a copy of the data: the routes' POSTs (grants, silences ...) stay out of the
    session's shared store, which other tests read."""
    from streams.share.parties import PartyKey, add_party

    copy = tmp_path_factory.mktemp("account-changes") / "data"
    shutil.copytree(console_data["dir"], copy)
    data = {**console_data, "dir": copy, "settings": console_data["settings"].replace(data_dir=copy)}
    hub = AlertHub(_Quiet())
    state = make_state(data, hub=hub)
    hub.state = "connected"
    if PARTY not in state.sharing.parties():
        add_party(state.vault.store_dir, PARTY, PartyKey.generate().public_key)
    s = Served(state)
    yield s
    s.stop()


@pytest.mark.parametrize("state", STATES)
def test_every_route_every_role_every_account_state(served, state):
    record = served.state.vault.bills(["M-ALICE"])[0]["record_id"]
    users = served.state.users
    wrong = {}
    for i, role in enumerate(ROLES):
        if role == "anonymous":
            continue
        name = f"prop-{role}"
        users.add(name, role, password=PASSWORD, meters=["M-ALICE"] if role == "customer" else (), replace=True)
        client = login(served.url, name)
        csrf = session_csrf(client)
        _change(users, name, role, state)
        column = i if state == "fresh" else 0  # 0: the anonymous caller's column
        for (method, path), statuses in MATRIX.items():
            got = call(client, method, path, concrete(path, record), csrf)
            if got != statuses[column]:
                wrong[(method, path, role)] = (got, statuses[column])
        client.close()
        if users.get(name) is not None:
            users.remove(name)
    assert not wrong, f"{state}: (got, expected) {wrong}"


def test_an_ended_session_cannot_be_used_by_its_old_csrf_token_either(served):
    """The old session's CSRF token is worthless after the change: a forged POST with it is refused."""
    users = served.state.users
    users.add("prop-root", "admin", password=PASSWORD)
    client = login(served.url, "prop-root")
    csrf = session_csrf(client)
    users.end_sessions("prop-root")
    r = client.post("/admin/users", data={"csrf_token": csrf, "name": "intruder", "role": "admin",
                                          "password": PASSWORD, "confirm": PASSWORD},
                    headers={"accept": "text/html"})
    assert r.status_code == 303 and r.headers["location"] == "/login" and users.get("intruder") is None
    users.remove("prop-root")
    with httpx.Client(base_url=served.url) as anon:
        assert anon.get("/admin", headers={"accept": "text/html"}).headers["location"] == "/login?next=%2Fadmin"
