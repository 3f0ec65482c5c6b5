"""OpenBao (or HashiCorp Vault) transit as the key service, through ``hvac``.

Keys, for ``openbao://HOST:PORT/MOUNT/KEY`` (``docker/openbao/*.hcl`` grant exactly these paths):

- ``KEY`` (aes256-gcm96, ``derived``): wraps DEKs. ``datakey/plaintext`` makes a DEK and its wrap in one call;
  the key id is the derivation context, so a wrap copied under another key id does not open;
- ``KEY-index`` (likewise): wraps the index key — a separate key, so a token that may unwrap the index key
  (a worker's) cannot unwrap a stored DEK;
- ``KEY-ledger`` (ed25519) and ``KEY-ledger-mldsa65`` (mldsa-65, where the server offers it): sign checkpoints,
  pinned to the version the keystore recorded (a note's key never changes under the same name).

A wrapped key is the transit ciphertext text (``vault:vN:...``): its key version travels with it, so after
``transit/keys/KEY/rotate`` old wraps keep opening and ``rewrap`` moves them to the newest version without the
DEK leaving the service. Every failure becomes ``KeyServiceUnavailable`` (not reached, sealed, TLS not
verified, rate limited), ``KeyServiceDenied`` (403: the message names the path and capability) or
``KeyServiceError``, naming the service's URL. ~1 ms a call on loopback.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from typing import Any, Mapping

from streams.exceptions import KeyServiceDenied, KeyServiceError, KeyServiceUnavailable
from streams.kms.service import DEK, INDEX, LEDGER, LEDGER_PQ, KeyRef, fingerprint, wrap_context
from streams.kms.uri import KmsUri

SCHEME = "openbao_transit"
SIGNING_TYPES = {LEDGER: ("ed25519", "ed25519"), LEDGER_PQ: ("mldsa-65", "ml-dsa-65")}  # alias: (transit, note)
_VERSION = re.compile(rb"^vault:v(\d+):")


class _Refused(KeyServiceError):
    """HTTP 400: the service understood and said no (a wrap that does not open, an unknown key type)."""


class _Missing(KeyServiceError):
    """HTTP 404: no such key or mount."""


def key_names(key: str) -> dict[str, str]:
    """alias -> transit key name, for the key name in the URL."""
    return {DEK: key, INDEX: f"{key}-index", LEDGER: f"{key}-ledger", LEDGER_PQ: f"{key}-ledger-mldsa65"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class OpenBaoTransit:
    """``KeyService`` on an OpenBao transit mount. ``token`` defaults to ``BAO_TOKEN`` / ``VAULT_TOKEN``."""

    def __init__(self, uri: KmsUri, *, token: str | None = None, environ: Mapping[str, str] | None = None,
                 timeout: float = 5.0) -> None:
        import hvac

        environ = os.environ if environ is None else environ
        self.uri, self.location = uri, str(uri)
        self.url = uri.base_url(environ)
        token = token or environ.get("BAO_TOKEN") or environ.get("VAULT_TOKEN")
        if not token:
            raise KeyServiceDenied(f"no token for the key service {self.location}: set BAO_TOKEN (or VAULT_TOKEN) to "
                                   "this process's token (README: Keys in a KMS)")
        self.names = key_names(uri.key)
        self._client = hvac.Client(url=self.url, token=token, verify=uri.verify(environ), timeout=timeout)
        self._lock = threading.Lock()  # one requests.Session: the worker signs from its store thread too

    # -- the transport, and what each failure means ----------------------------------------------------
    def _call(self, method: str, path: str, what: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import hvac.exceptions as bao
        import requests

        try:
            with self._lock:
                reply = self._client.adapter.request(method, f"/v1/{path}", json=body)
        except requests.exceptions.SSLError as exc:
            raise KeyServiceUnavailable(f"cannot verify the TLS certificate of the key service {self.location} "
                                        f"({self.url}): give its CA in BAO_CACERT ({_short(exc)})") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise KeyServiceUnavailable(f"key service {self.location} unreachable at {self.url} ({_short(exc)}): "
                                        "is OpenBao running and unsealed?") from None
        except bao.Forbidden:
            raise KeyServiceDenied(f"{self.location} refused to {what}: permission denied on {path} — this token lacks "
                                   f"that capability (policies: docker/openbao/*.hcl), or was revoked or expired") from None
        except (bao.VaultDown, bao.VaultNotInitialized, bao.BadGateway) as exc:
            raise KeyServiceUnavailable(f"key service {self.location} is sealed or not ready ({_short(exc)})") from None
        except bao.RateLimitExceeded:
            raise KeyServiceUnavailable(f"{self.location} rate-limited this token ({path}): try again later") from None
        except bao.InvalidPath:
            raise _Missing(f"{self.location}: no {path} (run `meterseal keys init --kms {self.location}` with an "
                                  "admin token, or create the transit keys it names)") from None
        except bao.InvalidRequest as exc:
            raise _Refused(f"{self.location} could not {what}: {_short(exc)}") from None
        except bao.VaultError as exc:
            raise KeyServiceError(f"{self.location} failed to {what}: {_short(exc)}") from None
        return reply if isinstance(reply, dict) else {}

    def _path(self, op: str, key: KeyRef) -> str:
        return f"{self.uri.mount}/{op}/{key.name}"

    # -- the interface ------------------------------------------------------------------------------
    def resolve_alias(self, alias: str) -> KeyRef:
        """Wrapping keys resolve without a call; signing keys are read for their public key and version."""
        if alias not in self.names:
            raise KeyServiceError(f"{self.location}: no key for alias {alias!r}")
        name = self.names[alias]
        if alias in (DEK, INDEX):
            return KeyRef(alias, name, SCHEME, fingerprint(SCHEME, self.uri.mount, name))
        data = self._call("GET", f"{self.uri.mount}/keys/{name}", f"read the public key of {name}")["data"]
        version = int(data["latest_version"])
        public = base64.b64decode(data["keys"][str(version)]["public_key"])
        return KeyRef(alias, name, SIGNING_TYPES[alias][1], public=public, version=version)

    def generate_dek(self, key: KeyRef, key_id: bytes) -> tuple[bytes, bytes]:
        data = self._call("POST", f"{self.uri.mount}/datakey/plaintext/{key.name}", f"make a data key under {key.name}",
                          {"context": _b64(wrap_context(key_id)), "bits": 256})["data"]
        return base64.b64decode(data["plaintext"]), data["ciphertext"].encode()

    def unwrap(self, key: KeyRef, key_id: bytes, wrapped: bytes) -> bytes:
        if not _VERSION.match(wrapped):
            raise KeyServiceError(f"key {key_id.hex()} is not wrapped by OpenBao transit (no vault:vN: prefix)")
        try:
            what = "unwrap the index key" if key.alias == INDEX else f"unwrap key {key_id.hex()} under {key.name}"
            data = self._call("POST", self._path("decrypt", key), what,
                              {"ciphertext": wrapped.decode(), "context": _b64(wrap_context(key_id))})["data"]
        except _Refused:
            raise KeyServiceError(f"wrapped key {key_id.hex()} does not open under transit key {key.name!r} at "
                                  f"{self.location}: it was altered, or wrapped under another service's key") from None
        return base64.b64decode(data["plaintext"])

    def sign(self, key: KeyRef, message: bytes) -> bytes:
        body: dict[str, Any] = {"input": _b64(message)}
        if key.version:
            body["key_version"] = key.version
        data = self._call("POST", self._path("sign", key), f"sign with {key.name}", body)["data"]
        return base64.b64decode(data["signature"].split(":", 2)[2])

    def wrap(self, key: KeyRef, key_id: bytes, secret: bytes) -> bytes:
        data = self._call("POST", self._path("encrypt", key), f"wrap key {key_id.hex()} under {key.name}",
                          {"plaintext": _b64(secret), "context": _b64(wrap_context(key_id))})["data"]
        return data["ciphertext"].encode()

    def rewrap(self, key: KeyRef, key_id: bytes, wrapped: bytes) -> bytes | None:
        """The wrap under the key's newest version, or None if it is already there (the DEK stays inside)."""
        data = self._call("POST", self._path("rewrap", key), f"rewrap key {key_id.hex()} under {key.name}",
                          {"ciphertext": wrapped.decode(), "context": _b64(wrap_context(key_id))})["data"]
        new = data["ciphertext"].encode()
        return None if version_of(new) == version_of(wrapped) else new

    def close(self) -> None:
        self._client.adapter.close()

    # -- checks and administration (keys init, rotate, migrate) ------------------------------------------
    def capabilities(self, paths: list[str]) -> dict[str, list[str]]:
        """This token's capabilities on each path (``sys/capabilities-self``, in OpenBao's default policy)."""
        data = self._call("POST", "sys/capabilities-self", "list this token's capabilities", {"paths": paths})
        return {p: list(data.get(p) or data.get("data", {}).get(p) or []) for p in paths}

    def require(self, needs: list[tuple[str, str, str]]) -> None:
        """``needs``: (capability, path, what for). ``KeyServiceDenied`` naming the first missing one."""
        held = self.capabilities(sorted({path for _, path, _ in needs}))
        for capability, path, purpose in needs:
            caps = held.get(path, [])
            if capability not in caps and "root" not in caps:
                raise KeyServiceDenied(f"the token for {self.location} lacks {capability!r} on {path} ({purpose}); "
                                       "give this process the policy for its role (docker/openbao/*.hcl)")

    def path(self, op: str, alias: str) -> str:
        return f"{self.uri.mount}/{op}/{self.names[alias]}"

    def key_info(self, alias: str) -> dict[str, Any] | None:
        """The transit key's metadata (``read`` on ``MOUNT/keys/NAME``), or None if there is none."""
        try:
            return self._call("GET", f"{self.uri.mount}/keys/{self.names[alias]}", f"read {self.names[alias]}")["data"]
        except _Missing:
            return None

    def has_key(self, alias: str) -> bool:
        return self.key_info(alias) is not None

    def create_keys(self, aliases: tuple[str, ...] = (DEK, INDEX, LEDGER, LEDGER_PQ)) -> dict[str, str]:
        """Make the transit keys (and enable the mount) where missing; alias -> "created", "exists" or, for the
        ML-DSA-65 key on a server without it, "not offered". ``KeyServiceDenied`` says what to create instead."""
        done = {}
        try:
            for alias in aliases:
                info = self.key_info(alias)
                if info is not None:
                    if alias in (DEK, INDEX) and not info.get("derived"):
                        raise KeyServiceError(f"transit key {self.names[alias]} at {self.location} exists but is not "
                                              "derived: meterseal binds each key id as its derivation context")
                    done[alias] = "exists"
                    continue
                body = ({"type": "aes256-gcm96", "derived": True} if alias in (DEK, INDEX)
                        else {"type": SIGNING_TYPES[alias][0]})
                try:
                    try:
                        self._call("POST", f"{self.uri.mount}/keys/{self.names[alias]}", f"create {self.names[alias]}", body)
                    except _Missing:  # no transit engine at the mount yet
                        self.enable_mount()
                        self._call("POST", f"{self.uri.mount}/keys/{self.names[alias]}", f"create {self.names[alias]}", body)
                    done[alias] = "created"
                except _Refused as exc:
                    if alias == LEDGER_PQ and "unknown key type" in str(exc):
                        done[alias] = "not offered"
                        continue
                    raise
        except KeyServiceDenied as exc:
            raise KeyServiceDenied(f"{exc}. Create the keys with an admin token: " + "; ".join(self.expected())) from None
        return done

    def expected(self) -> list[str]:
        m, n = self.uri.mount, self.names
        return [f"bao secrets enable -path={m} transit", f"bao write -f {m}/keys/{n[DEK]} type=aes256-gcm96 derived=true",
                f"bao write -f {m}/keys/{n[INDEX]} type=aes256-gcm96 derived=true",
                f"bao write -f {m}/keys/{n[LEDGER]} type=ed25519", f"bao write -f {m}/keys/{n[LEDGER_PQ]} type=mldsa-65"]

    def enable_mount(self) -> None:
        """Enable transit at the URL's mount if it is not there (needs ``sys/mounts``: an admin or root token)."""
        try:
            self._call("POST", f"sys/mounts/{self.uri.mount}", f"enable transit at {self.uri.mount}", {"type": "transit"})
        except _Refused as exc:
            if "already in use" not in str(exc) and "existing mount" not in str(exc):
                raise

    def rotate(self, alias: str = DEK) -> int:
        """Rotate the key (new wraps use the new version; old ones keep opening); its newest version."""
        self._call("POST", f"{self.uri.mount}/keys/{self.names[alias]}/rotate", f"rotate {self.names[alias]}")
        return int(self.key_info(alias)["latest_version"])

    def import_signing_key(self, alias: str, pkcs8: bytes) -> KeyRef:
        """Bring an existing checkpoint key into transit (migration keeps the logs' names, which hash the key):
        the key is wrapped for the server's import key (RSA-OAEP-SHA256 + AES key wrap with padding)."""
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding
        from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

        pem = self._call("GET", f"{self.uri.mount}/wrapping_key", "read the import wrapping key")["data"]["public_key"]
        ephemeral = os.urandom(32)
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        blob = serialization.load_pem_public_key(pem.encode()).encrypt(ephemeral, oaep) + \
            aes_key_wrap_with_padding(ephemeral, pkcs8)
        self._call("POST", f"{self.uri.mount}/keys/{self.names[alias]}/import", f"import {self.names[alias]}",
                   {"ciphertext": _b64(blob), "type": SIGNING_TYPES[alias][0], "hash_function": "SHA256"})
        return self.resolve_alias(alias)

    def audit_devices(self) -> list[str] | None:
        """Enabled audit devices (``sys/audit`` needs sudo), or None if this token may not list them."""
        try:
            data = self._call("GET", "sys/audit", "list audit devices")
        except KeyServiceDenied:
            return None
        return sorted(k for k, v in (data.get("data") or data).items() if isinstance(v, dict) and "type" in v)


def version_of(wrapped: bytes) -> int:
    """The transit key version a wrap was made under (``vault:v3:...`` -> 3)."""
    found = _VERSION.match(wrapped)
    if not found:
        raise KeyServiceError("not an OpenBao transit ciphertext (no vault:vN: prefix)")
    return int(found.group(1))


def _short(exc: Exception) -> str:
    found = re.search(r"\[Errno -?\d+\] [^'\")]+|timed out|certificate verify failed[^'\")]*", str(exc))
    if found:
        return found.group(0).strip()
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
