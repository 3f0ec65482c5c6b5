"""A certificate authority and the certificates of an MQTT deployment, for trials and tests.

``meterseal mqtt pki --out DIR --meters N`` (or ``make_pki``) writes ``ca.crt``, the broker's ``server.crt``
(for 127.0.0.1 and localhost), the bridge's ``bridge.crt`` (common name ``meterseal-bridge``) and one client
certificate per meter under ``meters/`` (common name = meter id), each with its ``.key`` (ECDSA P-256, PKCS#8
PEM, mode 0600). The broker takes the client certificate's common name as the MQTT user name
(``use_identity_as_username``) and its ACL lets a user write only under its own topic
(``pattern write meters/%u/#``): a meter cannot publish as another. A real fleet's certificates come from the
manufacturer's or the utility's PKI; this one is for a machine's trial.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from streams.crypto import _primitives

BRIDGE_USER = "meterseal-bridge"


@dataclass(frozen=True)
class Pki:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    def pair(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of ``server``, ``bridge`` or a meter id."""
        base = self.directory if name in ("server", "bridge", "ca") else self.directory / "meters"
        return base / f"{name}.crt", base / f"{name}.key"

    def meters(self) -> list[str]:
        return sorted(p.stem for p in (self.directory / "meters").glob("*.crt"))


def _write(path: Path, cert: bytes, key: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".crt").write_bytes(cert)
    key_path = path.with_suffix(".key")
    key_path.unlink(missing_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)


def make_pki(directory: Path | str, meters: Iterable[str], *, days: int = 825, hosts: Iterable[str] = ()) -> Pki:
    """A new CA in ``directory`` (kept if one is there) and certificates for the broker (127.0.0.1, localhost and
    ``hosts``), the bridge and ``meters``."""
    pki = Pki(Path(directory))
    cert_path, key_path = pki.directory / "ca.crt", pki.directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        ca = (cert_path.read_bytes(), key_path.read_bytes())
    else:
        ca = _primitives.x509_issue("meterseal trial CA", ca=True, days=days)
        _write(pki.directory / "ca", *ca)
    _write(pki.directory / "server", *_primitives.x509_issue("localhost", issuer=ca, ip="127.0.0.1",
                                                             dns=("localhost", *hosts), days=days))
    _write(pki.directory / "bridge", *_primitives.x509_issue(BRIDGE_USER, issuer=ca, days=days))
    for meter in meters:
        if "/" in meter or "+" in meter or "#" in meter or not meter:
            raise ValueError(f"meter id {meter!r} cannot be an MQTT topic level")
        _write(pki.directory / "meters" / meter, *_primitives.x509_issue(meter, issuer=ca, days=days))
    return pki
