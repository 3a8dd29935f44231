"""The client address: the peer, or what trusted proxies forwarded in X-Forwarded-For."""

from __future__ import annotations

from typing import Any

import pytest

from service.http.proxies import TrustedProxies
from service.settings import SettingsError


def scope(peer: str, forwarded: str | None = None) -> Any:
    headers = [] if forwarded is None else [(b"x-forwarded-for", forwarded.encode())]
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
    ],
)
def test_client_is_the_rightmost_address_not_a_trusted_proxy(
    setting: str, peer: str, forwarded: str | None, client: str
) -> None:
    assert TrustedProxies(setting).client(scope(peer, forwarded)) == client


def test_invalid_forwarded_allow_ips_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="FORWARDED_ALLOW_IPS"):
        TrustedProxies("127.0.0.1, localhost")
