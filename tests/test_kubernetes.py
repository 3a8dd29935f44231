"""The example Kubernetes manifests agree with the image and the app.

They cannot be applied here; parsed, their probes must name routes that answer, on the port the
image listens on, and the pod must give a SIGTERM the time the shutdown takes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from litestar.testing import TestClient

from service.__main__ import COMMANDS, parser
from service.app import create_app
from service.settings import Settings

ROOT = Path(__file__).parents[1]
MANIFESTS = ROOT / "deploy" / "kubernetes"
CONTAINERFILE = (ROOT / "Containerfile").read_text(encoding="utf-8")
PROBES = {"startupProbe": "/health/live", "livenessProbe": "/health/live"}
PROBES["readinessProbe"] = "/health/ready"


def documents(name: str) -> list[dict[str, Any]]:
    with (MANIFESTS / name).open(encoding="utf-8") as file:
        return [document for document in yaml.safe_load_all(file) if document]


def of_kind(kind: str, name: str = "hero-service.yaml") -> dict[str, Any]:
    (found,) = [document for document in documents(name) if document["kind"] == kind]
    return found


def container_of(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def environment(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container["env"]}


def image_default(variable: str) -> str:
    """The value the Containerfile's ENV gives ``variable``."""
    found = re.search(rf"\b{variable}=(\S+)", CONTAINERFILE)
    assert found, variable
    return found[1]


def container_port(container: dict[str, Any], port: int | str) -> int:
    """The number of a container port given by number or by name."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    assert isinstance(number, int)
    return number


DEPLOYMENT = of_kind("Deployment")
CONTAINER = container_of(DEPLOYMENT)


@pytest.mark.parametrize(("probe", "path"), PROBES.items())
def test_each_probe_asks_the_route_made_for_it_on_the_port_the_image_serves(
    probe: str, path: str
) -> None:
    http_get = CONTAINER[probe]["httpGet"]
    with TestClient(create_app(Settings(database_url="sqlite:///:memory:"))) as client:
        answered = client.get(http_get["path"])

    assert http_get["path"] == path
    assert answered.status_code == 200
    served_on = int(environment(CONTAINER).get("PORT", image_default("PORT")))
    assert container_port(CONTAINER, http_get["port"]) == served_on
    assert served_on == int(image_default("PORT"))


def test_the_service_sends_its_traffic_to_the_pods_port() -> None:
    service = of_kind("Service")
    (port,) = service["spec"]["ports"]
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]

    assert container_port(CONTAINER, port["targetPort"]) == int(image_default("PORT"))
    assert service["spec"]["selector"].items() <= labels.items()


def test_the_grace_period_covers_the_drain_and_the_graceful_shutdown() -> None:
    drain = float(environment(CONTAINER)["SHUTDOWN_DRAIN_SECONDS"])
    graceful = parser().parse_args(["serve"]).timeout_graceful_shutdown
    readiness = CONTAINER["readinessProbe"]
    noticed_within = readiness["periodSeconds"] * readiness["failureThreshold"]

    assert DEPLOYMENT["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > (
        drain + graceful
    )
    # The drain lasts until the readiness probe has seen the 503 (and the endpoints moved on).
    assert noticed_within < drain


@pytest.mark.parametrize(
    "workload", [DEPLOYMENT, of_kind("Job", "migrate.yaml")], ids=["deployment", "migrate-job"]
)
def test_pods_run_as_the_images_user_on_a_read_only_root_with_resources(
    workload: dict[str, Any],
) -> None:
    pod = workload["spec"]["template"]["spec"]
    container = container_of(workload)

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert f"USER {pod['securityContext']['runAsUser']}:" in CONTAINERFILE
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"requests", "limits"} <= container["resources"].keys()
    assert container["image"] == CONTAINER["image"]


def test_the_migration_job_runs_the_images_migrate_command() -> None:
    job = container_of(of_kind("Job", "migrate.yaml"))

    assert job["args"] == ["migrate"]
    assert "migrate" in COMMANDS
    assert "command" not in job  # the image's entry point, python -m service
