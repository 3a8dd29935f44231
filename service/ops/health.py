"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

import threading
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import ServiceUnavailableException
from litestar.openapi.spec import Tag

from service.database.statements import SELECT_ONE, Database
from service.http.errors import RETRY_AFTER_SECONDS, documented_errors
from service.http.resources import Resource

PROBE_PATHS = frozenset({"/health/live", "/health/ready", "/health/live/", "/health/ready/"})
"""The health checks' paths: answered whatever the ``Host`` header names (``ALLOWED_HOSTS``
aside), as probes (a kubelet's, a container's HEALTHCHECK) address the instance by its IP. They
tell nothing but "ok" or "not ready"."""


class Leaving:
    """Whether the service has been told to stop (SIGTERM): readiness fails from then on.

    With several workers, the supervisor gives each one the same flag in shared memory
    (:meth:`share`), which it sets itself before it passes SIGTERM on, and which a worker told
    directly (the whole process group signalled) sets too. So once one worker answers not ready,
    every other does: a balancer never sees an instance that is leaving answer ready again.
    """

    def __init__(self) -> None:
        self._here = threading.Event()
        self._shared: Any = None

    def share(self, flag: Any) -> None:
        """Also read (and set) ``flag``, a ``c_bool`` in shared memory, in this worker."""
        self._shared = flag

    def set(self) -> None:
        """Fail readiness, in every worker."""
        if self._shared is not None:
            self._shared.value = True
        self._here.set()

    def clear(self) -> None:
        """Answer ready again (in tests: the flag is the process's)."""
        if self._shared is not None:
            self._shared.value = False
        self._here.clear()

    def is_set(self) -> bool:
        """Whether readiness fails (read on every answer: see ``add_response_headers``)."""
        if self._shared is not None:  # set and cleared with this worker's own flag
            return bool(self._shared.value)
        return self._here.is_set()


LEAVING = Leaving()
"""Set when the server has been told to stop (SIGTERM): readiness fails, so that load balancers
take this instance out of rotation, while it goes on serving (``service.serving``)."""


class Health(msgspec.Struct):
    """The answer of a health check."""

    status: Annotated[str, msgspec.Meta(examples=["ok"])]


class HealthController(Controller):
    """``/health/live`` and ``/health/ready``."""

    path = "/health"
    tags = ["health"]

    @get("/live", operation_id="checkLive", summary="Process is up", sync_to_thread=False)
    def live(self) -> Health:
        """Answers 200 while the process serves requests; it does not touch the database."""
        return Health("ok")

    @get(
        "/ready",
        operation_id="checkReady",
        summary="Ready for traffic",
        responses=documented_errors(
            503,
            descriptions={
                503: "The database is unavailable, or the service is shutting down (it still "
                "serves, for `SHUTDOWN_DRAIN_SECONDS`, while the load balancer takes it out)."
            },
        ),
    )
    async def ready(self, db: NamedDependency[Database]) -> Response[Health]:
        """Answers 200 when the database answers a query, 503 otherwise.

        Also 503 once the service has been told to stop (SIGTERM), while it still serves for
        `SHUTDOWN_DRAIN_SECONDS`, so that load balancers send it no new requests.
        """
        leaving = ServiceUnavailableException(
            "The service is shutting down.", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
        if LEAVING.is_set():
            raise leaving
        await db.fetch(SELECT_ONE)
        if LEAVING.is_set():  # told while the query ran: no "ready" after another said not
            raise leaving
        return Response(Health("ready"))


HEALTH = Resource(
    route_handlers=[HealthController],
    exception_handlers={},
    tag=Tag(name="health", description="Liveness and readiness checks."),
)
"""The health checks, served beside the API's resources."""
