"""Who the client is: the connection's peer, or the address a trusted proxy says it forwarded."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from service.settings import SettingsError, comma_list

if TYPE_CHECKING:
    from litestar.types import HTTPScope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` header is believed (``FORWARDED_ALLOW_IPS``).

    Each proxy appends the address of its own peer to ``X-Forwarded-For``, so the entries a
    trusted proxy vouches for are at the right end; anything to their left may be forged by the
    client. The client is therefore the right-most address that is not a trusted proxy.
    """

    def __init__(self, setting: str) -> None:
        items = comma_list(setting)
        self.trust_all = "*" in items
        self.networks: tuple[Network, ...] = ()
        if not self.trust_all:
            try:
                self.networks = tuple(ipaddress.ip_network(item, strict=False) for item in items)
            except ValueError as exc:
                raise SettingsError(f"FORWARDED_ALLOW_IPS: {exc}") from None

    def __bool__(self) -> bool:
        """Whether any peer is trusted at all."""
        return self.trust_all or bool(self.networks)

    def trusts(self, address: str) -> bool:
        """Whether ``address`` is a trusted proxy."""
        if self.trust_all:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client(self, scope: HTTPScope) -> str | None:
        """The client's address: the peer, or what the trusted proxies in front of it forwarded."""
        peer = (scope.get("client") or (None, 0))[0]
        if peer is None or not self or not self.trusts(peer):
            return peer
        forwarded = b",".join(v for k, v in scope["headers"] if k == b"x-forwarded-for")
        client = peer
        for entry in reversed(forwarded.decode("latin-1").split(",")):
            address = entry.strip()
            if not _is_ip(address):
                # A garbled entry: keep the last address a trusted hop vouched for.
                break
            client = address
            if not self.trusts(address):
                break
        return client


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
