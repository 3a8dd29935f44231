"""The client address: the peer, or what trusted proxies forwarded in X-Forwarded-For."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from service.http.proxies import TrustedProxies
from service.settings import SettingsError
from tests.live import running_server


def scope(peer: str, forwarded: str | None = None, header: bytes = b"x-forwarded-for") -> Any:
    headers = [] if forwarded is None else [(header, forwarded.encode("latin-1"))]
    return {"type": "http", "client": (peer, 4321), "headers": headers}


@pytest.mark.parametrize(
    ("setting", "peer", "forwarded", "client"),
    [
        # Trust none (the default): the header is the client's word, ignored.
        ("", "127.0.0.1", "203.0.113.7", "127.0.0.1"),
        # The peer is a trusted proxy: the right-most address it did not vouch for.
        ("127.0.0.1", "127.0.0.1", "203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", "127.0.0.1", "6.6.6.6, 203.0.113.7", "203.0.113.7"),
        ("10.0.0.0/8, 127.0.0.1", "127.0.0.1", "6.6.6.6, 203.0.113.7, 10.1.2.3", "203.0.113.7"),
        # Every hop trusted: the left-most address.
        ("10.0.0.0/8", "10.0.0.1", "10.9.9.9, 10.1.2.3", "10.9.9.9"),
        # A peer that is not trusted cannot forge its address.
        ("10.0.0.0/8", "192.0.2.1", "203.0.113.7", "192.0.2.1"),
        # "*" trusts every peer.
        ("*", "192.0.2.1", "203.0.113.7", "203.0.113.7"),
        # No header, or garbage in it: the last address a trusted hop vouched for.
        ("127.0.0.1", "127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1", "not-an-ip", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1", "2001:db8::1", "2001:db8::1"),
        # Entries with a port, as some proxies append them: the address alone.
        ("127.0.0.1", "127.0.0.1", "203.0.113.7:5555", "203.0.113.7"),
        ("127.0.0.1", "127.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
        ("127.0.0.1", "127.0.0.1", "[2001:db8::1]", "2001:db8::1"),
        ("10.0.0.0/8", "10.0.0.1", "203.0.113.7:1, 10.1.2.3:8080", "203.0.113.7"),
        ("127.0.0.1", "127.0.0.1", "203.0.113.7:", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1", "203.0.113.7:x", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1", "[2001:db8::1]x", "127.0.0.1"),
        # Written one way: upper case, zeros, IPv4-mapped IPv6, a mapped peer.
        ("127.0.0.1", "127.0.0.1", "2001:DB8:0:0::1", "2001:db8::1"),
        ("127.0.0.1", "127.0.0.1", "::ffff:203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", "::ffff:127.0.0.1", "203.0.113.7", "203.0.113.7"),
        ("127.0.0.1", "::ffff:127.0.0.1", None, "127.0.0.1"),
    ],
)
def test_client_is_the_rightmost_address_not_a_trusted_proxy(
    setting: str, peer: str, forwarded: str | None, client: str
) -> None:
    assert TrustedProxies(setting).client(scope(peer, forwarded)) == client


def test_invalid_forwarded_allow_ips_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="FORWARDED_ALLOW_IPS"):
        TrustedProxies("127.0.0.1, localhost")


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        ("for=203.0.113.7", "203.0.113.7"),
        ('for="203.0.113.7:5555"', "203.0.113.7"),
        ('for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        ("For=203.0.113.7;proto=https;by=127.0.0.1", "203.0.113.7"),
        ("proto=https;for=203.0.113.7", "203.0.113.7"),
        ("for=6.6.6.6, for=203.0.113.7", "203.0.113.7"),
        ("for=203.0.113.7, for=127.0.0.1", "203.0.113.7"),
        ('for=203.0.113.7;x="a, for=6.6.6.6"', "203.0.113.7"),
        ("for=unknown", "127.0.0.1"),
        ("for=_hidden, for=203.0.113.7", "203.0.113.7"),
        ("proto=https", "127.0.0.1"),
        ("for=", "127.0.0.1"),
        ("garbage", "127.0.0.1"),
        # Quoted-pairs, and commas and semicolons inside quotes.
        ('for="203.0.113.7";x="a\\"b, c;d"', "203.0.113.7"),
        ('for=6.6.6.6, for="203.0.113.7";x="\\\\"', "203.0.113.7"),
        ("for=6.6.6.6, ;for=203.0.113.7;", "203.0.113.7"),
        ("for=6.6.6.6 ,\tfor=203.0.113.7 ", "203.0.113.7"),
        # Not RFC 7239's grammar: the walk stops at the last trusted hop.
        ('for=203.0.113.7;x="', "127.0.0.1"),
        ('for=203.0.113.7;x="a\\"', "127.0.0.1"),
        ("for=203.0.113.7;for=6.6.6.6", "127.0.0.1"),
        ("for = 203.0.113.7", "127.0.0.1"),
        ("for=203.0.113.7; proto=https", "127.0.0.1"),
        ("for=203.0.113.7:5555", "127.0.0.1"),
        ('for="2001:db8::1"', "127.0.0.1"),
        ("for=203.0.113.7\x85", "127.0.0.1"),
        # A client's unclosed quote does not swallow what the trusted proxies appended after it.
        ('for=6.6.6.6;x=", for="198.51.100.1:5555"', "198.51.100.1"),
        ('for=6.6.6.6;x=", for="[2001:db8::1]:443"', "2001:db8::1"),
        ('for=6.6.6.6;x=", for=198.51.100.1, for=127.0.0.1', "198.51.100.1"),
        ('for="6.6.6.6, for=198.51.100.1', "198.51.100.1"),
    ],
)
def test_forwarded_header_is_read_when_chosen(forwarded: str, client: str) -> None:
    proxies = TrustedProxies("127.0.0.1", "forwarded")

    assert proxies.client(scope("127.0.0.1", forwarded, b"forwarded")) == client


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        ("6.6.6.6 , 203.0.113.7\t", "203.0.113.7"),
        ("6.6.6.6, 203.0.113.7\x85", "127.0.0.1"),
        ("6.6.6.6, 203.0.113.7 x", "127.0.0.1"),
        ("6.6.6.6,, 203.0.113.7", "203.0.113.7"),
        ('6.6.6.6, "203.0.113.7"', "127.0.0.1"),
    ],
)
def test_an_x_forwarded_for_entry_that_is_not_an_address_stops_the_walk(
    forwarded: str, client: str
) -> None:
    proxies = TrustedProxies("127.0.0.1")

    assert proxies.client(scope("127.0.0.1", forwarded)) == client


def test_only_the_chosen_header_is_read() -> None:
    forged = scope("127.0.0.1", "for=6.6.6.6", b"forwarded")

    assert TrustedProxies("127.0.0.1").client(forged) == "127.0.0.1"
    assert TrustedProxies("127.0.0.1", "forwarded").client(scope("127.0.0.1", "6.6.6.6")) == (
        "127.0.0.1"
    )


@pytest.mark.live
@pytest.mark.parametrize(
    "appended",
    ['for="198.51.100.1:5555"', 'for="[2001:db8::1]:443"', "for=198.51.100.1"],
)
def test_a_client_cannot_pick_its_address_with_an_unclosed_quote(
    tmp_path: Path, appended: str
) -> None:
    # The client opens a quote; the trusted proxy appends its peer as RFC 7239 has it (quoted for
    # a port or an IPv6 address). Each request names another address, to escape the limit.
    with running_server(
        f"sqlite:///{tmp_path}/h.db",
        RATE_LIMIT_PER_MINUTE="3",
        FORWARDED_ALLOW_IPS="127.0.0.1",
        FORWARDED_HEADER="forwarded",
    ) as server:
        statuses = []
        for n in range(6):
            forwarded = f'for=203.0.113.{n};x=", {appended}'
            request = (
                f"GET /heroes HTTP/1.1\r\nHost: x\r\nForwarded: {forwarded}\r\n"
                "Connection: close\r\n\r\n"
            )
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(request.encode())
                statuses.append(int(sock.recv(64).split(b" ")[1]))

    assert statuses == [200] * 3 + [429] * 3
