"""Debian's Mosquitto (2.0) on loopback, for trials, tests and benchmarks: TLS with client certificates, the
certificate's common name as the user name, and an ACL that lets a meter write only under its own topic.

::

    with Mosquitto(directory, pki=make_pki(directory / "pki", meters)) as broker:
        broker.url          # mqtts://127.0.0.1:PORT

Persistence is on (sessions and their queued QoS 1 messages survive ``restart``), queues are deep
(``max_queued_messages``: a bridge's persistent session holds what arrives while it is away) and the client's
MQTT 5 Receive Maximum bounds what is in flight. ``plain=True`` listens without TLS and without the ACL (a quick
local trial only).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from streams.exceptions import BrokerError
from streams.mqtt.pki import BRIDGE_USER, Pki

INSTALL = "apt-get install -y mosquitto"
MAX_QUEUED = 1_000_000
MAX_PACKET = 1_048_576


def mosquitto_binary() -> str:
    """The ``mosquitto`` binary (Debian puts it in /usr/sbin); ``FileNotFoundError`` naming the install."""
    found = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
                                               if Path(p).exists()), None)
    if not found:
        raise FileNotFoundError(f"no mosquitto binary: {INSTALL}")
    return found


def config_text(directory: Path, port: int, pki: Pki | None) -> str:
    lines = [
        "per_listener_settings false",
        "user root" if _is_root() else "",  # run as root (tests, containers): keep access to the files written here
        "persistence true", f"persistence_location {directory}/", "autosave_interval 60",
        f"max_queued_messages {MAX_QUEUED}", "max_queued_bytes 0", f"max_packet_size {MAX_PACKET}",
        f"log_dest file {directory / 'mosquitto.log'}", "log_type error", "log_type warning", "log_type notice",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        f"listener {port} 127.0.0.1",
    ]
    if pki is None:
        lines.append("allow_anonymous true")
    else:
        server_cert, server_key = pki.pair("server")
        lines += [f"cafile {pki.ca}", f"certfile {server_cert}", f"keyfile {server_key}", "require_certificate true",
                  "use_identity_as_username true", "allow_anonymous false", f"acl_file {directory / 'acl'}"]
    return "\n".join(line for line in lines if line) + "\n"


ACL = f"""# the bridge reads every meter's readings; a meter writes only under its own topic (user = certificate CN)
user {BRIDGE_USER}
topic read meters/#

pattern write meters/%u/#
"""


def _is_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Mosquitto:
    directory: Path
    pki: Pki | None = None
    port: int | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.pki else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        binary = mosquitto_binary()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        (self.directory / "acl").write_text(ACL)
        conf = self.directory / "mosquitto.conf"
        conf.write_text(config_text(self.directory, self.port, self.pki))
        self._proc = subprocess.Popen([binary, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=open(self.directory / "mosquitto.stderr", "ab"), start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with code {self._proc.returncode} (port {self.port}); see "
                                  f"{self.log_path} and {self.directory / 'mosquitto.stderr'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not accept connections on 127.0.0.1:{self.port} in {timeout:.0f} s")

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc else -1

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its sessions and queues to the persistence file, then exits."""
        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def restart(self) -> "Mosquitto":
        """Stop and start again on the same port, from the persisted sessions."""
        self.stop()
        return self.start()

    def __enter__(self) -> "Mosquitto":
        return self.start() if self._proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
