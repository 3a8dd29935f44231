"""Who the client is: the connection's peer, or the address a trusted proxy says it forwarded."""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING

from service.settings import SettingsError, comma_list

if TYPE_CHECKING:
    from litestar.types import HTTPScope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

FORWARDED_HEADERS = {"x-forwarded-for": b"x-forwarded-for", "forwarded": b"forwarded"}
"""The headers a proxy may append its peer to (``FORWARDED_HEADER``), by setting value."""
_FORWARDED_PAIR = re.compile(
    r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,"\s]*)\s*'
)
"""One ``token=value`` pair of a ``Forwarded`` element (RFC 7239), the value maybe quoted."""


class TrustedProxies:
    """The proxies whose forwarding header is believed (``FORWARDED_ALLOW_IPS``).

    Each proxy appends the address of its own peer to ``X-Forwarded-For`` (or ``Forwarded``),
    so the entries a trusted proxy vouches for are at the right end; anything to their left may
    be forged by the client. The client is therefore the right-most address that is not a
    trusted proxy. Entries may carry a port (``203.0.113.7:5555``, ``[2001:db8::1]:443``,
    RFC 7239's ``for="[2001:db8::1]:443"``); the address alone is the client, written the one
    way Python's ``ipaddress`` writes it (an IPv4-mapped IPv6 address as the IPv4 one).
    """

    def __init__(self, setting: str, header: str = "x-forwarded-for") -> None:
        items = comma_list(setting)
        self.trust_all = "*" in items
        self.networks: tuple[Network, ...] = ()
        self.header = FORWARDED_HEADERS[header]
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
        ip = parse_address(address)
        return ip is not None and any(ip in network for network in self.networks)

    def client(self, scope: HTTPScope) -> str | None:
        """The client's address: the peer, or what the trusted proxies in front of it forwarded."""
        peer = (scope.get("client") or (None, 0))[0]
        if peer is None or not self or not self.trusts(peer):
            return peer
        lines = [v.decode("latin-1") for k, v in scope["headers"] if k == self.header]
        entries = (
            forwarded_for(",".join(lines))
            if self.header == b"forwarded"
            else ",".join(lines).split(",")
        )
        client = normal_address(peer)
        for entry in reversed(entries):
            address = parse_address(entry)
            if address is None:
                # A garbled entry (or "unknown", or an obfuscated name): keep the last address
                # a trusted hop vouched for.
                break
            client = str(address)
            if not self.trusts(client):
                break
        return client


def parse_address(entry: str) -> IPAddress | None:
    """The IP address of a forwarded entry, its port (if any) left out; None if it has none.

    ``203.0.113.7``, ``203.0.113.7:5555``, ``2001:db8::1``, ``[2001:db8::1]``,
    ``[2001:db8::1]:443``. An IPv4-mapped IPv6 address is read as the IPv4 address it maps.
    """
    text = entry.strip()
    if text.startswith("["):
        text, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest[0] == ":" and _is_port(rest[1:]))):
            return None
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not _is_port(port):
            return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.scope_id:
            return ipaddress.IPv6Address(int(ip))
    return ip


def normal_address(address: str) -> str:
    """``address`` as ``parse_address`` writes it, or unchanged when it is not an IP address."""
    ip = parse_address(address)
    return address if ip is None else str(ip)


def forwarded_for(header: str) -> list[str]:
    """The ``for=`` value of each element of a ``Forwarded`` header, quotes removed.

    An element without one gives an empty entry, which stops the walk as a garbled one would.
    """
    values = []
    position = 0
    while position <= len(header):
        value = ""
        while (pair := _FORWARDED_PAIR.match(header, position)) is not None:
            if pair[1].lower() == "for":
                value = pair[2][1:-1] if pair[2].startswith('"') else pair[2]
            position = pair.end()
            if header[position : position + 1] != ";":
                break
            position += 1
        values.append(value)
        comma = header.find(",", position)
        if comma < 0:
            break
        position = comma + 1
    return values


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5  # noqa: PLR2004
