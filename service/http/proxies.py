"""Who the client is: the connection's peer, or the address a trusted proxy says it forwarded."""

from __future__ import annotations

import ipaddress
import re
import string
from typing import TYPE_CHECKING

from service.settings import SettingsError, comma_list

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from litestar.types import HTTPScope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

FORWARDED_HEADERS = {"x-forwarded-for": b"x-forwarded-for", "forwarded": b"forwarded"}
"""The headers a proxy may append its peer to (``FORWARDED_HEADER``), by setting value."""
_TOKEN = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)
"""RFC 9110's ``tchar``: what a ``Forwarded`` parameter's name and unquoted value are made of."""
_QUOTED_TEXT = re.compile(r"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*")
"""The inside of RFC 9110's ``quoted-string``: ``qdtext`` and ``quoted-pair``."""
_QUOTED_PAIR = re.compile(r"\\(.)")
_OWS = " \t"


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
        header = ",".join(v.decode("latin-1") for k, v in scope["headers"] if k == self.header)
        entries: Iterable[str] = (
            forwarded_for(header) if self.header == b"forwarded" else reversed(header.split(","))
        )
        client = normal_address(peer)
        for entry in entries:
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
    text = entry.strip(_OWS)
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


def forwarded_for(header: str) -> Iterator[str]:
    """The ``for=`` value of each element of a ``Forwarded`` header, from the right, unquoted.

    Read right to left, as RFC 7239's grammar has it (``token=value`` pairs split by ``;``,
    elements by ``,``, a value a token or a quoted-string), so that the elements the trusted
    proxies appended are read as they wrote them, whatever the client wrote before them (an
    unclosed quote, say). An element that does not parse exactly, or has no ``for``, gives an
    empty entry, which stops the walk at the last trusted hop; nothing left of it is read.
    """
    end = len(header)
    while True:
        element = _element_before(header, end)
        if element is None:
            yield ""
            return
        start, value = element
        if value is None or (value.count(":") > 1 and not value.startswith("[")):
            yield ""  # no for=, or an IPv6 address without its brackets (RFC 7239, section 6)
            return
        yield value
        if start == 0:
            return
        end = start - 1  # the comma before the element


def _element_before(header: str, end: int) -> tuple[int, str | None] | None:
    """The ``Forwarded`` element ending at ``end``: where it starts and its ``for`` value.

    None when ``header[:end]`` does not end in an element of RFC 7239's grammar (with the
    optional white space a list allows around its commas), or when it names a parameter twice.
    """
    position = end
    names: set[str] = set()
    value_of_for: str | None = None
    while True:
        start = position
        while start > 0 and header[start - 1] in _OWS:
            start -= 1
        if start == 0 or header[start - 1] == ",":
            return start, value_of_for
        if position not in (start, end):
            return None  # white space inside the element
        position = start
        if header[position - 1] == ";":  # an empty pair
            position -= 1
            continue
        pair = _pair_before(header, position)
        if pair is None:
            return None
        position, name, value = pair
        if name in names:
            return None
        names.add(name)
        if name == "for":
            value_of_for = value
        if position > 0 and header[position - 1] == ";":
            position -= 1
        elif position > 0 and header[position - 1] not in _OWS and header[position - 1] != ",":
            return None


def _pair_before(header: str, end: int) -> tuple[int, str, str] | None:
    """The ``name=value`` pair ending at ``end``: where it starts, its name (lower case), value."""
    position = end
    if header[position - 1] == '"':
        opening = position - 1
        while True:
            opening = header.rfind('"', 0, opening)
            if opening < 0:
                return None
            backslashes = opening
            while backslashes > 0 and header[backslashes - 1] == "\\":
                backslashes -= 1
            if (opening - backslashes) % 2 == 0:  # not an escaped quote
                break
        quoted = header[opening + 1 : position - 1]
        if _QUOTED_TEXT.fullmatch(quoted) is None:
            return None
        value = _QUOTED_PAIR.sub(r"\1", quoted) if "\\" in quoted else quoted
        position = opening
    else:
        while position > 0 and header[position - 1] in _TOKEN:
            position -= 1
        value = header[position:end]
        if not value:
            return None
    if position == 0 or header[position - 1] != "=":
        return None
    name_end = position - 1
    position = name_end
    while position > 0 and header[position - 1] in _TOKEN:
        position -= 1
    if position == name_end:
        return None
    return position, header[position:name_end].lower(), value


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5  # noqa: PLR2004
