"""Who is asking: the client address, trusting ``X-Forwarded-For`` only from configured proxies.

uvicorn's default trusts forwarded headers from 127.0.0.1, so any local process could claim any address and
slip past the per-address login throttle; the console turns that off (``server.uvicorn_config``) and reads
the header here, only when the direct peer is one of ``METERSEAL_TRUSTED_PROXIES`` (addresses or networks).
The client is then the right-most address in the header that is not itself a trusted proxy.

>>> proxies = TrustedProxies.parse("10.0.0.0/8, 127.0.0.1")
>>> proxies.client("127.0.0.1", "203.0.113.9, 10.1.2.3"), proxies.client("192.0.2.1", "203.0.113.9")
('203.0.113.9', '192.0.2.1')
>>> TrustedProxies().client("127.0.0.1", "203.0.113.9")
'127.0.0.1'
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..exceptions import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class TrustedProxies:
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> "TrustedProxies":
        """``"10.0.0.0/8,192.0.2.7"`` (empty or None: trust no proxy)."""
        networks = []
        for item in (text or "").split(","):
            if item.strip():
                try:
                    networks.append(ipaddress.ip_network(item.strip(), strict=False))
                except ValueError:
                    raise ConfigError(f"METERSEAL_TRUSTED_PROXIES: {item.strip()!r} is not an address or network "
                                      "(e.g. 10.0.0.0/8,192.0.2.7)") from None
        return cls(tuple(networks))

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address: the peer's, unless the peer is a trusted proxy that says who it forwards."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # a proxy that forwards garbage: count it against the proxy
        return hops[0] if hops else peer
