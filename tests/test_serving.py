"""``python -m service`` on an open address and over TLS; its open files and connection cap."""

from __future__ import annotations

import os
import resource
import socket
import ssl
import subprocess
import sys
import warnings
from pathlib import Path

import httpx
import pytest

from service.serving import connection_cap, is_loopback, raise_open_file_limit, tls_context
from service.settings import Settings, SettingsError
from tests.live import free_port, running_server


def serve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m service`` expecting it to stop by itself; its exit and output."""
    environ = {
        k: v for k, v in os.environ.items() if k not in ("API_KEY", "ALLOW_ANONYMOUS_WRITES")
    }
    return subprocess.run(
        [sys.executable, "-m", "service", "--port", str(free_port()), *args],
        env={**environ, "DATABASE_URL": "sqlite:///:memory:", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_serving_writes_to_anyone_off_loopback_is_refused_at_startup(host: str) -> None:
    stopped = serve("--host", host)

    assert stopped.returncode != 0
    assert "API_KEY" in stopped.stderr
    assert "ALLOW_ANONYMOUS_WRITES=true" in stopped.stderr


@pytest.mark.live
def test_open_writes_off_loopback_are_served_when_allowed_on_purpose(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with running_server(
        f"sqlite:///{tmp_path}/h.db",
        log=log,
        args=("--host", "0.0.0.0"),
        ALLOW_ANONYMOUS_WRITES="true",
    ) as server:
        created = httpx.post(f"{server.url}/heroes", json={"name": "A", "secret_name": "s"})

    assert created.status_code == 201
    assert "ALLOW_ANONYMOUS_WRITES is true" in log.read_text()


@pytest.mark.live
def test_off_loopback_with_an_api_key_serves_writes_with_the_key_only(tmp_path: Path) -> None:
    with running_server(
        f"sqlite:///{tmp_path}/h.db",
        args=("--host", "0.0.0.0"),
        API_KEY="k1",
    ) as server:
        hero = {"name": "A", "secret_name": "s"}
        refused = httpx.post(f"{server.url}/heroes", json=hero)
        created = httpx.post(
            f"{server.url}/heroes", json=hero, headers={"Authorization": "Bearer k1"}
        )

    assert (refused.status_code, created.status_code) == (401, 201)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.1", False),
        ("name.invalid", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_connection_cap_stays_below_the_open_files() -> None:
    settings = Settings(db_pool_size=10, db_max_overflow=5)

    assert connection_cap(settings, 1024) == 1024 - 64 - 15
    assert connection_cap(Settings(worker_connections=100), 1024) == 100
    assert connection_cap(Settings(worker_connections=5000), 1024) == 1024 - 64 - 10
    with pytest.raises(SettingsError):
        connection_cap(settings, 79)


def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        assert raise_open_file_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.live
def test_tls_serves_https_with_hsts(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    with running_server(
        f"sqlite:///{tmp_path}/h.db", TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(key)
    ) as server:
        assert server.url.startswith("https://")
        with httpx.Client(verify=ssl.create_default_context(cafile=cert)) as https:
            answer = https.get(f"{server.url}/health/live")
            too_large = https.get(f"{server.url}/heroes", headers={"X-Big": "a" * 20_000})
        old_tls = handshake(server.port, ssl.TLSVersion.TLSv1_1)
        plain = plain_http(server.port)

    assert answer.status_code == 200
    assert answer.headers["strict-transport-security"] == "max-age=31536000"
    assert too_large.status_code == 431
    assert too_large.headers["strict-transport-security"] == "max-age=31536000"
    assert old_tls is None
    assert not plain.startswith(b"HTTP/1.1 200")


def handshake(port: int, version: ssl.TLSVersion) -> str | None:
    """The TLS version a client offering only ``version`` gets, or None when refused."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            with context.wrap_socket(sock) as tls:
                return tls.version()
        except (ssl.SSLError, ConnectionResetError):
            return None


def plain_http(port: int) -> bytes:
    """What a plain-HTTP request to the TLS port gets."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            return sock.recv(65536)
        except ConnectionResetError:
            return b""


def test_tls_context_is_tls_1_2_or_later(certificate: tuple[Path, Path]) -> None:
    context = tls_context(str(certificate[0]), str(certificate[1]))

    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_an_encrypted_key_loads_with_its_password_and_never_prompts(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    encrypted = tmp_path / "encrypted.pem"
    subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(key),
            "-aes256",
            "-passout",
            "pass:s3cret",
            "-out",
            str(encrypted),
        ],
        check=True,
    )

    assert tls_context(str(cert), str(encrypted), "s3cret")
    with pytest.raises(ssl.SSLError):
        tls_context(str(cert), str(encrypted))  # no password: refused at once, not asked for


@pytest.mark.parametrize(
    ("variable", "problem", "said"),
    [
        ("TLS_CERT_FILE", "missing", "TLS_CERT_FILE"),
        ("TLS_KEY_FILE", "missing", "TLS_KEY_FILE"),
        ("TLS_CERT_FILE", "a directory", "TLS_CERT_FILE"),
        ("TLS_KEY_FILE", "not a key", "TLS_KEY_FILE"),
        ("TLS_KEY_PASSWORD", "wrong", "TLS_KEY_PASSWORD"),
    ],
)
def test_tls_files_that_do_not_load_stop_startup_naming_the_variable(
    tmp_path: Path, certificate: tuple[Path, Path], variable: str, problem: str, said: str
) -> None:
    cert, key = certificate
    env = {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)}
    if problem == "missing":
        env[variable] = str(tmp_path / "nowhere.pem")
    elif problem == "a directory":
        env[variable] = str(tmp_path)
    elif problem == "not a key":
        (tmp_path / "junk.pem").write_text("not a key\n")
        env[variable] = str(tmp_path / "junk.pem")
    else:
        encrypted = tmp_path / "encrypted.pem"
        subprocess.run(
            [
                "openssl",
                "pkey",
                "-in",
                str(key),
                "-aes256",
                "-passout",
                "pass:right",
                "-out",
                str(encrypted),
            ],
            check=True,
        )
        env |= {"TLS_KEY_FILE": str(encrypted), variable: "wrong"}

    stopped = serve(**env)

    assert stopped.returncode != 0
    assert said in stopped.stderr.splitlines()[-1], stopped.stderr
