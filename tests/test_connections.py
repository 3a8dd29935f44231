"""The server's connections: slow and stuck clients, oversized heads, the connection cap.

Live: each test runs ``python -m service`` and speaks HTTP/1.1 to it over raw sockets, as
clients that misbehave do.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from service.http.errors import Error
from tests.live import Server, run_slow_clients, running_server

pytestmark = pytest.mark.live

SLOW_CLIENTS = 1100
HEAD_TIMEOUT = 2.0


def exchange(server: Server, *parts: bytes, pause: float = 0.0, wait: float = 5.0) -> bytes:
    """Send ``parts`` on a new connection, ``pause`` seconds apart; read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        for part in parts:
            sock.sendall(part)
            time.sleep(pause)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def read_answer(sock: socket.socket) -> bytes:
    """One whole answer (its head and ``Content-Length`` bytes of body) from ``sock``."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def assert_error_answer(answer: bytes, status: int) -> dict[str, str]:
    """An answer of ``status`` in the Error shape, with a request id; its headers."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert status_of(answer) == status, answer
    assert headers["content-type"] == "application/json"
    assert len(headers["x-request-id"]) == 32
    assert msgspec.json.decode(body, type=Error).status_code == status
    return headers


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    database = tmp_path_factory.mktemp("connections") / "h.db"
    with running_server(
        f"sqlite:///{database}",
        REQUEST_HEAD_TIMEOUT="1",
        REQUEST_BODY_TIMEOUT="1",
        MAX_HEADER_SIZE="8192",
    ) as server:
        yield server


def test_a_head_that_never_ends_is_408_and_closed(server: Server) -> None:
    started = time.monotonic()
    answer = exchange(server, b"GET /heroes HTTP/1.1\r\nHost: x\r\n", b"X-Slow: 1\r\n", pause=0.4)

    assert_error_answer(answer, 408)
    assert time.monotonic() - started < 3


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    assert exchange(server) == b""


def test_a_kept_alive_connection_gets_the_head_time_from_its_next_first_byte(
    server: Server,
) -> None:
    request = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        first = read_answer(sock)
        time.sleep(1.5)  # idle longer than the head time: keep-alive's time applies
        sock.sendall(request)
        second = read_answer(sock)
        sock.sendall(b"GET /health/live HTTP/1.1\r\n")
        third = read_answer(sock)

    assert (status_of(first), status_of(second)) == (200, 200)
    assert_error_answer(third, 408)


def test_a_body_that_stalls_is_408_from_the_app_and_closed(server: Server) -> None:
    head = b"POST /heroes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    answer = exchange(server, head + b"Content-Length: 100\r\n\r\n", b'{"name": ')

    headers = assert_error_answer(answer, 408)
    assert headers["connection"] == "close"


def test_a_body_slower_than_the_body_time_but_steady_is_served(server: Server) -> None:
    # 1,600 bytes at 800 bytes per second: 2 s, past the 1 s, within 1 s + 1,600 / 500 s.
    body = b'{"name": "Slow", "secret_name": "s", "more": "' + b"m" * 1550 + b'"}'
    head = b"POST /heroes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    pieces = [body[i : i + 80] for i in range(0, len(body), 80)]
    answer = exchange(
        server,
        head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode(),
        *pieces,
        pause=0.1,
    )

    assert status_of(answer) == 201, answer


