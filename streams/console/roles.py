"""Who reaches which route: the one table, and the FastAPI dependency that enforces it.

``ACCESS[(method, path)]`` names the roles allowed on each route (``PUBLIC``: anyone, ``ANY``: every
logged-in role). Handlers declare ``Depends(allow("GET", "/auditor"))``; the app refuses to start if a
route is missing from the table, and the role x route test reads this same table. Anonymous requests get
401 (API) or a redirect to ``/login`` (pages); a role not listed gets 403. A session counts only while its
account is unchanged (``sessions.current``): a removed account, or one whose password or role changed, is
anonymous from its next request on. A customer's scope (its meters)
comes from its account, never from the request: asking for anything outside it is a 404 (``NotFound``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from fastapi import Request

from .sessions import Session, current
from .users import ROLES, User

PUBLIC = frozenset({"anonymous", *ROLES})
ANY = frozenset(ROLES)
STAFF = frozenset({"admin", "operator"})


def _r(*roles: str) -> frozenset[str]:
    return frozenset(roles)


ACCESS: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("GET", "/login/oidc"): PUBLIC,
    ("GET", "/login/oidc/callback"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,  # counters only, no data: for the utility's Prometheus
    ("POST", "/logout"): ANY,
    ("GET", "/"): ANY,
    # pages
    ("GET", "/operator"): STAFF,
    ("GET", "/customer"): _r("customer"),
    ("GET", "/customer/download"): _r("customer"),
    ("POST", "/customer/grants"): _r("customer"),
    ("POST", "/customer/grants/{grant_id}/revoke"): _r("customer"),
    ("GET", "/auditor"): _r("admin", "auditor"),
    ("POST", "/auditor/verify"): _r("admin", "auditor"),
    ("GET", "/auditor/verify"): _r("admin", "auditor"),
    ("GET", "/analyst"): _r("admin", "analyst"),
    ("POST", "/analyst/query"): _r("analyst"),  # spends the asking analyst's own privacy budget
    ("GET", "/fl"): _r("admin", "analyst", "operator"),
    ("GET", "/admin"): _r("admin"),
    ("POST", "/admin/users"): _r("admin"),
    ("POST", "/admin/users/{name}/remove"): _r("admin"),
    ("POST", "/admin/grants/{grant_id}/revoke"): _r("admin"),
    ("POST", "/customer/erasure"): _r("customer"),
    ("GET", "/customer/erasure/{request_id}/receipt"): _r("customer"),
    ("POST", "/admin/erasure/{request_id}/approve"): _r("admin"),
    ("POST", "/admin/erasure/{request_id}/refuse"): _r("admin"),
    # JSON API and live events
    ("GET", "/api/meters/{meter_id:path}/readings"): _r("customer"),
    ("GET", "/api/meters/{meter_id:path}/usage"): _r("customer"),
    ("GET", "/api/bills"): _r("customer"),
    ("GET", "/api/grants"): _r("customer"),
    ("GET", "/api/alerts"): _r("admin", "operator", "customer"),
    ("GET", "/events/alerts"): _r("admin", "operator", "customer"),
    ("GET", "/api/regions/usage"): STAFF,
    ("GET", "/api/status"): STAFF,
    ("GET", "/api/ledger/checkpoints"): _r("admin", "auditor"),
    ("GET", "/api/ledger/proof/{record_id}"): _r("admin", "auditor", "customer"),
    # Connect My Data (streams/console/connect.py): only a customer consents, for its own meters
    ("GET", "/oauth/authorize"): _r("customer"),
    ("POST", "/oauth/authorize"): _r("customer"),
    ("GET", "/customer/receipts/{grant_id}"): _r("customer"),
    ("POST", "/customer/connect/{grant_id}/revoke"): _r("customer"),
    ("POST", "/admin/parties"): _r("admin"),
    ("POST", "/admin/parties/{name}/rotate"): _r("admin"),
    ("POST", "/admin/parties/{name}/status"): _r("admin"),
    # the third party authenticates itself (client credentials, bearer tokens), never with a console session
    ("POST", "/oauth/token"): PUBLIC,
    ("POST", "/oauth/revoke"): PUBLIC,
    ("GET", "/espi/1_1/resource/Batch/Subscription/{subscription_id}"): PUBLIC,
    ("GET", "/espi/1_1/resource/Subscription/{subscription_id}/UsagePoint"): PUBLIC,
    ("GET", "/espi/1_1/resource/Subscription/{subscription_id}/UsagePoint/{usage_point_id}"): PUBLIC,
    ("GET", "/espi/1_1/resource/Authorization/{authorization_id}"): PUBLIC,
    ("DELETE", "/espi/1_1/resource/Authorization/{authorization_id}"): PUBLIC,
    ("GET", "/espi/1_1/resource/ReadServiceStatus"): PUBLIC,
    ("GET", "/.well-known/meterseal-vkeys"): PUBLIC,  # public keys only
    # alert routing (streams/console/alerting.py)
    ("GET", "/operator/alerts"): STAFF,
    ("POST", "/operator/silences"): STAFF,
    ("POST", "/operator/silences/{silence_id}/expire"): STAFF,
    ("POST", "/operator/alerts/{fp}/ack"): STAFF,
    ("GET", "/api/alerts/history"): _r("admin", "operator", "customer"),
    ("GET", "/customer/alerts"): _r("customer"),
    ("POST", "/customer/alerts/email"): _r("customer"),
    ("GET", "/admin/alert-rules"): _r("admin"),
    ("POST", "/admin/alert-rules"): _r("admin"),
}

HOME = {"admin": "/admin", "operator": "/operator", "customer": "/customer", "auditor": "/auditor",
        "analyst": "/analyst"}

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class NotLoggedIn(Exception):
    """No valid session: 401 for the API, a redirect to /login for pages."""


class Forbidden(Exception):
    """Logged in, but this role may not use this route (403)."""


class NotFound(Exception):
    """Outside the caller's scope, or not there: the same 404 either way."""


class CsrfFailed(Exception):
    """A state-changing request without its session's CSRF token (403)."""


@dataclass(frozen=True)
class Principal:
    user: User
    session: Session

    @property
    def role(self) -> str:
        return self.user.role

    def owns_meter(self, meter_id: str) -> bool:
        return self.user.role == "customer" and meter_id in self.user.meters

    def check_meter(self, meter_id: str) -> None:
        if not self.owns_meter(meter_id):
            raise NotFound()


async def check_csrf(request: Request, session: Session | None) -> None:
    """For a state-changing method: the session's token must come in the ``X-CSRF-Token`` header or form."""
    if request.method in SAFE_METHODS:
        return
    token = request.headers.get("x-csrf-token")
    if not token and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        token = (await request.form()).get("csrf_token")
    if session is None or not session.csrf_ok(token if isinstance(token, str) else None):
        raise CsrfFailed()


def allow(method: str, path: str) -> Callable:
    """The dependency for route ``(method, path)``: the logged-in ``Principal`` whose role the table lists."""
    roles = ACCESS[(method, path)]

    async def dependency(request: Request) -> Principal:
        app = request.app.state.console
        found = current(app.sessions, app.users, request.cookies.get(app.cookie_name))
        if found is None:
            raise NotLoggedIn()
        session, user = found
        if user.role not in roles:
            raise Forbidden()
        await check_csrf(request, session)
        return Principal(user, session)

    dependency.roles = roles  # type: ignore[attr-defined]
    return dependency
