"""The routing rules file: the README's example parses; every bad file is refused naming its line."""

from __future__ import annotations

import pytest

from streams.notify import rules
from streams.notify.rules import RulesError, parse

GOOD = """
[global]
resolve_timeout = "10m"

[[receivers]]
name = "ops"
webhook_url = "http://127.0.0.1:9/hook"
hmac_secret_env = "OPS_KEY"

[[receivers]]
name = "mail"
email_to = ["ops@example.org"]

[[routes]]
name = "critical"
receiver = "mail"
matchers = ["severity=critical"]
group_by = ["region"]
continue = true

[[routes]]
name = "all"
receiver = "ops"
matchers = ["kind!=flatline"]
group_by = ["region", "kind"]
group_wait = "2s"
group_interval = "1m"
repeat_interval = "4h"
"""


def test_the_documented_example_parses():
    example = parse(rules.EXAMPLE.replace('routes = ["critical-north"]', ""))
    assert example.receivers["ops-webhook"].hmac_secret_env == "OPS_WEBHOOK_KEY"
    assert example.routes[0].group_wait == 30 and example.routes[0].repeat_interval == 4 * 3600


def test_routing_continue_and_matchers():
    r = parse(GOOD)
    assert r.resolve_timeout == 600
    assert [x.name for x in r.route({"severity": "critical", "kind": "spike"})] == ["critical", "all"]
    assert [x.name for x in r.route({"severity": "warning", "kind": "spike"})] == ["all"]
    assert r.route({"severity": "warning", "kind": "flatline"}) == []


@pytest.mark.parametrize("change, line, words", [
    (lambda t: t.replace('group_wait = "2s"', 'group_wait = "soon"'), 26, "not a duration"),
    (lambda t: t.replace('receiver = "ops"', 'receiver = "nobody"'), 23, "not defined"),
    (lambda t: t.replace('["kind!=flatline"]', '["colour=red"]'), 24, "label must be"),
    (lambda t: t.replace('hmac_secret_env = "OPS_KEY"', 'hmac_secret_env = "not a var"'), 8, "environment variable"),
    (lambda t: t.replace('email_to = ["ops@example.org"]', 'email_to = ["nobody"]'), 12, "email_to"),
    (lambda t: t.replace('[[routes]]\nname = "all"', '[[routes]\nname = "all"'), 21, "not valid TOML"),
    (lambda t: t + '\n[[silly]]\nx = 1\n', 30, "unknown section"),
])
def test_a_bad_file_names_its_line(change, line, words):
    with pytest.raises(RulesError) as err:
        parse(change(GOOD))
    assert err.value.line == line and words in str(err.value)


def test_a_rule_loop_is_refused():
    text = GOOD.replace('continue = true', 'continue = true\nroutes = ["all"]').replace(
        'repeat_interval = "4h"', 'repeat_interval = "4h"\nroutes = ["critical"]')
    with pytest.raises(RulesError, match="rule loop: critical -> all -> critical"):
        parse(text)


def test_an_invalid_file_keeps_the_rules_loaded_before(tmp_path, caplog):
    import os

    from streams.notify.service import RulesFile

    path = tmp_path / "rules.toml"
    path.write_text(GOOD)
    watched = RulesFile(str(path))
    assert watched.error is None and set(watched.rules.receivers) == {"ops", "mail"}
    path.write_text(GOOD.replace('group_wait = "2s"', 'group_wait = "two seconds"'))
    os.utime(path, ns=(1, 2))  # a change the watcher sees even within the file system's time resolution
    assert watched.check() is False
    assert watched.error.startswith("line 26:") and watched.rules.children["all"].group_wait == 2.0
    assert "keeping the rules loaded before" in caplog.text
    path.write_text(GOOD.replace('group_wait = "2s"', 'group_wait = "3s"'))
    assert watched.check() is True and watched.error is None and watched.rules.children["all"].group_wait == 3.0