def test_a_head_over_the_bound_is_431(server: Server) -> None:
    answer = exchange(
        server, b"GET /heroes HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    )

    assert_error_answer(answer, 431)


def test_a_head_over_the_bound_in_two_reads_each_under_it_is_431(server: Server) -> None:
    head = b"GET /heroes HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 12000 + b"\r\n\r\n"
    answer = exchange(server, head[:7000], head[7000:], pause=0.1)

    assert_error_answer(answer, 431)


def test_a_header_line_sent_without_end_is_431_once_over_the_bound(server: Server) -> None:
    line = b"GET /heroes HTTP/1.1\r\nHost: x\r\nX-Big: "
    answer = exchange(server, line, *[b"a" * 4096] * 3, pause=0.05)

    assert_error_answer(answer, 431)


def test_a_request_line_over_the_bound_is_414(server: Server) -> None:
    answer = exchange(server, b"GET /heroes?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")

    assert_error_answer(answer, 414)


def test_bytes_that_are_not_http_are_400_in_the_error_shape(server: Server) -> None:
    assert_error_answer(exchange(server, b"\x00\x01 NOT HTTP\r\n\r\n"), 400)


@pytest.mark.parametrize(
    ("target", "host", "status"),
    [
        (b"http://heroes.example:8000/health/live", b"x", 200),
        (b"http://heroes.example:x/health/live", b"x", 400),
        (b"http://heroes.example:0/health/live", b"x", 400),
        (b"http://user@heroes.example/health/live", b"x", 400),
        (b"ftp://heroes.example/health/live", b"x", 400),
        (b"http://heroes.example/health/live", b"x:y", 200),
    ],
)
def test_an_absolute_form_target_is_checked_as_host(
    server: Server, target: bytes, host: bytes, status: int
) -> None:
    head = b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    answer = exchange(server, head)

    if status == 200:
        assert status_of(answer) == 200, answer
    else:
        assert_error_answer(answer, status)


def test_an_absolute_form_target_answers_for_its_own_host_only(tmp_path: Path) -> None:
    with running_server(
        f"sqlite:///{tmp_path}/h.db", ALLOWED_HOSTS="heroes.example, 127.0.0.1"
    ) as server:
        # The API's paths (the health checks answer any host).
        served = exchange(
            server,
            b"GET http://heroes.example/heroes HTTP/1.1\r\nHost: other\r\n"
            b"Connection: close\r\n\r\n",
        )
        refused = exchange(
            server,
            b"GET http://other/heroes HTTP/1.1\r\nHost: heroes.example\r\n"
            b"Connection: close\r\n\r\n",
        )

    assert status_of(served) == 200
    assert_error_answer(refused, 400)


def test_beyond_the_cap_idle_connections_make_room_else_503(tmp_path: Path) -> None:
    request = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    post = b"POST /heroes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    with running_server(
        f"sqlite:///{tmp_path}/h.db", WORKER_CONNECTIONS="2", REQUEST_BODY_TIMEOUT="2"
    ) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(2)]
        for sock in idle:
            sock.sendall(request)
            read_answer(sock)
        # A third connection closes the one idle longest to make room, and is served.
        served = exchange(server, request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        oldest_closed = idle[0].recv(65536) == b""
        # Two requests in progress (their bodies still to come): a new connection gets 503.
        busy = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(2)]
        for sock in busy:
            sock.sendall(post + b"Content-Length: 10\r\n\r\n{")
        time.sleep(0.3)
        refused = exchange(server, request)
        for sock in [*idle, *busy]:
            sock.close()

    assert status_of(served) == 200
    assert oldest_closed
    headers = assert_error_answer(refused, 503)
    assert headers["retry-after"] == "1"


def test_a_request_that_lacks_host_is_400_from_the_server_too(server: Server) -> None:
    assert_error_answer(exchange(server, b"GET /heroes HTTP/1.1\r\n\r\n"), 400)


