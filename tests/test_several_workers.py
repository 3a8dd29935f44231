"""Two worker processes on one port: metrics, the shared rate limit and graceful restarts."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import redis

from tests.live import Server, running_server, stored_heroes

pytestmark = pytest.mark.live

SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.MULTILINE)


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = {f'{key}="{value}"' for key, value in labels.items()}
    return sum(
        float(sample["value"])
        for sample in SAMPLE.finditer(text)
        if sample["name"] == name and wanted <= set(sample["labels"].split(","))
    )


def heroes_served(text: str, status: int = 200) -> float:
    """``GET /heroes`` answers counted with ``status``, over every worker."""
    return metric(
        text, "hero_service_requests_total", method="GET", path="/heroes", status_code=str(status)
    )


def get_on_a_new_connection(url: str) -> httpx.Response:
    """One request on a connection of its own, so that successive ones reach either worker."""
    return httpx.get(url, timeout=10, headers={"Connection": "close"})


def test_metrics_sum_every_worker_and_never_go_back_over_10_scrapes(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    database = f"sqlite:///{tmp_path}/h.db"
    totals: list[float] = []
    answered: list[int] = []
    with running_server(
        database, workers=2, METRICS="true", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)
    ) as server:
        served = 0
        for _ in range(10):
            for _ in range(5):
                assert get_on_a_new_connection(f"{server.url}/heroes").status_code == 200
                served += 1
            answered.append(served)
            totals.append(heroes_served(get_on_a_new_connection(f"{server.url}/metrics").text))
        final = heroes_served(get_on_a_new_connection(f"{server.url}/metrics").text)
        writers = sorted(path.name for path in metrics_dir.glob("counter_*.db"))

    print(f"scrape totals {totals}, then {final}, for {served} answers; files {writers}")
    assert totals == sorted(totals), "a counter went backwards between scrapes"
    for i, total in enumerate(totals):
        # Everything answered before the previous scrape is in this one, nothing more than sent.
        assert (answered[i - 1] if i else 0) <= total <= answered[i]
    assert final == served == 50
    assert len(writers) == 2, "both workers served, each counting in its own file"


def test_metrics_keep_the_counts_of_a_worker_that_was_killed_and_restarted(
    tmp_path: Path,
) -> None:
    metrics_dir = tmp_path / "metrics"
    with running_server(
        f"sqlite:///{tmp_path}/h.db",
        workers=2,
        METRICS="true",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    ) as server:
        for _ in range(20):
            get_on_a_new_connection(f"{server.url}/heroes")
        before = heroes_served(get_on_a_new_connection(f"{server.url}/metrics").text)
        victim = server.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        for _ in range(20):
            assert get_on_a_new_connection(f"{server.url}/heroes").status_code == 200
        server.wait_until_ready(started=3)  # the two workers, then the replacement
        for _ in range(20):
            assert get_on_a_new_connection(f"{server.url}/heroes").status_code == 200
        after = heroes_served(get_on_a_new_connection(f"{server.url}/metrics").text)
        live_gauges_of_the_dead = list(metrics_dir.glob(f"gauge_live*_{victim}.db"))

    print(f"killed worker {victim}: GET /heroes counted {before} before, {after} after")
    assert before == 20
    assert after == 60
    assert live_gauges_of_the_dead == []


@dataclass
class Admission:
    statuses: dict[int, int]
    refusals: list[dict[str, Any]]
    counted_in_redis: int


async def _hammer(url: str, clients: int, requests_each: int) -> list[tuple[int, Any, Any]]:
    answers: list[tuple[int, Any, Any]] = []
    # A connection per request: a burst of connections made at once is often all accepted by
    # the one worker that wakes first, and the test is about two workers counting together.
    connector = aiohttp.TCPConnector(limit=clients, force_close=True)
    async with aiohttp.ClientSession(url, connector=connector) as http:

        async def client() -> None:
            for _ in range(requests_each):
                async with http.get("/heroes") as response:
                    answers.append((response.status, dict(response.headers), await response.json()))

        await asyncio.gather(*(client() for _ in range(clients)))
    return answers


LIMIT = 37
CLIENTS = 64
REQUESTS_EACH = 4


@pytest.fixture
def admission(tmp_path: Path, redis_url: str, redis_key_prefix: str) -> Admission:
    """64 concurrent clients, 4 requests each, against 2 workers limited to 37 per minute."""
    with running_server(
        f"sqlite:///{tmp_path}/h.db",
        workers=2,
        RATE_LIMIT_PER_MINUTE=str(LIMIT),
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=redis_key_prefix,
        METRICS="true",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    ) as server:
        answers = asyncio.run(_hammer(server.url, CLIENTS, REQUESTS_EACH))
        scrape = httpx.get(f"{server.url}/metrics", timeout=10).text
        workers_that_served = len(list((tmp_path / "metrics").glob("counter_*.db")))
    with redis.Redis.from_url(redis_url) as client:
        counted = int(client.get(f"{redis_key_prefix}:127.0.0.1") or 0)
    statuses: dict[int, int] = {}
    for status, _, _ in answers:
        statuses[status] = statuses.get(status, 0) + 1
    refusals = [{"headers": h, "body": b} for s, h, b in answers if s == 429]
    print(
        f"limit {LIMIT}, {CLIENTS} clients x {REQUESTS_EACH} on 2 workers: statuses {statuses}, "
        f"counted in Redis {counted}, 429s in /metrics {heroes_served(scrape, 429)}, "
        f"workers that served: {workers_that_served}"
    )
    assert workers_that_served == 2
    return Admission(statuses, refusals, counted)


def test_rate_limit_through_redis_admits_exactly_the_limit_across_two_workers(
    admission: Admission,
) -> None:
    assert admission.statuses == {200: LIMIT, 429: CLIENTS * REQUESTS_EACH - LIMIT}
    assert admission.counted_in_redis == CLIENTS * REQUESTS_EACH


def test_rate_limit_refusals_are_errors_that_say_when_to_come_back(admission: Admission) -> None:
    refusal = admission.refusals[0]
    headers = {k.lower(): v for k, v in refusal["headers"].items()}

    assert refusal["body"]["status_code"] == 429
    assert refusal["body"]["detail"].startswith("Too many requests")
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["ratelimit-limit"] == str(LIMIT)
    assert headers["ratelimit-remaining"] == "0"
    assert headers["ratelimit-policy"] == f"{LIMIT}; w=60"


def test_rate_limited_answers_are_counted_in_the_metrics(
    tmp_path: Path, redis_url: str, redis_key_prefix: str
) -> None:
    with running_server(
        f"sqlite:///{tmp_path}/h.db",
        workers=2,
        RATE_LIMIT_PER_MINUTE="3",
        REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=redis_key_prefix,
        METRICS="true",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    ) as server:
        statuses = [get_on_a_new_connection(f"{server.url}/heroes").status_code for _ in range(8)]
        scrape = get_on_a_new_connection(f"{server.url}/metrics").text

    assert statuses == [200] * 3 + [429] * 5
    assert (heroes_served(scrape, 200), heroes_served(scrape, 429)) == (3, 5)


def test_behind_a_trusted_proxy_the_limit_and_the_log_use_the_forwarded_client(
    tmp_path: Path,
) -> None:
    log = tmp_path / "server.log"
    with running_server(
        f"sqlite:///{tmp_path}/h.db",
        log=log,
        RATE_LIMIT_PER_MINUTE="1",
        FORWARDED_ALLOW_IPS="127.0.0.1",
        ACCESS_LOG="true",
    ) as server:

        def get(client: str) -> int:
            forwarded = {"X-Forwarded-For": f"198.51.100.9, {client}", "X-Request-ID": client}
            return httpx.get(f"{server.url}/heroes", headers=forwarded).status_code

        statuses = [get("203.0.113.1"), get("203.0.113.1"), get("203.0.113.2")]
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]

    assert statuses == [200, 429, 200]
    assert [
        (line["request_id"], line["client"]) for line in lines if line["path"] == "/heroes"
    ] == [
        ("203.0.113.1", "203.0.113.1"),
        ("203.0.113.1", "203.0.113.1"),
        ("203.0.113.2", "203.0.113.2"),
    ]


@dataclass
class Outcome:
    request_id: str
    method: str
    started: float
    ended: float
    status: int | None = None
    error: str | None = None


async def _load_until_stopped(
    server: Server, clients: int, settle_seconds: float
) -> tuple[list[Outcome], dict[int, dict[str, Any]], float]:
    """Mixed load; SIGTERM to the server after ``settle_seconds``; until every client is refused."""
    outcomes: list[Outcome] = []
    acknowledged: dict[int, dict[str, Any]] = {}
    sigterm_at = float("inf")
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(server.url, connector=connector, timeout=timeout) as http:

        async def client(n: int) -> None:
            for i in range(10**9):
                request_id = f"c{n}r{i}"
                method = "POST" if i % 2 == 0 else "GET"
                outcome = Outcome(request_id, method, time.monotonic(), 0.0)
                headers = {"X-Request-ID": request_id}
                try:
                    if method == "POST":
                        body = {"name": request_id, "secret_name": "s", "age": n}
                        async with http.post("/heroes", json=body, headers=headers) as response:
                            outcome.status = response.status
                            hero = await response.json()
                            if response.status == 201:
                                acknowledged[hero["id"]] = hero
                    else:
                        async with http.get("/heroes?limit=5", headers=headers) as response:
                            outcome.status = response.status
                            await response.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    outcome.error = type(exc).__name__
                    if isinstance(exc, aiohttp.ClientConnectorError):
                        refused = exc.os_error.errno == errno.ECONNREFUSED
                        outcome.error = "refused" if refused else f"connect: {exc.os_error}"
                    elif isinstance(exc, aiohttp.ClientOSError):
                        outcome.error = exc.strerror
                outcome.ended = time.monotonic()
                outcomes.append(outcome)
                if outcome.error and outcome.ended > sigterm_at:
                    return  # the server is going away; this client is done

        async def terminate() -> None:
            nonlocal sigterm_at
            await asyncio.sleep(settle_seconds)
            sigterm_at = time.monotonic()
            os.killpg(server.process.pid, signal.SIGTERM)

        await asyncio.gather(terminate(), *(client(n) for n in range(clients)))
    return outcomes, acknowledged, sigterm_at


def test_sigterm_under_load_finishes_accepted_requests_and_loses_no_write(
    database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    server = Server(database_url, workers=2, log=log, ACCESS_LOG="true")
    outcomes, acknowledged, sigterm_at = asyncio.run(_load_until_stopped(server, 64, 1.5))
    exit_code = server.process.wait(timeout=60)
    log_lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    seen_by_the_app = {line["request_id"]: line["status"] for line in log_lines}
    with running_server(database_url) as restarted:
        stored = stored_heroes(restarted.url)

    in_flight = [o for o in outcomes if o.started < sigterm_at < o.ended]
    failed = [o for o in outcomes if o.error]
    kinds: dict[str, int] = {}
    for o in failed:
        kinds[o.error or ""] = kinds.get(o.error or "", 0) + 1
    print(
        f"SIGTERM: {len(outcomes)} requests, {len(in_flight)} in flight at SIGTERM, of which "
        f"{sum(1 for o in in_flight if o.status)} answered "
        f"{sorted({o.status for o in in_flight if o.status})}; after it: {kinds}; "
        f"acknowledged heroes {len(acknowledged)}, found after restart "
        f"{sum(1 for i, h in acknowledged.items() if stored.get(i) == h)}"
    )
    assert exit_code == 0
    assert in_flight, "SIGTERM came while no request was in flight"
    assert all(o.status and o.status < 500 for o in outcomes if not o.error)
    # Every request the app took got its answer; the only failures are connections refused
    # once the server had stopped listening.
    assert all(o.ended > sigterm_at for o in failed)
    assert set(kinds) <= {"refused"}, kinds
    assert [o.request_id for o in failed if o.request_id in seen_by_the_app] == []
    assert all(seen_by_the_app[o.request_id] == o.status for o in outcomes if o.status)
    assert stored == acknowledged
