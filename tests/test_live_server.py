"""The real server in a subprocess: concurrent load on one and two workers, and kill -9."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.live import Server, run_load, running_server, stored_heroes

pytestmark = pytest.mark.live

LOAD_CLIENTS = 256
LOAD_SECONDS = 4.0


@pytest.mark.alone  # 256 clients: the load takes both cores
@pytest.mark.parametrize("workers", [1, 2])
def test_load_from_256_clients_loses_nothing_and_never_fails(
    database_url: str, workers: int
) -> None:
    with running_server(database_url, workers=workers) as server:
        report = asyncio.run(run_load(server.url, clients=LOAD_CLIENTS, seconds=LOAD_SECONDS))
        stored = stored_heroes(server.url)
        still_answers = httpx.get(f"{server.url}/health/ready", timeout=2)

    assert report.requests > LOAD_CLIENTS, report.summary()
    assert report.server_errors == 0, report.summary()
    assert (report.timeouts, report.connection_errors) == (0, 0), report.summary()
    assert stored == report.expected
    assert still_answers.status_code == 200


def test_kill_9_during_a_write_storm_loses_no_acknowledged_hero(database_url: str) -> None:
    """Half the writers send an Idempotency-Key: each key is stored with its hero or not at all."""
    server = Server(database_url)
    acknowledged: list[dict[str, Any]] = []
    keyed: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
    stop = threading.Event()

    def write(with_keys: bool) -> None:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            n = 0
            while not stop.is_set():
                n += 1
                body = {"name": f"Storm {threading.get_ident()} {n}", "secret_name": "s", "age": n}
                key = str(uuid.uuid4())
                try:
                    response = http.post(
                        "/heroes", json=body, headers={"Idempotency-Key": key} if with_keys else {}
                    )
                except httpx.TransportError:
                    if with_keys:
                        keyed.append((key, body, None))
                    return
                if response.status_code == 201:
                    acknowledged.append(response.json())
                if with_keys:
                    created = response.json() if response.status_code == 201 else None
                    keyed.append((key, body, created))

    writers = [threading.Thread(target=write, args=(n % 2 == 0,)) for n in range(8)]
    for writer in writers:
        writer.start()
    while len(acknowledged) < 200:
        stop.wait(0.05)
    server.kill()
    stop.set()
    for writer in writers:
        writer.join()

    with running_server(database_url) as restarted:
        stored = stored_heroes(restarted.url)
        with httpx.Client(base_url=restarted.url, timeout=5) as http:
            retried = [
                http.post("/heroes", json=body, headers={"Idempotency-Key": key})
                for key, body, _ in keyed
            ]
        after_retries = stored_heroes(restarted.url)

    missing = [hero for hero in acknowledged if stored.get(hero["id"]) != hero]
    # A create whose answer was lost in the kill may be stored too, but only whole.
    torn = [hero for hero in stored.values() if hero["age"] != int(hero["name"].split()[-1])]
    print(f"kill -9: acknowledged {len(acknowledged)}, found {len(acknowledged) - len(missing)}")
    assert len(acknowledged) >= 200
    assert missing == []
    assert torn == []
    # A keyed create answered before the kill is answered again; one whose answer was lost is
    # created by its retry only if the kill took it whole, key and hero: never twice.
    for (_, body, first), response in zip(keyed, retried, strict=True):
        assert response.status_code == 201, response.text
        stored_before = any(hero["name"] == body["name"] for hero in stored.values())
        if first is not None or stored_before:
            assert response.headers["idempotent-replayed"] == "true", body
        if first is not None:
            assert response.json() == first
    names = Counter(hero["name"] for hero in after_retries.values())
    assert all(names[body["name"]] == 1 for _, body, _ in keyed)


def test_server_does_not_announce_itself(tmp_path: object) -> None:
    with running_server(f"sqlite:///{tmp_path}/h.db") as server:
        response = httpx.get(f"{server.url}/heroes")

    assert "server" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"
