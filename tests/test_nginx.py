"""``deploy/nginx.conf`` in front of a live service: clients, hosts, limits and timeouts.

The committed file is the one users copy; the test changes only its two addresses (where nginx
listens, where the service does) and runs it with Debian's nginx inside a minimal main
configuration, as ``/etc/nginx/nginx.conf`` includes ``conf.d/*.conf``.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service import serving
from service.settings import Settings
from tests.conftest import IN_CI
from tests.helpers import assert_error, new_hero
from tests.live import Server, free_port

NGINX_CONF = Path(__file__).parents[1] / "deploy" / "nginx.conf"
CONF = NGINX_CONF.read_text(encoding="utf-8")
SERVICE_ADDRESS = "server 127.0.0.1:8000;"
LISTEN = "listen 80;"
HOST = "api.example.com"
RATE_LIMIT = 3
UPSTREAM, _, SERVER = CONF.partition("server {")
"""The file's upstream block (the service, as nginx connects to it), and its server block."""


def directive(name: str, block: str = SERVER) -> str:
    """The value of the one ``name`` directive of ``block``."""
    (value,) = re.findall(rf"^\s*{name}\s+([^;]+);", block, flags=re.MULTILINE)
    return str(value).strip()


def seconds(value: str) -> float:
    """An nginx time (``10s``, ``1m``) in seconds."""
    number, unit = re.fullmatch(r"(\d+)(ms|s|m)?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[unit]


def size(value: str) -> int:
    """An nginx size (``16k``, ``1m``) in bytes."""
    number, unit = re.fullmatch(r"(\d+)([kKmM])?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"k": 1024, "m": 1024 * 1024, None: 1}[unit and unit.lower()]


# The file agrees with the service's settings (no nginx needed) -------------------------------


def test_the_body_limit_is_the_services() -> None:
    assert size(directive("client_max_body_size")) == Settings().max_body_size


def test_nginx_waits_for_a_slow_client_no_longer_than_the_service_would() -> None:
    defaults = Settings()

    assert seconds(directive("client_header_timeout")) == defaults.request_head_timeout
    assert seconds(directive("client_body_timeout")) == defaults.request_body_timeout


def test_nginx_lets_go_of_an_idle_connection_to_the_service_before_the_service_does() -> None:
    assert seconds(directive("keepalive_timeout", UPSTREAM)) < serving.KEEP_ALIVE_SECONDS
    assert seconds(directive("keepalive_timeout")) == serving.KEEP_ALIVE_SECONDS


def test_nginx_waits_for_an_answer_as_long_as_the_service_may_take() -> None:
    defaults = Settings()
    slowest_statement = max(defaults.db_statement_timeout_ms, defaults.sqlite_busy_timeout_ms)
    slowest = defaults.db_pool_timeout + slowest_statement / 1000

    assert seconds(directive("proxy_read_timeout")) > slowest


# nginx in front of a live service ------------------------------------------------------------


class Nginx:
    """Debian's nginx running the committed file, in front of the service on ``service_port``."""

    def __init__(self, service_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.directory = Path(tempfile.mkdtemp(prefix="hero-nginx-"))
        self.directory.chmod(0o755)  # nginx's workers (nobody) keep request bodies here
        assert CONF.count(SERVICE_ADDRESS) == 1
        assert CONF.count(LISTEN) == 1
        site = CONF.replace(SERVICE_ADDRESS, f"server 127.0.0.1:{service_port};").replace(
            LISTEN, f"listen 127.0.0.1:{self.port};"
        )
        (self.directory / "hero-service.conf").write_text(site, encoding="utf-8")
        (self.directory / "nginx.conf").write_text(
            f"""daemon off;
worker_processes 1;
pid {self.directory}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {self.directory}/body;
    proxy_temp_path {self.directory}/proxy;
    fastcgi_temp_path {self.directory}/fastcgi;
    uwsgi_temp_path {self.directory}/uwsgi;
    scgi_temp_path {self.directory}/scgi;
    include {self.directory}/hero-service.conf;
}}
""",
            encoding="utf-8",
        )
        self.log = self.directory / "error.log"
        self.process = subprocess.Popen(
            ["nginx", "-p", str(self.directory), "-c", "nginx.conf", "-e", str(self.log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while True:
            assert self.process.poll() is None, f"nginx exited: {self.errors()}"
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            assert time.monotonic() < deadline, f"nginx did not listen: {self.errors()}"
            time.sleep(0.05)

    def errors(self) -> str:
        """nginx's error log."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def client(self, address: str = "127.0.0.1") -> httpx.Client:
        """A client connecting to nginx from ``address`` (any of 127.0.0.0/8), for ``HOST``."""
        return httpx.Client(
            base_url=self.url,
            headers={"Host": HOST},
            transport=httpx.HTTPTransport(local_address=address),
            timeout=10,
        )

    def stop(self) -> None:
        """Stop nginx and remove its files."""
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def nginx_installed() -> None:
    if shutil.which("nginx") is None:
        reason = "nginx is not installed (apt-get install nginx)"
        if IN_CI:
            pytest.fail(f"CI must run deploy/nginx.conf: {reason}")
        pytest.skip(reason)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Server]:
    """The service as the file's header says to run it behind nginx, with a low rate limit."""
    server = Server(
        f"sqlite:///{tmp_path}/heroes.db",
        log=tmp_path / "service.log",
        FORWARDED_ALLOW_IPS="127.0.0.1",
        ALLOWED_HOSTS=f"{HOST},127.0.0.1",
        RATE_LIMIT_PER_MINUTE=str(RATE_LIMIT),
        ACCESS_LOG="true",
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nginx(nginx_installed: None, service: Server) -> Iterator[Nginx]:
    proxy = Nginx(service.port)
    try:
        yield proxy
    finally:
        proxy.stop()


def logged_clients(log: Path, count: int) -> list[str]:
    """The ``client`` of the access log lines for ``/heroes``, once ``count`` are written."""
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        clients = [line["client"] for line in lines if line.get("path") == "/heroes"]
        if len(clients) >= count or time.monotonic() > deadline:
            return clients
        time.sleep(0.05)


@pytest.mark.live
@pytest.mark.deploy
def test_the_service_counts_each_client_behind_nginx_not_nginx(
    nginx: Nginx, service: Server
) -> None:
    with nginx.client("127.0.0.2") as first, nginx.client("127.0.0.3") as second:
        # A client cannot choose its address by sending the header nginx appends to.
        forged = {"X-Forwarded-For": "198.51.100.7"}
        first_answers = [first.get("/heroes", headers=forged) for _ in range(RATE_LIMIT + 1)]
        second_answer = second.get("/heroes")

    assert [r.status_code for r in first_answers[:RATE_LIMIT]] == [200] * RATE_LIMIT
    assert_error(first_answers[RATE_LIMIT], 429)
    assert second_answer.status_code == 200
    expected = ["127.0.0.2"] * (RATE_LIMIT + 1) + ["127.0.0.3"]
    assert logged_clients(service.log, len(expected)) == expected


@pytest.mark.live
@pytest.mark.deploy
def test_nginx_passes_the_clients_host_on_to_the_services_host_check(nginx: Nginx) -> None:
    with nginx.client() as client:
        served = client.post("/heroes", json=new_hero("Hosted"))
        other_host = client.get("/heroes", headers={"Host": "other.example.com"})

    assert served.status_code == 201, served.text
    assert served.headers["location"] == f"/heroes/{served.json()['id']}"
    assert "Host" in assert_error(other_host, 400).detail


@pytest.mark.live
@pytest.mark.deploy
def test_a_body_over_the_limit_gets_from_nginx_the_services_own_413(
    nginx: Nginx, service: Server
) -> None:
    too_large = b'{"name": "' + b"x" * Settings().max_body_size + b'", "secret_name": "s"}'
    headers = {"Content-Type": "application/json"}
    with nginx.client() as client:
        from_nginx = client.post("/heroes", content=too_large, headers=headers)
    from_the_service = httpx.post(f"{service.url}/heroes", content=too_large, headers=headers)

    assert_error(from_nginx, 413)
    assert from_nginx.content == from_the_service.content
    assert logged_clients(service.log, 1) == ["127.0.0.1"]  # the direct request only


@pytest.mark.live
@pytest.mark.deploy
def test_nginx_answers_503_with_retry_after_while_the_service_is_down(
    nginx: Nginx, service: Server
) -> None:
    service.stop()
    with nginx.client() as client:
        answer = client.get("/heroes")

    assert_error(answer, 503)
    assert answer.headers["retry-after"] == "1"