@pytest.fixture
def open_files_for_the_clients() -> Iterator[None]:
    """Room in this process for the slow clients' sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < SLOW_CLIENTS + 200 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize(
    "hard_limit", ["unchanged", "1024"], ids=["soft-limit-1024", "hard-limit-1024"]
)
@pytest.mark.usefixtures("open_files_for_the_clients")
@pytest.mark.alone  # 1,100 slow connections, and how soon health checks are answered meanwhile
def test_slow_clients_leave_health_checks_answered_and_are_closed(
    tmp_path: Path, hard_limit: str
) -> None:
    """1,100 clients that never finish their heads, at a soft open-file limit of 1024.

    With the hard limit above it, the service raises its soft limit and serves them all until
    their time is up; with a hard limit of 1024 too, it keeps under its cap by closing the
    connections that waited longest. Either way another client's health check is answered.
    """
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1] if hard_limit == "unchanged" else 1024
    log = tmp_path / "server.log"
    with running_server(
        f"sqlite:///{tmp_path}/h.db",
        log=log,
        open_files=(1024, hard),
        REQUEST_HEAD_TIMEOUT=str(HEAD_TIMEOUT),
    ) as server:
        report = asyncio.run(
            run_slow_clients(server.url, connections=SLOW_CLIENTS, seconds=HEAD_TIMEOUT + 3)
        )
        output = log.read_text()

    print(report.summary())
    assert report.opened == SLOW_CLIENTS, report.summary()
    assert report.health, report.summary()
    assert all(status == "200" and seconds < 1 for status, seconds in report.health), (
        report.summary()
    )
    assert report.still_open == 0, report.summary()
    # A client this test's own loop has not yet got round to writing to when its time is up
    # has sent nothing: closed without an answer.
    if hard > 1024:
        assert f"the soft limit is raised from 1024 to {hard}" in output
        assert set(report.answers) <= {"408", "closed"}, report.summary()
        assert report.answers["408"] > SLOW_CLIENTS / 2, report.summary()
    else:
        assert set(report.answers) <= {"408", "503", "closed", "reset"}, report.summary()
        assert "the most this worker keeps open" in output


def split_answers(received: bytes) -> list[bytes]:
    """The answers in ``received``, one after another, each its head and its body."""
    answers = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        answers.append(head + b"\r\n\r\n" + rest[:length])
        received = rest[length:]
    return answers


def create(name: str) -> bytes:
    body = msgspec.json.encode({"name": name, "secret_name": "s"})
    return (
        b"POST /heroes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def test_a_head_too_large_pipelined_after_a_write_is_answered_after_the_write(
    server: Server,
) -> None:
    big_head = b"GET /heroes HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"

    answers = split_answers(exchange(server, create("Pipelined") + big_head))

    assert [status_of(answer) for answer in answers] == [201, 431], answers
    hero = msgspec.json.decode(answers[0].partition(b"\r\n\r\n")[2])
    assert_error_answer(answers[1], 431)
    stored = exchange(
        server,
        f"GET /heroes/{hero['id']} HTTP/1.1\r\nHost: x\r\n".encode() + b"Connection: close\r\n\r\n",
    )
    assert status_of(stored) == 200


def test_a_head_408_waits_for_the_write_before_it_that_waits_on_a_lock(tmp_path: Path) -> None:
    database = tmp_path / "h.db"
    with running_server(f"sqlite:///{database}", REQUEST_HEAD_TIMEOUT="1") as server:
        lock = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        lock.execute("BEGIN IMMEDIATE")
        threading.Timer(2.5, lock.execute, ["COMMIT"]).start()
        answers = split_answers(
            exchange(server, create("Waited") + b"GET /heroes HTTP/1.1\r\nHost: x\r\n", wait=10)
        )
        listed = httpx.get(f"{server.url}/heroes").json()
        lock.close()

    assert [status_of(answer) for answer in answers] == [201, 408], answers
    assert [hero["name"] for hero in listed] == ["Waited"]


def test_a_pipelined_head_is_counted_from_the_read_that_ended_the_request_before_it(
    server: Server,
) -> None:
    # 12,000 bytes, over the bound of 8,192: 7,000 come in the read that ends the request
    # before it, the rest in a read of their own, under the bound.
    head = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 11_950 + b"\r\n\r\n"
    first = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"

    answers = split_answers(exchange(server, first + head[:7000], head[7000:], pause=0.2))

    assert [status_of(answer) for answer in answers] == [200, 431], answers


def test_pipelined_heads_within_the_bound_are_all_served(server: Server) -> None:
    # Reads that each end one request and begin the next, whose heads together pass the bound.
    head = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 5000 + b"\r\n\r\n"
    stream = head * 6 + b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    parts = [stream[i : i + 7000] for i in range(0, len(stream), 7000)]

    answers = split_answers(exchange(server, *parts, pause=0.05))

    assert [status_of(answer) for answer in answers] == [200] * 7, answers


def silent_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` TCP connections to ``port`` that never send a byte (those the server accepts)."""
    opened = []
    for _ in range(count):
        try:
            opened.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            break
    return opened


@pytest.mark.usefixtures("open_files_for_the_clients")
def test_silent_connections_to_the_tls_port_leave_https_health_checks_answered(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    """TCP connections that never begin their TLS handshake, past the worker's open files."""
    cert, key = certificate
    with running_server(
        f"sqlite:///{tmp_path}/h.db",
        open_files=(300, 300),
        REQUEST_HEAD_TIMEOUT="3",
        TLS_CERT_FILE=str(cert),
        TLS_KEY_FILE=str(key),
    ) as server:
        silent = silent_connections(server.port, 400)
        with httpx.Client(verify=ssl.create_default_context(cafile=cert), timeout=2) as https:
            health: list[int | str] = []
            for _ in range(5):
                try:
                    health.append(https.get(f"{server.url}/health/live").status_code)
                except httpx.HTTPError as exc:
                    health.append(type(exc).__name__)
        time.sleep(3.5)  # past the head time, which bounds a handshake too
        still_open = 0
        for sock in silent:
            sock.settimeout(0.01)
            try:
                still_open += sock.recv(1) != b""
            except TimeoutError:
                still_open += 1
            except OSError:
                pass
            sock.close()

    assert len(silent) >= 300
    assert health == [200] * 5
    assert still_open == 0
