"""Prometheus metrics at ``/metrics``, summed over every worker process of the host.

Each worker writes its counters to files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's
multiprocess mode) and a scrape, whichever worker answers it, adds up the files of all of them.
A worker that dies leaves its file behind, so its counts stay in the totals and counters never
go backwards. ``python -m service`` prepares the directory before the workers start; under
another process manager, see docs/deployment.md, "Several workers".

prometheus_client is imported only here, and only when ``METRICS`` is on: it is an extra.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from litestar import Controller, Response, get

from service.settings import SettingsError

if TYPE_CHECKING:
    from litestar.middleware import DefineMiddleware

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def prometheus() -> tuple[DefineMiddleware, type[Controller]]:
    """The middleware that counts and times every answer, and the ``/metrics`` controller."""
    try:
        import prometheus_client  # noqa: F401, PLC0415
    except ImportError as exc:
        raise SettingsError(
            "METRICS: needs the prometheus-client package: pip install 'hero-service[metrics]'"
        ) from exc
    from litestar.plugins.prometheus import PrometheusConfig  # noqa: PLC0415

    config = PrometheusConfig(app_name="hero_service", prefix="hero_service", group_path=True)
    return config.middleware, MetricsController


class MetricsController(Controller):
    """The Prometheus scrape endpoint."""

    path = "/metrics"
    include_in_schema = False

    @get(sync_to_thread=False)
    def metrics(self) -> Response[bytes]:
        """Every metric of every worker, in Prometheus's text format."""
        from prometheus_client import (  # noqa: PLC0415
            CONTENT_TYPE_LATEST,
            REGISTRY,
            CollectorRegistry,
            generate_latest,
            multiprocess,
        )

        registry = REGISTRY
        if directory := os.environ.get(MULTIPROC_DIR):
            forget_dead_workers(Path(directory))
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def forget_dead_workers(directory: Path) -> None:
    """Drop the in-progress gauges of workers that are gone; their counters stay counted.

    prometheus_client asks the process manager to call ``mark_process_dead`` when a worker
    exits; uvicorn's has no hook for it, so the scrape does it for any worker no longer running.
    """
    from prometheus_client import multiprocess  # noqa: PLC0415

    for path in directory.glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        if not _running(pid):
            multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_multiprocess_dir() -> Path | None:
    """Give the workers an empty ``PROMETHEUS_MULTIPROC_DIR``, before any of them starts.

    An operator's directory is emptied (counts of an earlier run would be added to this one's);
    without one, a temporary directory is made, which is returned so the caller removes it.
    """
    if configured := os.environ.get(MULTIPROC_DIR):
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        return None
    directory = Path(tempfile.mkdtemp(prefix="hero-service-metrics-"))
    os.environ[MULTIPROC_DIR] = str(directory)
    return directory


def remove_multiprocess_dir(directory: Path | None) -> None:
    """Remove the temporary directory ``prepare_multiprocess_dir`` made, if it made one."""
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
