"""The rate limit in one app: its headers, and what happens when Redis goes away."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
from litestar import Litestar
from litestar.testing import TestClient

from service.app import create_app
from service.http.limits import WINDOW_SECONDS, WorkerCounter, client_key
from service.settings import Settings
from tests.conftest import IN_CI
from tests.helpers import assert_error
from tests.live import free_port


def test_admitted_answers_carry_the_window(tmp_path: object) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/h.db", rate_limit_per_minute=5)
    with TestClient[Litestar](create_app(settings)) as client:
        first, second = client.get("/heroes"), client.head("/heroes")

    assert first.headers["ratelimit-limit"] == "5"
    assert (first.headers["ratelimit-remaining"], second.headers["ratelimit-remaining"]) == (
        "4",
        "3",
    )
    assert 1 <= int(first.headers["ratelimit-reset"]) <= 60
    assert first.headers["ratelimit-policy"] == "5; w=60"


def test_a_new_windows_reset_is_never_past_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock reading at which (now + 60) - now is 60.00000000000182 in floating point.
    monkeypatch.setattr(time, "monotonic", lambda: 16338.302431481612)

    window = asyncio.run(WorkerCounter().hit("203.0.113.1"))

    assert window.reset == WINDOW_SECONDS


@pytest.mark.parametrize(
    ("addresses", "statuses"),
    [
        pytest.param(
            ["203.0.113.1", "203.0.113.2", "203.0.113.1"],
            [200, 200, 429],
            id="each-forwarded-client-has-its-own-count",
        ),
        pytest.param(
            ["203.0.113.1:5555", "[2001:db8::1]:443", "203.0.113.1:6666"],
            [200, 200, 429],
            id="addresses-with-a-port-count-as-the-address",
        ),
        pytest.param(
            ["2001:db8:0:1::1", "2001:db8:0:1:ffff::2", "2001:db8:0:2::1"],
            [200, 429, 200],
            id="ipv6-clients-are-counted-per-64",
        ),
    ],
)
def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(
    tmp_path: object, addresses: list[str], statuses: list[int]
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/h.db", rate_limit_per_minute=1, forwarded_allow_ips="*"
    )
    with TestClient[Litestar](create_app(settings)) as client:
        answered = [
            client.get("/heroes", headers={"X-Forwarded-For": address}).status_code
            for address in addresses
        ]

    assert answered == statuses


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::1", "::/64"),
        ("testclient", "testclient"),
    ],
)
def test_client_key(address: str, key: str) -> None:
    assert client_key(address) == key


class RedisServer:
    """A Redis server of the test's own, to stop and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None:
                    raise RuntimeError("redis-server exited") from None
                time.sleep(0.1)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("CI must test a Redis outage: redis-server is not installed")
        pytest.skip("redis-server is not installed")
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def test_when_redis_goes_away_requests_pass_uncounted_and_the_limit_comes_back_with_it(
    own_redis: RedisServer, tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/h.db",
        rate_limit_per_minute=2,
        redis_url=own_redis.url,
    )
    service_log = logging.getLogger("service")
    with TestClient[Litestar](create_app(settings)) as client:
        # After startup, which configures the service's loggers.
        service_log.addHandler(caplog.handler)
        try:
            with_redis = [client.get("/heroes").status_code for _ in range(3)]
            own_redis.stop()
            during_outage = [client.get("/heroes") for _ in range(3)]
            own_redis.start()
            after_outage = [client.get("/heroes").status_code for _ in range(3)]
            refused = client.get("/heroes")
        finally:
            service_log.removeHandler(caplog.handler)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert with_redis == [200, 200, 429]
    assert [r.status_code for r in during_outage] == [200, 200, 200]
    assert all("ratelimit-limit" not in r.headers for r in during_outage)
    assert len([w for w in warnings if "Redis is unreachable" in w]) == 1, warnings
    assert after_outage == [200, 200, 429]
    assert_error(refused, 429)
