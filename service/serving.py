"""uvicorn, shut down so that no request a client has sent is cut off.

On SIGTERM a worker first leaves its load balancer, if ``SHUTDOWN_DRAIN_SECONDS`` says so: for
that long it keeps accepting and serving as usual while ``/health/ready`` answers 503, until the
balancer's health checks have taken it out of rotation (Ctrl-C, SIGINT, skips this). Then
it shuts down.

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
import functools
import os
import signal
import socket
import time
from types import FrameType

import uvicorn
from uvicorn.supervisors import multiprocess

from service.ops.health import LEAVING
from service.ops.requests import SHUTTING_DOWN

LISTENERS_CLOSED_SECONDS = 0.25
"""How long after it stops listening a worker waits before it closes connections."""
DRAIN_SECONDS = 1.0
"""Longest a worker waits for its keep-alive connections to carry one last request each."""


class DrainingServer(uvicorn.Server):
    """uvicorn's server, which leaves the balancer first and drains keep-alive connections."""

    def __init__(self, config: uvicorn.Config, leave_seconds: float = 0.0) -> None:
        """Serve ``config``; on SIGTERM, stay ``leave_seconds`` not ready before shutting down."""
        super().__init__(config)
        self.leave_seconds = leave_seconds
        self.terminated = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Note whether the first signal was SIGTERM (leave the balancer) or Ctrl-C (do not)."""
        if not self.should_exit:
            self.terminated = sig == signal.SIGTERM
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Leave the balancer, stop listening, answer each connection's last request, then stop."""
        if self.terminated and self.leave_seconds:
            await self.leave()
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

    async def leave(self) -> None:
        """Serve, but not ready, for ``leave_seconds`` (a second Ctrl-C cuts it short).

        Answers meanwhile close their connection, so that clients holding one open (those that a
        balancer passes through at the connection level, as kube-proxy does) reconnect, and
        reach another instance once the balancer has taken this one out.
        """
        LEAVING.set()
        SHUTTING_DOWN.set()
        deadline = time.monotonic() + self.leave_seconds
        while time.monotonic() < deadline and not self.force_exit:
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


class DrainingProcess(multiprocess.Process):
    """A worker process that runs :class:`DrainingServer`."""

    def __init__(
        self, config: uvicorn.Config, sockets: list[socket.socket], leave_seconds: float = 0.0
    ) -> None:
        """A worker serving ``config`` on ``sockets``; see :class:`DrainingServer`."""
        self.leave_seconds = leave_seconds  # pickled with the process for the spawned worker
        self.stop_at_once = False
        """Set by the supervisor when the worker need not leave the balancer before stopping."""
        super().__init__(config, sockets)

    def terminate(self) -> None:
        """Stop the worker (SIGTERM); first SIGINT, which skips the drain, if it is to stop at once.

        Of the two signals, a worker handles SIGINT first (the lower number): its SIGTERM then
        changes nothing.
        """
        if self.stop_at_once and self.process.exitcode is None and self.process.pid:
            os.kill(self.process.pid, signal.SIGINT)
        super().terminate()

    @property
    def server(self) -> uvicorn.Server:
        """The worker's server."""
        if self._server is None:
            self._server = DrainingServer(config=self.config, leave_seconds=self.leave_seconds)
        return self._server


class Supervisor(multiprocess.Multiprocess):
    """uvicorn's supervisor of worker processes, which stops listening as soon as it is told to.

    uvicorn's keeps the listening socket open until every worker has finished, so connections
    made during a graceful shutdown wait in the kernel's queue, unanswered, and are then reset.
    Closed at once, new connections are refused cleanly, and a load balancer moves on.
    """

    def __init__(
        self, config: uvicorn.Config, sockets: list[socket.socket], leave_seconds: float = 0.0
    ) -> None:
        """Supervise ``config.workers`` workers on ``sockets``; see :class:`DrainingServer`."""
        # uvicorn's supervisor creates its workers through this module-level name.
        multiprocess.Process = functools.partial(  # type: ignore[misc,assignment]
            DrainingProcess, leave_seconds=leave_seconds
        )
        super().__init__(config, sockets=sockets)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop_listening)

    def _stop_listening(self, sig: int, _frame: FrameType | None) -> None:
        # The workers' copies of the socket stay open while they leave the balancer.
        for sock in self.sockets:
            sock.close()
        self.signal_queue.append(sig)

    def handle_int(self) -> None:
        """Ctrl-C: stop, the workers without leaving the balancer first."""
        self._stop_at_once(self.processes)
        super().handle_int()

    def handle_hup(self) -> None:
        """SIGHUP: replace each worker by a new one, as uvicorn does, old ones stopping at once.

        The instance stays in service: an old worker that answered 503 on /health/ready while
        it drained would make a balancer take the whole instance out.
        """
        replaced = list(self.processes)
        self._stop_at_once(replaced)
        super().handle_hup()
        for process in replaced:  # a worker a failed replacement left running
            if isinstance(process, DrainingProcess):
                process.stop_at_once = False

    @staticmethod
    def _stop_at_once(processes: list[multiprocess.Process]) -> None:
        for process in processes:
            if isinstance(process, DrainingProcess):
                process.stop_at_once = True


def run(config: uvicorn.Config, leave_seconds: float = 0.0) -> None:
    """Serve ``config`` with one worker in this process, or with a supervisor of several.

    On SIGTERM each worker serves, not ready, for ``leave_seconds`` (``SHUTDOWN_DRAIN_SECONDS``)
    before it stops listening.
    """
    if config.workers > 1:
        Supervisor(config, sockets=[config.bind_socket()], leave_seconds=leave_seconds).run()
        return
    server = DrainingServer(config, leave_seconds)
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE
