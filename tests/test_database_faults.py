"""A database that goes away gives 503 with Retry-After, never a 500 or a hang, then recovers.

On PostgreSQL, and on PostgreSQL behind PgBouncer: there also a pool whose server connections
are all taken.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from litestar import Litestar
from litestar.testing import TestClient

from service.app import create_app
from service.settings import Settings
from tests import pgbouncer
from tests.conftest import IN_CI
from tests.helpers import Client, assert_error, create, new_hero


class TcpProxy:
    """A local port forwarded to the database; ``stop`` drops every connection, like a restart."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._open: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def start(self) -> None:
        """Listen (again, on the same port) and forward every connection to the target."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        for sock in [*self._open, *([self._listener] if self._listener else [])]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            sock.close()
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[TcpProxy]:
    url = sa.make_url(postgres_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def proxied_client(postgres_url: str, proxy: TcpProxy) -> Iterator[Client]:
    url = sa.make_url(postgres_url).set(port=proxy.port)
    settings = Settings(
        database_url=url.render_as_string(hide_password=False), db_connect_timeout=2
    )
    with TestClient[Litestar](create_app(settings)) as client:
        yield client


def test_postgres_going_away_is_503_with_retry_after_and_recovery_is_automatic(
    proxied_client: Client, proxy: TcpProxy
) -> None:
    hero = create(proxied_client, "Before")

    proxy.stop()
    during = [
        proxied_client.get(f"/heroes/{hero['id']}"),
        proxied_client.post("/heroes", json=new_hero("During")),
        proxied_client.get("/heroes"),
        proxied_client.get("/health/ready"),
    ]
    proxy.start()
    after = proxied_client.get(f"/heroes/{hero['id']}")

    for response in during:
        assert_error(response, 503)
        assert response.headers["retry-after"] == "1"
    assert proxied_client.get("/health/live").status_code == 200
    assert after.json() == hero
    assert [h["name"] for h in proxied_client.get("/heroes").json()] == ["Before"]


# Behind PgBouncer ----------------------------------------------------------------------------


@pytest.fixture
def bouncer_before_proxy(
    postgres_database: str, proxy: TcpProxy
) -> Iterator[tuple[pgbouncer.PgBouncer, str]]:
    """PgBouncer (as deploy/ has it) whose PostgreSQL is behind ``proxy``; the app's URL."""
    if reason := pgbouncer.missing():
        if IN_CI:
            pytest.fail(f"CI must test PostgreSQL through PgBouncer too: {reason}")
        pytest.skip(reason)
    user = sa.make_url(postgres_database).username
    with pgbouncer.PgBouncer(("127.0.0.1", proxy.port), user=user, pool_size=1) as bouncer:
        yield bouncer, bouncer.url(postgres_database)


def test_postgres_going_away_behind_pgbouncer_is_503_and_recovery_is_automatic(
    bouncer_before_proxy: tuple[pgbouncer.PgBouncer, str], proxy: TcpProxy
) -> None:
    _, url = bouncer_before_proxy
    settings = Settings(database_url=url, db_pooler="transaction", db_connect_timeout=2)
    with TestClient[Litestar](create_app(settings)) as client:
        hero = create(client, "Before")

        proxy.stop()
        during = [
            client.get(f"/heroes/{hero['id']}"),
            client.post("/heroes", json=new_hero("During")),
            client.get("/heroes"),
            client.get("/health/ready"),
        ]
        proxy.start()
        # PgBouncer connects again server_login_retry (1 s in deploy/pgbouncer.ini) after it
        # last failed to; until then it refuses at once.
        after = client.get(f"/heroes/{hero['id']}")
        for _ in range(50):
            if after.status_code == 200:
                break
            assert_error(after, 503)
            time.sleep(0.1)
            after = client.get(f"/heroes/{hero['id']}")

        names = [h["name"] for h in client.get("/heroes").json()]

    for response in during:
        assert_error(response, 503)
        assert response.headers["retry-after"] == "1"
    assert after.json() == hero
    assert "During" not in names


@contextlib.contextmanager
def every_server_session_taken(url: str) -> Iterator[None]:
    """A transaction held open through PgBouncer, on its only server session, until the end."""
    with psycopg.connect(url, prepare_threshold=None) as holder:
        holder.execute("SELECT 1")  # begins the transaction: PgBouncer keeps the session for it
        yield
        holder.rollback()


@pytest.mark.parametrize("query_wait_timeout", ["1", "120"])
def test_a_full_pgbouncer_pool_is_503_with_retry_after_never_a_hang(
    postgres_database: str, query_wait_timeout: str
) -> None:
    """PgBouncer's queue gives up after its query_wait_timeout, as deploy/ sets it (the service's
    DB_POOL_TIMEOUT); with PgBouncer's default, 120 s, the service's own bound ends the wait."""
    if reason := pgbouncer.missing():
        if IN_CI:
            pytest.fail(f"CI must test PostgreSQL through PgBouncer too: {reason}")
        pytest.skip(reason)
    target = sa.make_url(postgres_database)
    with pgbouncer.PgBouncer(
        (target.host or "127.0.0.1", target.port or 5432),
        user=target.username,
        pool_size=1,
        query_wait_timeout=query_wait_timeout,
    ) as bouncer:
        url = bouncer.url(postgres_database)
        settings = Settings(
            database_url=url,
            db_pooler="transaction",
            db_pool_timeout=1,
            db_statement_timeout_ms=1000,
        )
        with TestClient[Litestar](create_app(settings)) as client:
            hero = create(client, "Before")
            with every_server_session_taken(url):
                waited = [client.post("/heroes", json=new_hero("Waited"))]
                if query_wait_timeout == "1":  # each wait on the service's own bound takes 7 s
                    waited.append(client.get(f"/heroes/{hero['id']}"))
            after = client.get("/heroes")

    for response in waited:
        assert_error(response, 503)
        assert response.headers["retry-after"] == "1"
    names = [h["name"] for h in after.json()]
    assert "Before" in names
    assert "Waited" not in names  # PgBouncer never sent it to PostgreSQL
