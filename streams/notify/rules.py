"""Alert routing rules: a TOML file shaped like Prometheus Alertmanager's configuration, parsed and checked.

```toml
[global]
resolve_timeout = "90m"        # an alert with no new occurrence for this long is resolved

[[receivers]]
name = "ops-webhook"
webhook_url = "https://hooks.example/meterseal"
hmac_secret_env = "OPS_WEBHOOK_KEY"   # the variable holding the HMAC key (X-Meterseal-Signature)

[[receivers]]
name = "ops-mail"
email_to = ["ops@example.org"]

[[routes]]
name = "critical"
receiver = "ops-mail"
matchers = ["severity=critical"]
group_by = ["region", "kind"]
group_wait = "30s"
group_interval = "5m"
repeat_interval = "4h"
continue = true                # go on to the next routes after a match (Alertmanager's `continue`)
routes = ["critical-north"]    # child routes by name, tried after this one matches
```

Matchers are ``label=value`` / ``label!=value`` over ``kind``, ``severity``, ``region``, ``category``. Durations
are like ``"30s"``, ``"5m"``, ``"4h"``, ``"1d"``. Every error is a ``RulesError`` that names the line; a file
with an error is never half applied (the caller keeps the rules it had). Pure: no I/O but what ``load``
reads.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.exceptions import MeterSealError

LABELS = ("kind", "severity", "region", "category", "alertname", "meter")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


class RulesError(MeterSealError):
    """The rules file is not valid; ``line`` is where (1-based), when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


def duration(text: Any, what: str) -> float:
    """``"30s"`` -> 30.0 seconds (``ValueError`` naming ``what`` otherwise)."""
    match = _DURATION.match(str(text).strip()) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{what}: {text!r} is not a duration like \"30s\", \"5m\" or \"4h\"")
    return float(match[1]) * _UNITS[match[2]]


@dataclass(frozen=True)
class Matcher:
    label: str
    value: str
    equal: bool = True

    @classmethod
    def parse(cls, text: Any) -> "Matcher":
        if not isinstance(text, str):
            raise ValueError(f"matcher {text!r} must be a string like \"severity=critical\"")
        m = re.match(r"^\s*([a-z_]+)\s*(!=|=)\s*\"?([^\"]*)\"?\s*$", text)
        if not m:
            raise ValueError(f"matcher {text!r}: write label=value or label!=value")
        if m[1] not in LABELS:
            raise ValueError(f"matcher {text!r}: label must be one of {', '.join(LABELS)}")
        return cls(m[1], m[3], m[2] == "=")

    def matches(self, labels: dict[str, str]) -> bool:
        return (labels.get(self.label, "") == self.value) == self.equal

    def __str__(self) -> str:
        return f"{self.label}{'=' if self.equal else '!='}{self.value}"


@dataclass(frozen=True)
class Receiver:
    name: str
    webhook_url: str | None = None
    email_to: tuple[str, ...] = ()
    hmac_secret_env: str | None = None

    @property
    def kind(self) -> str:
        return "webhook" if self.webhook_url else "email"


