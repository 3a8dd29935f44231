"""The example Kubernetes manifests agree with the image and the app, and run.

Parsed, their probes must name routes that answer, on the port the image listens on, and the pod
must give a SIGTERM the time the shutdown takes. Run (marker ``container``, by ``just
image-test``): ``podman kube play`` plays the migration Job, then the Deployment, with the image
just built, on the machine's PostgreSQL.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from litestar.testing import TestClient

from service.__main__ import COMMANDS, parser
from service.app import create_app
from service.settings import Settings
from tests.helpers import built_image, container_limits, new_hero, podman
from tests.live import free_port

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
    allowed_hosts = environment(CONTAINER)["ALLOWED_HOSTS"]
    settings = Settings(database_url="sqlite:///:memory:", allowed_hosts=allowed_hosts)
    with TestClient(create_app(settings)) as client:
        # The kubelet sends the pod's IP and the port as Host.
        answered = client.get(http_get["path"], headers={"Host": "10.1.2.3:8000"})
        assert client.get("/heroes", headers={"Host": "10.1.2.3:8000"}).status_code == 400

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


# podman kube play -------------------------------------------------------------------------

API_KEY = "kube-test-key"


def as_played_here(manifest: dict[str, Any], image: str, port: int) -> dict[str, Any]:
    """``manifest`` as this machine's podman (4.3, Debian 12) can play it, changed as little as
    a kustomization would.

    - The image is the one just built (kustomize's ``images``), never pulled.
    - A Job is played as the Pod it makes: podman 4.3 plays Pods and Deployments, not Jobs.
    - The pods share the host's network, the only one that reaches PostgreSQL on 127.0.0.1, and
      listen on ``port``; podman 4.3 publishes every ``containerPort`` on the host, which that
      network refuses, so the ports go and the probes name the port by number; one replica, as
      two would bind the same port.
    """
    played = copy.deepcopy(manifest)
    if played["kind"] == "Job":
        played = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": played["metadata"]["name"],
                "labels": played["metadata"]["labels"],
            },
            "spec": played["spec"]["template"]["spec"],
        }
        pod = played["spec"]
    else:
        played["spec"]["replicas"] = 1
        pod = played["spec"]["template"]["spec"]
    for container in pod["containers"]:
        container["image"] = image
        container["imagePullPolicy"] = "Never"
        for variable in container.get("env", []):
            if variable["name"] == "PORT":
                variable["value"] = str(port)
        container.pop("ports", None)
        for probe in PROBES:
            if probe in container:
                container[probe]["httpGet"]["port"] = port
    return played


def created_containers(played: str) -> list[str]:
    """The ids of the containers ``podman kube play`` says it made."""
    return [line for line in played.split("Container:", 1)[-1].split() if line.strip()]


@pytest.fixture
def podman_secret(empty_postgres_url: str, tmp_path: Path) -> Iterator[str]:
    """The Secret the manifests read, as podman 4.3 keeps one: a podman secret of that name
    holding a JSON object of base64 values (podman 4.3 plays no ``kind: Secret``)."""
    (name,) = {
        item["valueFrom"]["secretKeyRef"]["name"]
        for item in CONTAINER["env"]
        if "valueFrom" in item
    }
    values = {"database-url": empty_postgres_url, "api-key": API_KEY}
    data = {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}
    (tmp_path / "secret.json").write_text(json.dumps(data), encoding="utf-8")
    podman("secret", "rm", name)
    created = podman("secret", "create", name, str(tmp_path / "secret.json"))
    assert created.returncode == 0, created.stderr
    yield name
    podman("secret", "rm", name)


@pytest.mark.container
def test_podman_plays_the_migration_job_then_the_deployment_which_serves(
    podman_secret: str, tmp_path: Path
) -> None:
    image = built_image()
    port = free_port()
    files, processes = container_limits()
    # kube play has no --ulimit: the limits go in a containers.conf of the test's own.
    limits = f'"nofile={files}:{files}", "nproc={processes}:{processes}"'
    (tmp_path / "containers.conf").write_text(
        f"[containers]\ndefault_ulimits = [{limits}]\n", encoding="utf-8"
    )
    conf = {"CONTAINERS_CONF": str(tmp_path / "containers.conf")}
    played_files = []
    for name, kind in (("migrate.yaml", "Job"), ("hero-service.yaml", "Deployment")):
        played = [
            as_played_here(document, image, port) if document["kind"] == kind else document
            for document in documents(name)
            if document["kind"] != "Service"  # podman plays no Services; the test is the client
        ]
        played_files.append(tmp_path / name)
        played_files[-1].write_text(yaml.safe_dump_all(played), encoding="utf-8")
    url = f"http://127.0.0.1:{port}"
    try:
        migration = podman("kube", "play", "--network", "host", str(played_files[0]), env=conf)
        assert migration.returncode == 0, migration.stdout + migration.stderr
        (migrator,) = created_containers(migration.stdout)
        migrated = podman("wait", migrator, timeout=120)
        migrate_log = podman("logs", migrator).stdout
        assert migrated.stdout.strip() == "0", migrate_log
        assert "at the latest schema" in migrate_log

        deployment = podman("kube", "play", "--network", "host", str(played_files[1]), env=conf)
        assert deployment.returncode == 0, deployment.stdout + deployment.stderr
        (server,) = created_containers(deployment.stdout)
        deadline = time.monotonic() + 60
        ready = None
        while ready is None or ready.status_code != 200:
            assert time.monotonic() < deadline, podman("logs", server).stderr
            with suppress(httpx.TransportError):
                ready = httpx.get(f"{url}/health/ready", timeout=1)
            time.sleep(0.2)
        inspected = podman(
            "inspect", "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}", server
        ).stdout.split()
        # The API under the name in ALLOWED_HOSTS; readiness above came by IP, as a kubelet's.
        public_name = {"Host": environment(CONTAINER)["ALLOWED_HOSTS"]}
        with httpx.Client(base_url=url, timeout=10, headers=public_name) as client:
            anonymous = client.post("/heroes", json=new_hero("Kube"))
            key = {"Authorization": f"Bearer {API_KEY}"}
            created = client.post("/heroes", json=new_hero("Kube"), headers=key)
            read = client.get(f"/heroes/{created.json()['id']}")
            deleted = client.delete(f"/heroes/{created.json()['id']}", headers=key)
    finally:
        for played_file in reversed(played_files):
            podman("kube", "down", str(played_file), env=conf)

    assert inspected == ["10001:10001", "true"]  # runAsUser, readOnlyRootFilesystem
    assert anonymous.status_code == 401  # API_KEY came from the Secret
    assert created.status_code == 201, created.text
    assert read.json() == created.json()
    assert deleted.json() == {"ok": True}
