"""uvicorn, shut down so that no request a client has sent is cut off.

Over 300 lines on purpose: the server's configuration, its signals, the drain and the shutdown
are one lifecycle, each step depending on the one before.

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
import ctypes
import functools
import ipaddress
import logging
import multiprocessing
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.supervisors import multiprocess

from service.connections import BoundedConfig, ConnectionLimits
from service.ops.health import LEAVING
from service.ops.requests import SHUTTING_DOWN
from service.settings import Settings, SettingsError

logger = logging.getLogger("uvicorn.error")

LISTENERS_CLOSED_SECONDS = 0.25
"""How long after it stops listening a worker waits before it closes connections."""
DRAIN_SECONDS = 1.0
"""Longest a worker waits for its keep-alive connections to carry one last request each."""
KEEP_ALIVE_SECONDS = 75
"""How long an idle kept-alive connection stays open: longer than the idle timeout of common load
balancers (60 s), so that the balancer, not the server, closes idle connections and never reuses
one the server just closed."""


class DrainingServer(uvicorn.Server):
    """uvicorn's server, which leaves the balancer first and drains keep-alive connections."""

    def __init__(self, config: uvicorn.Config, leave_seconds: float = 0.0) -> None:
        """Serve ``config``; on SIGTERM, stay ``leave_seconds`` not ready before shutting down."""
        super().__init__(config)
        self.leave_seconds = leave_seconds
        self.terminated = False

    def _log_started_message(self, listeners: Sequence[socket.SocketType]) -> None:
        """Log the "running on" line, https when the connections start TLS themselves."""
        config = self.config
        tls = config.tls if isinstance(config, BoundedConfig) else None
        config.ssl = tls  # read for the scheme only: the server is listening already
        try:
            super()._log_started_message(listeners)
        finally:
            config.ssl = None if tls is not None else config.ssl

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
        self,
        config: uvicorn.Config,
        sockets: list[socket.socket],
        leave_seconds: float = 0.0,
        leaving: Any = None,
    ) -> None:
        """A worker serving ``config`` on ``sockets``; see :class:`DrainingServer`.

        ``leaving``: the supervisor's flag in shared memory, set on SIGTERM (see ``LEAVING``).
        """
        # Pickled with the process for the spawned worker, the shared flag as shared memory.
        self.leave_seconds = leave_seconds
        self.leaving = leaving
        self.stop_at_once = False
        """Set by the supervisor when the worker need not leave the balancer before stopping."""
        super().__init__(config, sockets)

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover
        """In the worker: read the supervisor's flag, then serve."""
        if self.leaving is not None:
            LEAVING.share(self.leaving)
        super().target(sockets)

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
        self.leave_seconds = leave_seconds
        # Shared by every worker, those that replace others included (see ``LEAVING``).
        self.leaving = multiprocessing.get_context("spawn").RawValue(ctypes.c_bool, False)
        # uvicorn's supervisor creates its workers through this module-level name.
        multiprocess.Process = functools.partial(  # type: ignore[misc,assignment]
            DrainingProcess, leave_seconds=leave_seconds, leaving=self.leaving
        )
        super().__init__(config, sockets=sockets)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop_listening)

    def _stop_listening(self, sig: int, _frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.leave_seconds:
            # Before any worker is signalled: from now on none answers ready, whichever worker
            # a probe reaches, nor one that notices the signal later than another.
            self.leaving.value = True
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


RESERVED_FILES = 64
"""File descriptors a worker keeps for all but its connections' steady state: its listening
socket, logs, the SQLite files, Redis, the metrics' files, and the connections answered 503 past
the cap while they linger (``LINGERING_PAST_THE_CAP``); the PostgreSQL pool is counted apart."""
HSTS = "max-age=31536000"
"""``Strict-Transport-Security`` of every answer over TLS: browsers keep to HTTPS for a year."""


def server_config(
    settings: Settings, *, host: str, port: int, workers: int, timeout_graceful_shutdown: int
) -> uvicorn.Config:
    """The server for ``settings`` on ``host:port``: TLS if configured, connections bounded.

    Raises :class:`SettingsError` when the service must not start so: open writes on an address
    other than loopback, or TLS files that do not load. Raises this process's open-file limit.
    """
    refuse_open_writes(settings, host)
    tls = tls_options(settings)
    config = BoundedConfig(
        "service.app:app",
        limits=ConnectionLimits(),
        host=host,
        port=port,
        workers=workers,
        server_header=False,
        access_log=False,
        proxy_headers=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
        **tls,
    )
    # After uvicorn's configuration, which sets up the logging these lines go to.
    open_files = raise_open_file_limit()
    config.limits = ConnectionLimits(
        head_timeout=settings.request_head_timeout,
        body_timeout=settings.request_body_timeout,
        max_head_size=settings.max_header_size,
        max_connections=connection_cap(settings, open_files),
        access_log=settings.access_log,
    )
    logger.info(
        "Each worker keeps at most %d connections open (open files: %s)",
        config.limits.max_connections,
        "no limit known" if open_files is None else open_files,
    )
    if settings.allow_anonymous_writes and not settings.api_keys and not is_loopback(host):
        logger.warning("Serving writes to anyone on %s: ALLOW_ANONYMOUS_WRITES is true", host)
    return config


def refuse_open_writes(settings: Settings, host: str) -> None:
    """Raise :class:`SettingsError` for writes open to anyone on a non-loopback ``host``.

    As Redis's protected mode does: listening on every interface without a password is the
    common accident, and the default of ``just serve-prod`` and of containers.
    """
    if settings.api_keys or settings.allow_anonymous_writes or is_loopback(host):
        return
    raise SettingsError(
        f"API_KEY: refusing to serve on {host}, which is not a loopback address, with no API "
        "key: anyone who reaches it could create, change and delete heroes. Set API_KEY (writes "
        "then need Authorization: Bearer <key>), or ALLOW_ANONYMOUS_WRITES=true to serve open "
        "writes on purpose."
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is reachable from this machine only."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(
        ipaddress.ip_address(str(address).split("%")[0]).is_loopback for address in addresses
    )


def raise_open_file_limit() -> int | None:
    """Raise this process's soft limit of open files to its hard limit; the soft limit then.

    As nginx's ``worker_rlimit_nofile`` and Go's runtime do: the soft limit many systems give a
    service (1024) is far below what the kernel lets it have. The workers inherit it. None where
    the system has no such limit (Windows).
    """
    try:
        import resource  # noqa: PLC0415 (Unix only)
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # macOS: a hard limit above what it allows
            logger.warning("Open files: the soft limit stays at %d: %s", soft, exc)
        else:
            logger.info("Open files: the soft limit is raised from %d to %d", soft, hard)
    raised = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if raised == resource.RLIM_INFINITY else raised


def connection_cap(settings: Settings, open_files: int | None) -> int:
    """Most connections a worker keeps open: ``WORKER_CONNECTIONS``, within the open files.

    Below the open-file limit by a reserve, so that accepting a connection never fails for want
    of a file descriptor (which refuses every client, health checks too): the cap answers 503.
    """
    if open_files is None:
        return settings.worker_connections or 10_000
    room = open_files - RESERVED_FILES - settings.db_pool_size - settings.db_max_overflow
    if room < 1:
        raise SettingsError(
            f"the open-file limit ({open_files}) leaves no room for connections: raise it "
            f"(ulimit -n) above {open_files - room + 1}"
        )
    if settings.worker_connections > room:
        logger.warning(
            "WORKER_CONNECTIONS=%d is more than the open-file limit leaves room for: %d",
            settings.worker_connections,
            room,
        )
    return min(settings.worker_connections or room, room)


def tls_options(settings: Settings) -> dict[str, Any]:
    """The TLS options of uvicorn for ``TLS_CERT_FILE`` and ``TLS_KEY_FILE``, checked; {} for none.

    Raises :class:`SettingsError` naming the variable whose file is missing or unreadable, or
    when the certificate and key do not load together.
    """
    cert, key, password = settings.tls_cert_file, settings.tls_key_file, settings.tls_key_password
    if not (cert or key):
        return {}
    if not cert:
        raise SettingsError("TLS_CERT_FILE: needed with TLS_KEY_FILE, the certificate to serve")
    contents = b""
    for variable, path in (("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", key)):
        if not path:
            continue
        try:
            with open(path, "rb") as file:
                contents = file.read()
        except OSError as exc:
            raise SettingsError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    try:
        tls_context(cert, key, password)
    except ssl.SSLError as exc:
        if b"ENCRYPTED" in contents:  # the key's PEM header says so
            said = "is not its password" if password else "is needed"
            raise SettingsError(
                f"TLS_KEY_PASSWORD: the key is encrypted, and TLS_KEY_PASSWORD {said}"
            ) from None
        variables = "TLS_CERT_FILE, TLS_KEY_FILE" if key else "TLS_CERT_FILE"
        raise SettingsError(
            f"{variables}: the certificate and its key do not load: {exc}"
        ) from None
    return {
        "ssl_certfile": cert,
        "ssl_keyfile": key or None,
        "ssl_keyfile_password": password or None,
        "ssl_context_factory": uvicorn_tls_context,
        "headers": [("Strict-Transport-Security", HSTS)],
    }


def tls_context(cert: str, key: str = "", password: str = "") -> ssl.SSLContext:
    """A server context for the certificate and key: TLS 1.2 or later, HTTP/1.1.

    The key's password comes from ``password`` only: OpenSSL never asks for one on a terminal.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key or None, password=lambda: password)
    context.set_alpn_protocols(["http/1.1"])
    return context


def uvicorn_tls_context(
    config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]
) -> ssl.SSLContext:
    """The ``ssl_context_factory`` of uvicorn: :func:`tls_context` for the configured files."""
    return tls_context(
        str(config.ssl_certfile), str(config.ssl_keyfile or ""), config.ssl_keyfile_password or ""
    )
