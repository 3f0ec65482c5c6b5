"""``METERSEAL_KMS``: which key service holds the owner's keys, and how to reach it safely.

- ``local`` — the passphrase keystore in the data directory (the default);
- ``openbao://HOST:PORT/MOUNT/KEY`` — OpenBao (or Vault) transit: ``KEY`` wraps DEKs, ``KEY-index`` the index
  key, ``KEY-ledger`` and ``KEY-ledger-mldsa65`` sign checkpoints; ``MOUNT`` may hold slashes. The token is
  ``BAO_TOKEN`` (or ``VAULT_TOKEN``). TLS: HTTPS, verified against ``BAO_CACERT`` (or ``VAULT_CACERT``) or the
  system's CAs, for every host but loopback, where plain HTTP is allowed unless a CA file is given. Nothing
  turns verification off: ``BAO_SKIP_VERIFY``/``VAULT_SKIP_VERIFY`` set is an error, not a downgrade;
- ``pkcs11:module=PATH;token=LABEL;key=LABEL`` — a PKCS#11 token (SoftHSM2 in tests): ``key`` is the AES key
  that wraps DEKs, ``key-index`` the index key's, ``key-ledger`` the Ed25519 checkpoint key; the PIN is
  ``METERSEAL_PKCS11_PIN``.

>>> u = parse("openbao://127.0.0.1:8200/transit/meterseal")
>>> u.provider, u.mount, u.key, u.base_url({})
('openbao', 'transit', 'meterseal', 'http://127.0.0.1:8200')
>>> parse("pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=meterseal;key=meterseal").token
'meterseal'
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit

from streams.exceptions import ConfigError

LOCAL, OPENBAO, PKCS11 = "local", "openbao", "pkcs11"
FORMS = ("local", "openbao://HOST:PORT/MOUNT/KEY", "pkcs11:module=PATH;token=LABEL;key=LABEL")


@dataclass(frozen=True)
class KmsUri:
    provider: str
    host: str = ""
    port: int = 0
    mount: str = ""
    key: str = ""
    module: str = ""
    token: str = ""

    def __str__(self) -> str:
        if self.provider == OPENBAO:
            return f"openbao://{_netloc(self.host, self.port)}/{self.mount}/{self.key}"
        if self.provider == PKCS11:
            return f"pkcs11:module={self.module};token={self.token};key={self.key}"
        return LOCAL

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def cacert(self, environ: Mapping[str, str]) -> str | None:
        return environ.get("BAO_CACERT") or environ.get("VAULT_CACERT") or None

    def base_url(self, environ: Mapping[str, str]) -> str:
        """``https://HOST:PORT``, or ``http://`` on loopback without a CA file."""
        scheme = "http" if self.loopback and not self.cacert(environ) else "https"
        return f"{scheme}://{_netloc(self.host, self.port)}"

    def verify(self, environ: Mapping[str, str]) -> str | bool:
        """What ``requests`` verifies the server with: the CA file, else the system's CAs. Never False."""
        for var in ("BAO_SKIP_VERIFY", "VAULT_SKIP_VERIFY"):
            if environ.get(var, "").strip().lower() not in ("", "0", "false", "no", "off"):
                raise ConfigError(f"{var} is set: meterseal never turns TLS verification off for its key service; "
                                  "unset it and give the server's CA in BAO_CACERT")
        return self.cacert(environ) or True


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse(text: str | None) -> KmsUri:
    """A ``METERSEAL_KMS`` value (None or empty: ``local``); ``ConfigError`` naming the accepted forms."""
    text = (text or LOCAL).strip()
    if text == LOCAL:
        return KmsUri(LOCAL)
    if text.startswith("openbao://"):
        parts = urlsplit(text)
        path = parts.path.strip("/")
        mount, _, key = path.rpartition("/")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or not port or not mount or not key or parts.query or parts.username:
            raise ConfigError(f"METERSEAL_KMS={text!r}: want openbao://HOST:PORT/MOUNT/KEY "
                              "(e.g. openbao://127.0.0.1:8200/transit/meterseal)")
        return KmsUri(OPENBAO, host=parts.hostname, port=port, mount=mount, key=key)
    if text.startswith("pkcs11:"):
        fields = {}
        for item in text[len("pkcs11:"):].split(";"):
            name, sep, value = item.partition("=")
            if not sep or name.strip() not in ("module", "token", "key") or not value.strip():
                raise ConfigError(f"METERSEAL_KMS={text!r}: want pkcs11:module=PATH;token=LABEL;key=LABEL")
            fields[name.strip()] = value.strip()
        if set(fields) != {"module", "token", "key"}:
            raise ConfigError(f"METERSEAL_KMS={text!r}: want pkcs11:module=PATH;token=LABEL;key=LABEL")
        return KmsUri(PKCS11, module=fields["module"], token=fields["token"], key=fields["key"])
    raise ConfigError(f"METERSEAL_KMS={text!r}: use one of " + ", ".join(FORMS))