@dataclass(frozen=True)
class Route:
    name: str
    receiver: str
    matchers: tuple[Matcher, ...] = ()
    group_by: tuple[str, ...] = ("alertname", "region")
    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 14_400.0
    cont: bool = False
    routes: tuple[str, ...] = ()
    line: int = 0

    def matches(self, labels: dict[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


@dataclass(frozen=True)
class Rules:
    receivers: dict[str, Receiver] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()  # the top-level routes, in file order
    children: dict[str, Route] = field(default_factory=dict)  # every named route (children are looked up here)
    resolve_timeout: float = 5400.0
    text: str = ""

    def route(self, labels: dict[str, str]) -> list[Route]:
        """The routes an alert with ``labels`` goes to: the first matching top-level route (and the next ones
        while a matching route says ``continue``), each followed by its matching child routes, depth first."""
        out: list[Route] = []
        for route in self.routes:
            if route.matches(labels):
                out += self._with_children(route, labels, ())
                if not route.cont:
                    break
        return out

    def _with_children(self, route: Route, labels: dict[str, str], path: tuple[str, ...]) -> list[Route]:
        out = [route]
        for name in route.routes:
            child = self.children[name]
            if child.matches(labels) and name not in path:
                out += self._with_children(child, labels, path + (route.name,))
        return out


def _line_of(text: str, table: str, index: int, key: str | None = None) -> int | None:
    """The line of the ``index``-th ``[[table]]`` header (or of ``key`` inside it)."""
    lines = text.splitlines()
    seen = -1
    for n, line in enumerate(lines):
        if re.match(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]", line):
            seen += 1
            if seen == index:
                if key is None:
                    return n + 1
                for m in range(n + 1, len(lines)):
                    if re.match(r"^\s*\[", lines[m]):
                        break
                    if re.match(rf"^\s*{re.escape(key)}\s*=", lines[m]):
                        return m + 1
                return n + 1
    return None


def parse(text: str) -> Rules:
    """The rules in ``text`` (``RulesError`` naming the line of the first problem)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise RulesError(f"not valid TOML: {exc}", int(m[1]) if m else None) from None
    unknown = set(doc) - {"global", "receivers", "routes"}
    if unknown:
        key = sorted(unknown)[0]
        line = next((n + 1 for n, ln in enumerate(text.splitlines()) if re.match(rf"^\s*\[*\s*{re.escape(key)}\b", ln)),
                    None)
        raise RulesError(f"unknown section {key!r}: the file has [global], [[receivers]] and [[routes]]", line)
    glob = doc.get("global", {})
    try:
        resolve_timeout = duration(glob.get("resolve_timeout", "90m"), "resolve_timeout")
    except ValueError as exc:
        raise RulesError(str(exc), next((n + 1 for n, ln in enumerate(text.splitlines())
                                         if ln.strip().startswith("resolve_timeout")), None)) from None
    receivers: dict[str, Receiver] = {}
    for i, r in enumerate(doc.get("receivers", [])):
        at = lambda key=None, i=i: _line_of(text, "receivers", i, key)  # noqa: E731
        extra = set(r) - {"name", "webhook_url", "email_to", "hmac_secret_env"}
        if extra:
            raise RulesError(f"receiver: unknown key {sorted(extra)[0]!r}", at(sorted(extra)[0]))
        name = r.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise RulesError("receiver needs a name (letters, digits, . _ : -)", at("name"))
        if name in receivers:
            raise RulesError(f"receiver {name!r} is defined twice", at("name"))
        url, mail = r.get("webhook_url"), r.get("email_to")
        if (url is None) == (mail is None):
            raise RulesError(f"receiver {name!r} needs exactly one of webhook_url and email_to", at())
        if url is not None and not (isinstance(url, str) and re.match(r"^https?://[^\s/]+", url)):
            raise RulesError(f"receiver {name!r}: webhook_url must be an http(s):// URL", at("webhook_url"))
        mails = (mail,) if isinstance(mail, str) else tuple(mail or ())
        if mail is not None and (not mails or not all(isinstance(m, str) and _EMAIL.match(m) for m in mails)):
            raise RulesError(f"receiver {name!r}: email_to must be an address or a list of addresses", at("email_to"))
        secret_env = r.get("hmac_secret_env")
        if secret_env is not None and not (isinstance(secret_env, str) and _ENV.match(secret_env)):
            raise RulesError(f"receiver {name!r}: hmac_secret_env names an environment variable (A-Z, 0-9, _)",
                             at("hmac_secret_env"))
        receivers[name] = Receiver(name, url, mails if mail is not None else (), secret_env)
    routes: list[Route] = []
    for i, r in enumerate(doc.get("routes", [])):
        at = lambda key=None, i=i: _line_of(text, "routes", i, key)  # noqa: E731
        extra = set(r) - {"name", "receiver", "matchers", "group_by", "group_wait", "group_interval",
                          "repeat_interval", "continue", "routes"}
        if extra:
            raise RulesError(f"route: unknown key {sorted(extra)[0]!r}", at(sorted(extra)[0]))
        name = r.get("name", f"route-{i + 1}")
        if not isinstance(name, str) or not _NAME.match(name):
            raise RulesError("route name: letters, digits, . _ : -", at("name"))
        if r.get("receiver") not in receivers:
            raise RulesError(f"route {name!r}: receiver {r.get('receiver')!r} is not defined", at("receiver"))
        try:
            matchers = tuple(Matcher.parse(m) for m in _list(r.get("matchers", []), "matchers"))
        except ValueError as exc:
            raise RulesError(f"route {name!r}: {exc}", at("matchers")) from None
        group_by = _list(r.get("group_by", ["alertname", "region"]), "group_by")
        bad = [g for g in group_by if g not in LABELS and g != "..."]
        if bad:
            raise RulesError(f"route {name!r}: group_by label {bad[0]!r} is not one of {', '.join(LABELS)}",
                             at("group_by"))
        times = {}
        for key, default in (("group_wait", "30s"), ("group_interval", "5m"), ("repeat_interval", "4h")):
            try:
                times[key] = duration(r.get(key, default), key)
            except ValueError as exc:
                raise RulesError(f"route {name!r}: {exc}", at(key)) from None
        if not isinstance(r.get("continue", False), bool):
            raise RulesError(f"route {name!r}: continue is true or false", at("continue"))
        children = _list(r.get("routes", []), "routes")
        routes.append(Route(name, r["receiver"], matchers, tuple(group_by), times["group_wait"], times["group_interval"],
                            times["repeat_interval"], r.get("continue", False), tuple(children), at() or 0))
    named: dict[str, Route] = {}
    for route in routes:
        if route.name in named:
            raise RulesError(f"route {route.name!r} is defined twice", route.line)
        named[route.name] = route
    for route in routes:
        for child in route.routes:
            if child not in named:
                raise RulesError(f"route {route.name!r}: child route {child!r} is not defined", route.line)
    loop = _find_loop(named)
    if loop:
        raise RulesError("rule loop: " + " -> ".join(loop) + " (a route reaches itself through its child routes)",
                         named[loop[0]].line)
    child_names = {c for r in routes for c in r.routes}
    top = tuple(r for r in routes if r.name not in child_names)
    return Rules(receivers, top, named, resolve_timeout, text)


def _list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RulesError(f"{what} must be a list of strings")
    return value


def _find_loop(named: dict[str, Route]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for child in named[name].routes:
            if state.get(child) == 1:
                return path[path.index(child):] + [child] if child in path else path + [name, child]
            if state.get(child) is None:
                found = visit(child, path + [child])
                if found:
                    return found
        state[name] = 2
        return None

    for name in named:
        if state.get(name) is None:
            found = visit(name, [name])
            if found:
                return found
    return None


def load(path: Path | str) -> Rules:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise RulesError(f"cannot read the alert rules {path}: {exc.strerror}") from None
    return parse(text)


EXAMPLE = __doc__.split("```toml\n", 1)[1].split("```", 1)[0]
