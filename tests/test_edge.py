"""Every header the service reads, sent with hostile values: never a 500, always the Error shape.

The headers: ``Host``, ``X-Forwarded-For``, ``Forwarded``, ``X-Request-ID``, ``If-Match``,
``If-None-Match``, ``Authorization``, ``Content-Type`` and ``traceparent``, with metrics and
tracing on, behind trusted proxies, with an API key and a rate limit: everything that reads a
header is in the path. In-process, any bytes at all reach the app; against ``python -m
service``, what can cross a connection reaches its parser first.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.app import create_app
from service.http.errors import Error
from service.settings import Settings
from tests.helpers import asgi_request, new_hero
from tests.live import Server, running_server

API_KEY = "edge-key"
HEADERS = [
    "host",
    "x-forwarded-for",
    "forwarded",
    "x-request-id",
    "if-match",
    "if-none-match",
    "authorization",
    "content-type",
    "traceparent",
]
OPERATIONS = [
    ("GET", "/heroes", b""),
    ("GET", "/heroes/1", b""),
    ("POST", "/heroes", msgspec.json.encode(new_hero("Edge"))),
    ("PATCH", "/heroes/1", b'{"age": 7}'),
    ("DELETE", "/heroes/999999", b""),
    ("GET", "/health/live", b""),
    ("GET", "/schema/openapi.json", b""),
    ("GET", "/nowhere", b""),
]

ANY_BYTES = st.binary(max_size=200)
TEXT = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=60)
ADDRESSES = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
    st.tuples(st.ip_addresses().map(str), st.integers(-5, 70000)).map(lambda p: f"{p[0]}:{p[1]}"),
    st.tuples(st.ip_addresses(v=6), st.integers(-5, 70000)).map(lambda p: f"[{p[0]}]:{p[1]}"),
    TEXT,
)
HEX = st.text("0123456789abcdefABCDEFxz-", max_size=40)
TARGETED = {
    "host": st.one_of(
        st.tuples(st.from_regex(r"[a-z0-9.\-\[\]:%@_]{0,20}", fullmatch=True), TEXT).map(
            lambda p: f"{p[0]}:{p[1]}"
        ),
        ADDRESSES,
    ),
    "x-forwarded-for": st.lists(ADDRESSES, max_size=5).map(", ".join),
    "forwarded": st.lists(
        st.tuples(st.sampled_from(["for", "For", "by", "proto", "x", ""]), ADDRESSES, TEXT).map(
            lambda p: f'{p[0]}="{p[1]}";{p[2]}'
        ),
        max_size=4,
    ).map(", ".join),
    "x-request-id": TEXT,
    "if-match": st.one_of(st.just("*"), TEXT.map(lambda t: f'W/"{t}", "{t}"'), TEXT),
    "if-none-match": st.one_of(st.just("*"), TEXT.map(lambda t: f'"{t}"'), TEXT),
    "authorization": st.one_of(
        st.just(f"Bearer {API_KEY}"), TEXT.map(lambda t: f"Bearer {t}"), TEXT
    ),
    "content-type": st.one_of(
        st.sampled_from(["application/json", "application/merge-patch+json", "text/plain"]).flatmap(
            lambda media: TEXT.map(lambda params: f"{media}; {params}")
        ),
        TEXT,
    ),
    "traceparent": st.one_of(
        st.tuples(HEX, HEX, HEX, HEX).map("-".join),
        st.just("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        TEXT,
    ),
}


def header_values(
    allowed: st.SearchStrategy[bytes],
) -> st.SearchStrategy[list[tuple[bytes, bytes]]]:
    """Some of the headers, each once or twice, each value hostile: targeted or any bytes."""
    one = {
        name: st.lists(
            st.one_of(TARGETED[name].map(lambda text: text.encode("latin-1")), allowed),
            max_size=2,
        )
        for name in HEADERS
    }
    return st.fixed_dictionaries(one).map(
        lambda values: [(name.encode(), value) for name, many in values.items() for value in many]
    )


def assert_answer_is_sound(status: int, headers: dict[bytes, bytes], body: bytes) -> None:
    assert status < 500, body
    assert headers.get(b"x-request-id"), headers
    if status >= 400:
        assert msgspec.json.decode(body, type=Error).status_code == status


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Litestar]]:
    database = tmp_path_factory.mktemp("edge") / "h.db"
    settings = Settings(
        database_url=f"sqlite:///{database}",
        metrics=True,
        tracing=True,
        api_key=API_KEY,
        rate_limit_per_minute=1_000_000,
        forwarded_allow_ips="*",
        access_log=False,
    )
    with TestClient[Litestar](create_app(settings)) as client:
        created = client.post(
            "/heroes", json=new_hero(), headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert created.status_code == 201
        yield client


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operation=st.sampled_from(OPERATIONS), headers=header_values(ANY_BYTES))
def test_hostile_headers_never_get_a_500_in_process(
    client: TestClient[Litestar],
    spans: InMemorySpanExporter,
    operation: tuple[str, str, bytes],
    headers: list[tuple[bytes, bytes]],
) -> None:
    method, path, body = operation
    answer = asgi_request(client, headers, method=method, path=path, body=body)

    assert_answer_is_sound(*answer)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    database = tmp_path_factory.mktemp("edge-live") / "h.db"
    with running_server(
        f"sqlite:///{database}",
        METRICS="true",
        TRACING="true",
        OTEL_TRACES_EXPORTER="none",
        API_KEY=API_KEY,
        RATE_LIMIT_PER_MINUTE="1000000",
        FORWARDED_ALLOW_IPS="*",
        FORWARDED_HEADER="forwarded",
        REQUEST_HEAD_TIMEOUT="2",
    ) as server:
        hero = msgspec.json.encode(new_hero())
        head = f"POST /heroes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        length = f"Content-Type: application/json\r\nContent-Length: {len(hero)}\r\n"
        assert (
            exchange(server, (head + length + "Connection: close\r\n\r\n").encode() + hero)[0]
            == 201
        )
        yield server


def exchange(server: Server, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send ``request`` on a new connection; the answer, read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:] if b": " in line)
    if headers.get(b"transfer-encoding") == b"chunked":
        body = dechunk(body)
    return int(lines[0].split(b" ")[1]), headers, body


def dechunk(body: bytes) -> bytes:
    whole = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        length = int(size, 16)
        whole, body = whole + rest[:length], rest[length + 2 :]
        if length == 0:
            break
    return whole


LINE_SAFE = st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
"""Any bytes that keep a header on its line: a raw CR or LF would end the line or the head."""


@pytest.mark.live
@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operation=st.sampled_from(OPERATIONS), headers=header_values(LINE_SAFE))
def test_hostile_headers_never_get_a_500_from_the_server(
    server: Server, operation: tuple[str, str, bytes], headers: list[tuple[bytes, bytes]]
) -> None:
    method, path, body = operation
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    length = f"Content-Length: {len(body)}\r\nConnection: close\r\n".encode()
    request = f"{method} {path} HTTP/1.1\r\n".encode() + lines + length + b"\r\n" + body

    assert_answer_is_sound(*exchange(server, request))


@pytest.mark.live
@pytest.mark.parametrize(
    ("query", "key"),
    [
        ("limit=5.0", "limit"),
        ("min_age=1e1", "min_age"),
        ("offset=0.0", "offset"),
        ("max_age=0.0", "max_age"),
        ("count=True", "count"),
    ],
)
def test_query_numbers_not_written_canonically_are_400_from_the_server(
    server: Server, query: str, key: str
) -> None:
    request = f"GET /heroes?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()

    status, headers, body = exchange(server, request)

    assert (status, headers[b"content-type"]) == (400, b"application/json")
    assert [detail["key"] for detail in msgspec.json.decode(body)["extra"]] == [key]
