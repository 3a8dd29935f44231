"""uvicorn, shut down so that no request a client has sent is cut off.

On SIGTERM uvicorn stops accepting connections, lets requests in progress finish, and closes the
keep-alive connections that are idle at that instant. A client that has just sent its next
request on one of them (its bytes still in the socket's buffer) gets a reset connection instead
of an answer. Here a worker first stops listening, then keeps its open connections for up to
``DRAIN_SECONDS``, answering each one's next request with ``Connection: close`` (clients then
reconnect, and are refused cleanly, or go to another instance), and only then lets uvicorn
close what is left and wait for the requests in flight.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from types import FrameType

import uvicorn
from uvicorn.supervisors import multiprocess

from service.ops.requests import SHUTTING_DOWN

LISTENERS_CLOSED_SECONDS = 0.25
"""How long after it stops listening a worker waits before it closes connections."""
DRAIN_SECONDS = 1.0
"""Longest a worker waits for its keep-alive connections to carry one last request each."""


class DrainingServer(uvicorn.Server):
    """uvicorn's server, which drains keep-alive connections before closing them."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop listening, answer each connection's last request, then shut down as uvicorn does."""
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        # Keep connections alive a moment, until the other workers (whose main loops notice the
        # signal within 0.1 s) have stopped listening too: a client sent away by a
        # "Connection: close" before then could reconnect into a queue about to be reset.
        await asyncio.sleep(LISTENERS_CLOSED_SECONDS)
        SHUTTING_DOWN.set()
        deadline = time.monotonic() + min(DRAIN_SECONDS, self.config.timeout_graceful_shutdown or 0)
        while self.server_state.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await super().shutdown()


class DrainingProcess(multiprocess.Process):
    """A worker process that runs :class:`DrainingServer`."""

    @property
    def server(self) -> uvicorn.Server:
        """The worker's server."""
        if self._server is None:
            self._server = DrainingServer(config=self.config)
        return self._server


class Supervisor(multiprocess.Multiprocess):
    """uvicorn's supervisor of worker processes, which stops listening as soon as it is told to.

    uvicorn's keeps the listening socket open until every worker has finished, so connections
    made during a graceful shutdown wait in the kernel's queue, unanswered, and are then reset.
    Closed at once, new connections are refused cleanly, and a load balancer moves on.
    """

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        # uvicorn's supervisor creates its workers through this module-level name.
        multiprocess.Process = DrainingProcess  # type: ignore[misc]
        super().__init__(config, sockets=sockets)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop_listening)

    def _stop_listening(self, sig: int, _frame: FrameType | None) -> None:
        for sock in self.sockets:
            sock.close()
        self.signal_queue.append(sig)


def run(config: uvicorn.Config) -> None:
    """Serve ``config`` with one worker in this process, or with a supervisor of several."""
    if config.workers > 1:
        Supervisor(config, sockets=[config.bind_socket()]).run()
        return
    server = DrainingServer(config)
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE
