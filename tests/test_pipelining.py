"""Requests pipelined on one connection: every request served is answered, in order, before any
answer the server gives on its own (400, 408, 414, 431), and what is stored matches the answers.

Live: ``python -m service`` is sent random sequences of valid, slow, oversized and malformed
requests on one connection, cut into reads at random places.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.live import Server, running_server, stored_heroes

pytestmark = pytest.mark.live

MAX_HEADER_SIZE = 8192


@dataclass(frozen=True)
class Request:
    """One request of a sequence, and what the server must answer it."""

    kind: str
    data: bytes
    status: int
    name: str | None = None
    """The hero's name, for a create."""
    ends: bool = False
    """Whether the server answers it on its own and closes: nothing after it is read."""


def create(name: str) -> bytes:
    body = msgspec.json.encode({"name": name, "secret_name": "s"})
    return (
        b"POST /heroes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def request(kind: str) -> Request:
    name = f"Pipe {uuid.uuid4().hex}"
    pad = b"X-Pad: " + b"p" * 3000 + b"\r\n"
    return {
        "create": Request(kind, create(name), 201, name),
        "read": Request(kind, b"GET /heroes?limit=1 HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        "read, a large head within the bound": Request(
            kind, b"GET /health/live HTTP/1.1\r\nHost: x\r\n" + pad * 2 + b"\r\n", 200
        ),
        "head over the bound": Request(
            kind, b"GET /heroes HTTP/1.1\r\nHost: x\r\n" + pad * 3 + b"\r\n", 431, ends=True
        ),
        "target over the bound": Request(
            kind, b"GET /heroes?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, ends=True
        ),
        "not HTTP": Request(kind, b"\x00\x01 NOT HTTP\r\n\r\n", 400, ends=True),
        "head that stalls": Request(kind, b"GET /heroes HTTP/1.1\r\nHost: x\r\n", 408, ends=True),
    }[kind]


KINDS = st.sampled_from(
    [
        "create",
        "read",
        "read, a large head within the bound",
        "head over the bound",
        "target over the bound",
        "not HTTP",
        "head that stalls",
    ]
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    database = tmp_path_factory.mktemp("pipelining") / "h.db"
    with running_server(
        f"sqlite:///{database}",
        REQUEST_HEAD_TIMEOUT="1",
        REQUEST_BODY_TIMEOUT="1",
        MAX_HEADER_SIZE=str(MAX_HEADER_SIZE),
    ) as server:
        yield server


def send_and_read(port: int, stream: bytes, cuts: list[int]) -> bytes:
    """Send ``stream`` cut at ``cuts`` (a short pause between reads); all the server answers."""
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for piece in pieces:
            try:
                sock.sendall(piece)
            except OSError:
                break  # answered and closed: the rest is not read
            time.sleep(0.02)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


def answers_in(received: bytes) -> list[tuple[int, bytes]]:
    """Each answer's status and body, in the order they came."""
    answers = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        answers.append((int(head.split(b" ", 2)[1]), rest[:length]))
        received = rest[length:]
    return answers


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(kinds=st.lists(KINDS, min_size=1, max_size=6), data=st.data())
def test_pipelined_requests_are_answered_in_order_before_any_early_answer(
    server: Server, kinds: list[str], data: st.DataObject
) -> None:
    sequence = [request(kind) for kind in kinds]
    served = []
    for item in sequence:
        served.append(item)
        if item.ends:
            break
    else:  # the last one asks to close, so that the exchange ends
        last = served[-1]
        served[-1] = Request(
            last.kind,
            last.data.replace(b"\r\n", b"\r\nConnection: close\r\n", 1),
            last.status,
            last.name,
        )
    stream = b"".join(item.data for item in served)
    cuts = sorted(
        set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=4), label="cuts"))
    )

    answers = answers_in(send_and_read(server.port, stream, cuts))

    assert [status for status, _ in answers] == [item.status for item in served], answers
    stored = {hero["name"] for hero in stored_heroes(server.url).values()}
    for item, (_, body) in zip(served, answers, strict=True):
        if item.name is not None:
            assert msgspec.json.decode(body)["name"] == item.name
    names = {item.name for item in sequence if item.name is not None}
    created = {item.name for item in served if item.name is not None}
    assert names & stored == created
