"""The Host header: missing, repeated or malformed is 400 before anything builds a URL from it."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
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
from tests.helpers import Answer, asgi_request, self_signed_certificate
from tests.live import Server, running_server

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


def status_for_host(server: Server, path: str, host: str) -> int:
    """The status of ``GET path`` with ``Host: host``, sent over plain HTTP on a new connection."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request.encode())
        return int(sock.recv(64).split(b" ")[1])


@pytest.mark.live
def test_health_checks_answer_any_host_where_allowed_hosts_refuses_it(tmp_path: Path) -> None:
    # A kubelet probes the pod's IP; the image's HEALTHCHECK, 127.0.0.1.
    with running_server(f"sqlite:///{tmp_path}/h.db", ALLOWED_HOSTS="heroes.example") as server:
        probes = {
            (path, host): status_for_host(server, path, host)
            for path in ("/health/live", "/health/ready", "/health/ready/")
            for host in ("10.1.2.3:8000", f"127.0.0.1:{server.port}")
        }
        heroes = [
            status_for_host(server, "/heroes", host) for host in ("10.1.2.3", "heroes.example")
        ]
        malformed = status_for_host(server, "/health/live", "10.1.2.3:x")

    assert set(probes.values()) == {200}, probes
    assert heroes == [400, 200]
    assert malformed == 400


def image_healthcheck() -> list[str]:
    """The command of the Containerfile's HEALTHCHECK (its exec form)."""
    containerfile = (Path(__file__).parents[1] / "Containerfile").read_text(encoding="utf-8")
    found = re.search(r"^HEALTHCHECK .*?CMD (\[.*?\])$", containerfile, re.MULTILINE | re.DOTALL)
    assert found, "no HEALTHCHECK in the Containerfile"
    command: list[str] = json.loads(found[1])
    return [sys.executable if command[0] == "python" else command[0], *command[1:]]


@pytest.mark.live
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_the_image_healthcheck_passes_with_allowed_hosts_and_tls_set(
    tmp_path: Path, tls: bool
) -> None:
    cert, key = self_signed_certificate(tmp_path) if tls else ("", "")
    env = {"ALLOWED_HOSTS": "heroes.example", "TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)}
    with running_server(
        f"sqlite:///{tmp_path}/h.db",
        ALLOWED_HOSTS=env["ALLOWED_HOSTS"],
        TLS_CERT_FILE=env["TLS_CERT_FILE"],
        TLS_KEY_FILE=env["TLS_KEY_FILE"],
    ) as server:
        check = subprocess.run(
            image_healthcheck(),
            env={**os.environ, **env, "PORT": str(server.port)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        server.stop()
        stopped = subprocess.run(
            image_healthcheck(),
            env={**os.environ, **env, "PORT": str(server.port)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    assert check.returncode == 0, check.stderr
    assert stopped.returncode != 0
    assert len(stopped.stderr.strip().splitlines()) == 1, stopped.stderr
