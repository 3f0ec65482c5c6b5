"""Build the console from ``Settings`` and serve it with uvicorn (what ``meterseal console`` runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..exceptions import BrokerError, MeterSealError
from ..registry import Registry
from ..settings import Settings
from .app import ConsoleState, create_app
from .data import Vault
from .engines import Privacy, Sharing, connect_for
from .erasure import ErasedMeters
from .feed import AlertHub
from .proxies import TrustedProxies
from .sessions import SessionStore
from .throttle import Throttle
from .users import UserStore

if TYPE_CHECKING:  # OIDC is optional: Authlib is imported only when a console uses it
    from .oidc import OidcConfig


def alert_source(bootstrap: str) -> Callable[[Callable[[], bool]], Iterator[dict[str, Any]]]:
    """``follow(stop)``: every alert on the topic from its beginning, then new ones until ``stop()``."""
    import schemas
    from ..ingest.broker import consume

    def follow(stop: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        for msg in consume(bootstrap, "alerts", idle=None, stop=stop):
            try:
                yield schemas.decode("alert", msg.value())
            except schemas.SchemaError:
                continue  # not an alert: nothing to show
    return follow


def build_state(settings: Settings, passphrase: str | Callable[[], str] | None, *, broker: str | None = None,
                oidc: OidcConfig | None = None, registry: Registry | None = None,
                public_url: str | None = None) -> ConsoleState:
    """Open the owner's keys (the console is in the owner's trust zone: a passphrase keystore, or a key service's token
    with the console policy) and start the alert feed if a broker is known."""
    from ..ingest.broker import resolve
    from ..store.base import open_store

    store = open_store(settings.store_location, catalog=settings.catalog, work_dir=settings.store_dir, create=False)
    vault = Vault.open(settings.data_dir, passphrase, store=store, settings=settings)
    if broker is None:
        try:
            broker = resolve(settings.broker, settings.data_dir)
        except (BrokerError, MeterSealError):
            broker = None  # no broker: the pages say so; the store is still served
    state = ConsoleState(users=UserStore.for_data_dir(settings.data_dir),
                         sessions=SessionStore(ttl_s=settings.console_session_s), throttle=Throttle(),
                         vault=vault, regions=settings.regions, broker=broker, app_id=settings.app_id, oidc=oidc,
                         sharing=Sharing(vault), privacy=Privacy.from_settings(vault, settings), registry=registry,
                         rollup_min_meters=settings.rollup_min_meters, alert_rules=settings.alert_rules,
                         public_url=(settings.public_url or public_url or "").rstrip("/") or None,
                         proxies=TrustedProxies.parse(settings.trusted_proxies),
                         erasure_grace_s=settings.erasure_grace_s, erased=ErasedMeters(vault.store))
    state.connect = connect_for(vault, settings, public_url=state.public_url)
    if broker:
        state.hub = AlertHub(alert_source(broker), on_alert=lambda _a: state.metrics.alerts.inc(),
                             hide=state.erased.hide).start()
    return state


def uvicorn_config(app: Any, *, host: str, port: int) -> Any:
    """uvicorn's settings for the console: forwarded headers off (``proxies`` reads them, from trusted proxies
    only; uvicorn's default would believe any local client), no access log (the metrics count requests)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                          proxy_headers=False, forwarded_allow_ips="", server_header=False)


def serve(settings: Settings, passphrase: str | Callable[[], str] | None, *, host: str = "127.0.0.1", port: int = 8800,
          ready: Callable[[str], None] | None = None, oidc: OidcConfig | None = None,
          registry: Registry | None = None) -> None:
    import uvicorn

    shown = f"[{host}]" if ":" in host else host
    state = build_state(settings, passphrase, oidc=oidc, registry=registry, public_url=f"http://{shown}:{port}")
    server = uvicorn.Server(uvicorn_config(create_app(state), host=host, port=port))
    notifier = None
    if state.connect is not None:  # notifications to third parties: its own thread, never the request's
        from ..connect.notify import Notifier

        notifier = Notifier(state.connect.outbox, tick=state.connect.notify_new_data).start()
    if ready:
        ready(f"http://{shown}:{port}/")
    try:
        server.run()
    except KeyboardInterrupt:
        pass  # Ctrl-C: uvicorn has already closed the connections
    finally:
        if state.hub:
            state.hub.stop()
        if state.oidc:
            state.oidc.close()
        if notifier is not None:
            notifier.stop()


def demo_accounts(data_dir, *, customer_meters: list[str]) -> dict[str, tuple[str, str]]:
    """One ``demo-<role>`` account per role with a fresh random password (printed once by the demo, never stored
    in clear); the customer owns ``customer_meters``. Returns ``{role: (name, password)}``."""
    import secrets

    from .users import ROLES

    users = UserStore.for_data_dir(data_dir)
    out = {}
    for role in ROLES:
        name, password = f"demo-{role}", secrets.token_urlsafe(12)
        users.add(name, role, password=password, meters=customer_meters if role == "customer" else (), replace=True)
        out[role] = (name, password)
    return out
