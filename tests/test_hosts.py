"""The Host header: missing, repeated or malformed is 400 before anything builds a URL from it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from service.app import create_app
from service.http.errors import Error
from service.http.hosts import UnsupportedTarget, target_authority, valid_host
from service.settings import Settings
from tests.helpers import Answer, asgi_request

MALFORMED_HOSTS = [
    b"x:y",
    b"x:65536",
    b"x:0",
    b"x:",
    b"x:-1",
    b"x:99999999999999999999",
    b"[::1]:x",
    b"[::1",
    b"[::g]",
    b"[1.2.3.4]",
    b"a b",
    b"a/b",
    b"user@x",
    b"x?y",
    b"x#y",
    b"\xff",
    b"x\t",
]
WELL_FORMED_HOSTS = [
    b"heroes.example",
    b"heroes.example:8000",
    b"HEROES.example.:443",
    b"127.0.0.1:65535",
    b"[::1]",
    b"[2001:db8::1]:1",
    b"xn--hros-bpa.example",
    b"",
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    """An app with metrics on, whose middleware reads every request's URL."""
    database = tmp_path_factory.mktemp("hosts") / "h.db"
    settings = Settings(database_url=f"sqlite:///{database}", metrics=True)
    with TestClient[Litestar](create_app(settings)) as client:
        yield client


def assert_refused(answer: Answer) -> None:
    status, headers, body = answer
    assert status == 400, body
    assert headers[b"content-type"].startswith(b"application/json")
    assert len(headers[b"x-request-id"]) == 32
    assert msgspec.json.decode(body, type=Error).status_code == 400


@pytest.mark.parametrize("host", MALFORMED_HOSTS, ids=repr)
@pytest.mark.parametrize("path", ["/heroes", "/health/live", "/nowhere"])
def test_malformed_host_is_400_even_when_every_host_is_allowed(
    client: TestClient[Litestar], host: bytes, path: str
) -> None:
    assert_refused(asgi_request(client, [(b"host", host)], path=path))


@pytest.mark.parametrize("host", WELL_FORMED_HOSTS, ids=repr)
def test_well_formed_host_is_served(client: TestClient[Litestar], host: bytes) -> None:
    status, _, body = asgi_request(client, [(b"host", host)], path="/health/live")

    assert status == 200, body


def test_http_1_1_request_without_host_is_400(client: TestClient[Litestar]) -> None:
    assert_refused(asgi_request(client, [(b"accept", b"*/*")]))


def test_http_1_0_request_without_host_is_served(client: TestClient[Litestar]) -> None:
    status, _, _ = asgi_request(client, [], http_version="1.0")

    assert status == 200


@pytest.mark.parametrize("hosts", [[b"a", b"a"], [b"a", b"b"], [b"a", b"x:y"]])
def test_two_host_headers_are_400(client: TestClient[Litestar], hosts: list[bytes]) -> None:
    assert_refused(asgi_request(client, [(b"host", host) for host in hosts]))


def test_repeated_parameter_error_names_the_path_whatever_the_host(
    client: TestClient[Litestar],
) -> None:
    status, _, body = asgi_request(
        client, [(b"host", b"heroes.example:8000")], query=b"limit=1&limit=2"
    )

    assert status == 400
    assert msgspec.json.decode(body, type=Error).detail == "Validation failed for GET /heroes"


def test_host_with_a_bad_port_is_400_against_allowed_hosts_too(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'h.db'}", allowed_hosts="x")
    with TestClient[Litestar](create_app(settings)) as client:
        assert_refused(asgi_request(client, [(b"host", b"x:y")]))
        assert asgi_request(client, [(b"host", b"x:8000")], path="/health/live")[0] == 200


@pytest.mark.parametrize("host", MALFORMED_HOSTS, ids=repr)
def test_valid_host_refuses(host: bytes) -> None:
    assert not valid_host(host)


@pytest.mark.parametrize("host", WELL_FORMED_HOSTS, ids=repr)
def test_valid_host_accepts(host: bytes) -> None:
    assert valid_host(host)


@pytest.mark.parametrize(
    ("target", "authority"),
    [
        (b"/heroes", None),
        (b"/heroes?next=http://x/", None),
        (b"*", None),
        (b"heroes.example:443", None),
        (b"http://heroes.example/heroes", b"heroes.example"),
        (b"HTTPS://heroes.example:8443?limit=1", b"heroes.example:8443"),
        (b"http://[::1]:8000#x", b"[::1]:8000"),
        (b"http://user@heroes.example/", b"user@heroes.example"),
        (b"http:///heroes", b""),
    ],
)
def test_target_authority(target: bytes, authority: bytes | None) -> None:
    assert target_authority(target) == authority


def test_target_authority_refuses_other_schemes() -> None:
    with pytest.raises(UnsupportedTarget):
        target_authority(b"ftp://heroes.example/heroes")
