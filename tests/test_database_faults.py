"""A database that goes away gives 503 with Retry-After, never a 500 or a hang, then recovers."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from litestar import Litestar
from litestar.testing import TestClient

from service.app import create_app
from service.settings import Settings
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
