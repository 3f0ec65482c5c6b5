"""One frozen settings object, read from ``METERSEAL_*`` environment variables and CLI flags.

Flags win over the environment, the environment over defaults. Every field is documented in the
README's "Settings" table.

>>> s = Settings.from_env({"METERSEAL_REGIONS": "north, south", "METERSEAL_PARTITIONS": "2"})
>>> s.regions, s.partitions
(('north', 'south'), 2)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from streams.exceptions import ConfigError

DEFAULT_REGIONS = ("north", "south", "east", "west", "central")


@dataclass(frozen=True)
class Settings:
    broker: str | None = None
    """Kafka bootstrap URL (``kafka://host:9092`` or ``host:9092``, comma-separated for several).
    None: the embedded broker that ``meterseal broker`` (or the demo) started for this data dir."""
    data_dir: Path = Path("meterseal-data")
    passphrase: str | None = field(default=None, repr=False)
    regions: tuple[str, ...] = DEFAULT_REGIONS
    partitions: int = 4
    max_future_skew_s: float = 300.0
    min_ts: str = "1990-01-01"
    max_kwh: float = 10_000.0
    max_message_bytes: int = 65_536
    dek_max_records: int = 100_000
    dek_max_age_s: float = 3600.0
    app_id: str = "meterseal"
    seal_batch: int = 500
    store_batch: int = 2000
    store_flush_s: float = 0.5
    checkpoint_leaves: int = 1000
    checkpoint_s: float = 10.0
    snapshot_keep_s: float = 60.0
    """On an ``s3://`` store, workers expire Iceberg snapshots older than this (one worker at a time, checked every
    sixth of it, at least every 5 s and at most every 10 minutes); 0: never (``meterseal store expire`` by hand).
    Each snapshot kept costs every commit ~1 ms (the metadata listing them all is rewritten): keep it short."""
    log_level: str = "warn"
    alert_quantile: float = 0.995
    flatline_readings: int = 20
    alert_values: bool = False
    store: str | None = None
    """Where the sealed store lives: None (``<data-dir>/store``), a local path, or ``s3://BUCKET/PREFIX``
    (Iceberg tables and tlog tiles on S3-compatible storage, with the standard ``AWS_*`` variables)."""
    catalog: str | None = field(default=None, repr=False)
    """The Iceberg SQL catalog of an ``s3://`` store: ``postgresql://USER[:PASSWORD]@HOST:PORT/DB``."""
    metrics_port: int | None = None
    """Port of the worker's Prometheus metrics on 127.0.0.1; None: not served."""
    console_session_s: float = 28_800.0
    """Lifetime of a console login (the session cookie and the server's session expire together)."""
    dp_dataset_rho: float = 4.0
    """Total zCDP rho a data set (the readings) may spend over all analysts, unless `dp budget set --dataset`."""
    dp_clamp_kwh: float = 2.0
    """DP contribution bound: kWh per reading clamped to [0, this] (`dp query --clamp-kwh`)."""
    dp_per_hour: int = 4
    """DP contribution bound: readings per meter per clock hour counted (`dp query --per-hour`)."""
    # retention and erasure (streams/erasure)
    erasure_grace_s: float = 5.0
    """How long an erasure waits after fencing a subject before destroying anything: workers see the fence within
    2 s and stop sealing under its keys."""
    retention_every_s: float = 86_400.0
    """Workers enforce the retention policy this often (the first run one period after start); 0: never (run
    `meterseal store enforce-retention` yourself)."""
    # Connect My Data (streams/connect): OAuth 2.0 for third parties and the ESPI resource server
    oauth_access_ttl: int = 3600
    """Lifetime of an OAuth access token, in seconds (never past its grant's end)."""
    oauth_authorization_days: int = 365
    """How long a customer's consent to a third party lasts (the grant's expiry; refresh tokens end with it)."""
    connect_public_url: str | None = None
    """The console's public base URL (``https://data.example.com``) in resourceURI/authorizationURI and
    notifications; None: the URL a request came in on (and ``http://127.0.0.1:8800`` for the CLI)."""
    connect_retry_s: float = 30.0
    """First retry delay of a notification to a third party (doubling, at most an hour, for 24 h)."""

    # -- rollups (streams/rollups) --
    rollups: bool = True
    """The worker keeps hourly/daily rollups as it stores readings (off: only for `bench rollup`'s comparison)."""
    rollup_min_meters: int = 10
    """usage_hourly_region suppresses cells of fewer distinct meters than this."""
    rollup_grace_s: float = 300.0
    """An hour (day) is closed once the partition's newest reading is this far past its end; later ones are deltas."""
    rollup_idle_s: float = 30.0
    """... or once nothing was added to a partition's open cells for this many seconds (the end of a stream)."""

    # -- alert routing (streams/notify) --
    alert_rules: str | None = None
    """The routing rules (TOML, Alertmanager-shaped); None: the worker keeps the alert history, notifies nobody."""
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_from: str = "meterseal@localhost"
    smtp_starttls: bool = True
    smtp_ca_file: str | None = None
    """Email receivers' relay: STARTTLS unless METERSEAL_SMTP_STARTTLS=false; a private CA's PEM to trust."""
    console_url: str = ""
    """The console's address, put in notifications as their externalURL."""
    # console: where users reach it, and which proxies may say who the client is
    public_url: str | None = None
    """The console's URL as its users reach it (``https://console.example.org``): the OIDC redirect URI is built
    from it (never from the Host header); https turns on ``Secure`` cookies and HSTS. None: ``http://HOST:PORT``."""
    trusted_proxies: str | None = None
    """Addresses or networks (comma-separated) whose ``X-Forwarded-For`` the console believes; None: none."""

    # key service (streams.kms)
    kms: str | None = None
    """Where the owner's keys are: ``local`` (the passphrase keystore), ``openbao://HOST:PORT/MOUNT/KEY`` or
    ``pkcs11:module=PATH;token=LABEL;key=LABEL``; None: what the keystore names (``local`` for a passphrase one)."""
    kms_cache_ttl: float = 300.0
    """Seconds a reader keeps an unwrapped DEK in memory before asking the key service again."""
    kms_cache_size: int = 10_000
    """Most unwrapped DEKs a reader keeps in memory (least recently used out first)."""

    # devices and signed readings (streams.devices), and the MQTT bridge (streams.mqtt)
    require_signed: bool = False
    """Refuse readings that do not come in a verified signed envelope (dead letter rule ``signature``)."""
    device_refresh_s: float = 10.0
    """Workers re-read the device registry this often (a revocation takes effect within it)."""
    mqtt_url: str | None = None
    """The MQTT broker the bridge subscribes to: ``mqtt://HOST:PORT`` or ``mqtts://HOST:PORT`` (TLS)."""
    mqtt_topic: str = "meters/+/readings"
    """The bridge's topic filter; its one ``+`` level is the meter (or head-end collector) the message is from."""
    mqtt_share_group: str | None = None
    """Subscribe as a member of this MQTT 5 shared subscription (``$share/GROUP/TOPIC``): bridges share the load."""
    mqtt_client_id: str | None = None
    """The bridge's MQTT client id: its persistent session's name (default ``meterseal-bridge-<host>``)."""
    mqtt_ca: str | None = None
    """CA certificate (PEM) that signed the MQTT broker's certificate (``mqtts://``)."""
    mqtt_cert: str | None = None
    """The bridge's client certificate (PEM), for brokers that require one."""
    mqtt_key: str | None = field(default=None, repr=False)
    """The private key (PEM) of ``mqtt_cert``."""
    mqtt_session_expiry_s: int = 86_400
    """How long the MQTT broker keeps a stopped bridge's session and queued readings; past it they are dropped."""
    mqtt_in_flight: int = 1000
    """MQTT 5 Receive Maximum: readings the broker sends the bridge before it acknowledges (each after Kafka)."""

    # environment variable -> field
    ENV = {
        "METERSEAL_BROKER": "broker",
        "METERSEAL_DATA_DIR": "data_dir",
        "METERSEAL_PASSPHRASE": "passphrase",
        "METERSEAL_REGIONS": "regions",
        "METERSEAL_PARTITIONS": "partitions",
        "METERSEAL_MAX_SKEW_S": "max_future_skew_s",
        "METERSEAL_MIN_TS": "min_ts",
        "METERSEAL_MAX_KWH": "max_kwh",
        "METERSEAL_MAX_MESSAGE_BYTES": "max_message_bytes",
        "METERSEAL_DEK_MAX_RECORDS": "dek_max_records",
        "METERSEAL_DEK_MAX_AGE_S": "dek_max_age_s",
        "METERSEAL_APP_ID": "app_id",
        "METERSEAL_SEAL_BATCH": "seal_batch",
        "METERSEAL_STORE_BATCH": "store_batch",
        "METERSEAL_STORE_FLUSH_S": "store_flush_s",
        "METERSEAL_CHECKPOINT_LEAVES": "checkpoint_leaves",
        "METERSEAL_CHECKPOINT_S": "checkpoint_s",
        "METERSEAL_SNAPSHOT_KEEP_S": "snapshot_keep_s",
        "METERSEAL_LOG_LEVEL": "log_level",
        "METERSEAL_ALERT_QUANTILE": "alert_quantile",
        "METERSEAL_FLATLINE_READINGS": "flatline_readings",
        "METERSEAL_ALERT_VALUES": "alert_values",
        "METERSEAL_STORE": "store",
        "METERSEAL_CATALOG": "catalog",
        "METERSEAL_METRICS_PORT": "metrics_port",
        "METERSEAL_CONSOLE_SESSION_S": "console_session_s",
        "METERSEAL_DP_DATASET_RHO": "dp_dataset_rho",
        "METERSEAL_DP_CLAMP_KWH": "dp_clamp_kwh",
        "METERSEAL_DP_PER_HOUR": "dp_per_hour",
        "METERSEAL_ERASURE_GRACE_S": "erasure_grace_s",
        "METERSEAL_RETENTION_EVERY_S": "retention_every_s",
        "METERSEAL_OAUTH_ACCESS_TTL": "oauth_access_ttl",
        "METERSEAL_OAUTH_AUTHORIZATION_DAYS": "oauth_authorization_days",
        "METERSEAL_CONNECT_PUBLIC_URL": "connect_public_url",
        "METERSEAL_CONNECT_RETRY_S": "connect_retry_s",
        "METERSEAL_ROLLUPS": "rollups",
        "METERSEAL_ROLLUP_MIN_METERS": "rollup_min_meters",
        "METERSEAL_ROLLUP_GRACE_S": "rollup_grace_s",
        "METERSEAL_ROLLUP_IDLE_S": "rollup_idle_s",
        "METERSEAL_ALERT_RULES": "alert_rules",
        "METERSEAL_SMTP_HOST": "smtp_host",
        "METERSEAL_SMTP_PORT": "smtp_port",
        "METERSEAL_SMTP_USER": "smtp_user",
        "METERSEAL_SMTP_PASSWORD": "smtp_password",
        "METERSEAL_SMTP_FROM": "smtp_from",
        "METERSEAL_SMTP_STARTTLS": "smtp_starttls",
        "METERSEAL_SMTP_CA_FILE": "smtp_ca_file",
        "METERSEAL_CONSOLE_URL": "console_url",
        "METERSEAL_KMS": "kms",
        "METERSEAL_KMS_CACHE_TTL": "kms_cache_ttl",
        "METERSEAL_KMS_CACHE_SIZE": "kms_cache_size",
        "METERSEAL_PUBLIC_URL": "public_url",
        "METERSEAL_TRUSTED_PROXIES": "trusted_proxies",
        "METERSEAL_REQUIRE_SIGNED": "require_signed",
        "METERSEAL_DEVICE_REFRESH_S": "device_refresh_s",
        "METERSEAL_MQTT_URL": "mqtt_url",
        "METERSEAL_MQTT_TOPIC": "mqtt_topic",
        "METERSEAL_MQTT_SHARE_GROUP": "mqtt_share_group",
        "METERSEAL_MQTT_CLIENT_ID": "mqtt_client_id",
        "METERSEAL_MQTT_CA": "mqtt_ca",
        "METERSEAL_MQTT_CERT": "mqtt_cert",
        "METERSEAL_MQTT_KEY": "mqtt_key",
        "METERSEAL_MQTT_SESSION_EXPIRY_S": "mqtt_session_expiry_s",
        "METERSEAL_MQTT_IN_FLIGHT": "mqtt_in_flight",
    }

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ConfigError("partitions must be >= 1")
        if not self.regions:
            raise ConfigError("at least one region is needed (METERSEAL_REGIONS)")
        if not 0.5 <= self.alert_quantile < 1 or self.flatline_readings < 2:
            raise ConfigError("alerts need 0.5 <= METERSEAL_ALERT_QUANTILE < 1 and METERSEAL_FLATLINE_READINGS >= 2")
        if self.store and self.store.startswith("s3://") and not self.catalog:
            raise ConfigError(f"METERSEAL_STORE={self.store} needs METERSEAL_CATALOG=postgresql://USER@HOST:PORT/DB "
                              "(the Iceberg catalog)")
        if self.console_session_s <= 0 or (self.metrics_port is not None and not 0 < self.metrics_port < 65536):
            raise ConfigError("METERSEAL_CONSOLE_SESSION_S must be > 0 and METERSEAL_METRICS_PORT a port number")
        if not (self.snapshot_keep_s == 0 or self.snapshot_keep_s >= 10):
            raise ConfigError("METERSEAL_SNAPSHOT_KEEP_S must be 0 (workers never expire snapshots) or at least 10 "
                              "seconds (a reader slower than that could lose files compaction replaced)")
        if self.dek_max_records < 1 or self.dek_max_age_s <= 0:
            raise ConfigError("DEK rotation needs METERSEAL_DEK_MAX_RECORDS >= 1 and METERSEAL_DEK_MAX_AGE_S > 0")
        if self.erasure_grace_s < 0 or self.retention_every_s < 0:
            raise ConfigError("METERSEAL_ERASURE_GRACE_S and METERSEAL_RETENTION_EVERY_S must be >= 0")
        if not (self.kms_cache_ttl > 0 and self.kms_cache_size >= 1):
            raise ConfigError("the DEK cache needs METERSEAL_KMS_CACHE_TTL > 0 and METERSEAL_KMS_CACHE_SIZE >= 1")
        if not (self.dp_dataset_rho >= 0 and self.dp_clamp_kwh > 0 and self.dp_per_hour >= 1):
            raise ConfigError("DP needs METERSEAL_DP_DATASET_RHO >= 0, METERSEAL_DP_CLAMP_KWH > 0 and METERSEAL_DP_PER_HOUR >= 1")
        if self.oauth_access_ttl < 1 or self.oauth_authorization_days < 1 or self.connect_retry_s <= 0:
            raise ConfigError("Connect My Data needs METERSEAL_OAUTH_ACCESS_TTL >= 1, "
                              "METERSEAL_OAUTH_AUTHORIZATION_DAYS >= 1 and METERSEAL_CONNECT_RETRY_S > 0")
        if self.rollup_min_meters < 1 or self.rollup_grace_s < 0 or self.rollup_idle_s <= 0:
            raise ConfigError("rollups need METERSEAL_ROLLUP_MIN_METERS >= 1, METERSEAL_ROLLUP_GRACE_S >= 0 and "
                              "METERSEAL_ROLLUP_IDLE_S > 0")
        if self.public_url is not None and not (self.public_url.startswith(("http://", "https://"))
                                                and "/" not in self.public_url.split("://", 1)[1].rstrip("/")):
            raise ConfigError(f"METERSEAL_PUBLIC_URL={self.public_url!r}: give the scheme and host only, "
                              "e.g. https://console.example.org")
        if self.device_refresh_s <= 0 or self.mqtt_session_expiry_s < 0 or not 1 <= self.mqtt_in_flight <= 65_535:
            raise ConfigError("METERSEAL_DEVICE_REFRESH_S must be > 0, METERSEAL_MQTT_SESSION_EXPIRY_S >= 0 and "
                              "METERSEAL_MQTT_IN_FLIGHT 1..65535")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **flags: Any) -> "Settings":
        """Defaults, overridden by ``environ`` (default ``os.environ``), overridden by non-None ``flags``."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for var, name in cls.ENV.items():
            if environ.get(var):
                values[name] = environ[var]
        values.update({k: v for k, v in flags.items() if v is not None})
        return cls(**{name: _coerce(name, value) for name, value in values.items()})

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    @property
    def store_dir(self) -> Path:
        """The local store directory (also an ``s3://`` store's worker's own files, e.g. detector models)."""
        if self.store and not self.store.startswith("s3://"):
            return Path(self.store)
        return Path(self.data_dir) / "store"

    @property
    def store_location(self) -> str | Path:
        """``s3://BUCKET/PREFIX`` or the local store directory: what ``streams.store.open_store`` takes."""
        return self.store if self.store and self.store.startswith("s3://") else self.store_dir

    def environ(self) -> dict[str, str]:
        """These settings as ``METERSEAL_*`` variables, to hand to a child process."""
        out = {}
        for var, name in self.ENV.items():
            value = getattr(self, name)
            if value is None:
                continue
            out[var] = ",".join(value) if isinstance(value, tuple) else str(value)
        return out


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    if name not in _FIELD_TYPES:
        raise ConfigError(f"unknown setting {name!r}")
    kind = _FIELD_TYPES[name]
    try:
        if name == "data_dir":
            return Path(value)
        if name == "regions":
            items = value.split(",") if isinstance(value, str) else value
            return tuple(r.strip() for r in items if r.strip())
        if kind in ("int", "int | None"):
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).strip().lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).strip().lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
    except (TypeError, ValueError):
        env = next((v for v, f in Settings.ENV.items() if f == name), name)
        raise ConfigError(f"{env}: {value!r} is not a valid {kind}") from None
    return value
