"""What the connection accounting costs per request: uvicorn's protocol against the bounded one.

    python -m tests.benchmarks.connections [--requests 20000] [--repeats 7]

Each protocol parses the same requests, fed as a socket would hand them over, and answers each
from a minimal ASGI app, on one event loop, with no network: the difference is the protocol's own
work (timers, counts, the registry of waiting connections). CPU time per request, best of
``--repeats`` runs, as the machine is shared. Also the Host check each request now passes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

import uvloop
from uvicorn.lifespan.on import LifespanOn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.app import create_app
from service.connections import BoundedConfig, BoundedHttpProtocol, ConnectionLimits
from service.http.hosts import host_refusal
from service.settings import Settings

GET = b"GET /heroes/1 HTTP/1.1\r\nHost: heroes.example:8000\r\nUser-Agent: bench\r\n\r\n"
BODY = b'{"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30}'
POST_HEAD = (
    b"POST /heroes HTTP/1.1\r\nHost: heroes.example:8000\r\nContent-Type: application/json\r\n"
    + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
)


class Transport(asyncio.Transport):
    """Enough of a socket's transport for a protocol: it keeps nothing it is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


async def minimal_app(scope: Any, receive: Any, send: Any) -> None:
    """Read the body, answer 200 with a small JSON body."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


def measure(
    protocol_class: type[HttpToolsProtocol],
    reads: list[bytes],
    requests: int,
    asgi_app: Any = minimal_app,
    warm_up: list[bytes] = [],  # noqa: B006 (never changed)
) -> float:
    """CPU seconds per request for ``requests`` requests on one kept-alive connection."""
    loop = uvloop.new_event_loop()  # as uvicorn runs it
    config = BoundedConfig(
        asgi_app, limits=ConnectionLimits(access_log=False), log_config=None, access_log=False
    )
    config.load()
    lifespan = LifespanOn(config)
    state = ServerState()
    protocol = protocol_class(config, state, {}, _loop=loop)
    protocol.connection_made(Transport())

    async def run(count: int, reads: list[bytes]) -> None:
        for _ in range(count):
            for data in reads:
                protocol.data_received(data)
            while state.tasks:
                await asyncio.gather(*list(state.tasks))

    loop.run_until_complete(lifespan.startup())
    loop.run_until_complete(run(1, warm_up))
    gc.collect()
    started = time.process_time()
    loop.run_until_complete(run(requests, reads))
    elapsed = time.process_time() - started
    protocol.connection_lost(None)
    loop.run_until_complete(lifespan.shutdown())
    loop.close()
    return elapsed / requests


def best(repeats: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeats))


def main() -> None:
    """Print µs per request for each kind of request and protocol, and the difference."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    service = create_app(Settings(database_url="sqlite:///:memory:", access_log=False))
    create = POST_HEAD + BODY
    kinds = {
        "GET, head in one read": ([GET], minimal_app),
        "POST, head and body in one read": ([POST_HEAD + BODY], minimal_app),
        "POST, body in a second read": ([POST_HEAD, BODY], minimal_app),
        "GET, head in two reads": ([GET[:30], GET[30:]], minimal_app),
        "2 GETs pipelined in one read (pair)": ([GET + GET], minimal_app),
        "POST then GET head, one read (pair)": (
            [POST_HEAD + BODY + GET[:30], GET[30:]],
            minimal_app,
        ),
        "the service: GET /heroes/1": ([GET], service),
        "the service: GET /health/live": ([GET.replace(b"/heroes/1", b"/health/live")], service),
    }
    print(f"{'request':36} {'uvicorn µs':>11} {'bounded µs':>11} {'cost µs':>8}")
    for kind, (reads, asgi_app) in kinds.items():
        times = {}
        for name, protocol in (("uvicorn", HttpToolsProtocol), ("bounded", BoundedHttpProtocol)):

            def run(protocol: type[HttpToolsProtocol] = protocol) -> float:
                return measure(protocol, reads, args.requests, asgi_app, [create])  # noqa: B023

            times[name] = best(args.repeats, run)
        cost = times["bounded"] - times["uvicorn"]
        print(
            f"{kind:36} {times['uvicorn'] * 1e6:11.2f} {times['bounded'] * 1e6:11.2f} "
            f"{cost * 1e6:8.2f}"
        )
    scope: Any = {"headers": [(b"host", b"heroes.example:8000"), (b"accept", b"*/*")]}
    allowed = ("*",)
    rounds = 200_000

    def host_check() -> float:
        started = time.process_time()
        for _ in range(rounds):
            host_refusal(scope, allowed)
        return (time.process_time() - started) / rounds

    check = best(args.repeats, host_check) * 1e6
    print(f"{'the Host check (ServiceApp)':36} {'':11} {check:11.2f}")


if __name__ == "__main__":
    main()
