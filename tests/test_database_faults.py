"""A database that goes away gives 503 with Retry-After, never a 500 or a hang, then recovers.

On PostgreSQL, and on PostgreSQL behind PgBouncer: there also a pool whose server connections
are all taken.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from litestar import Litestar
from litestar.testing import TestClient

from service.app import create_app
from service.settings import Pooler, Settings
from tests import pgbouncer
from tests.conftest import IN_CI, POOLERS, POSTGRES_SERVER, migrate, start_pgbouncer
from tests.helpers import Client, TcpProxy, assert_error, create, new_hero


@pytest.fixture
def proxy(postgres_database: str) -> Iterator[TcpProxy]:
    url = sa.make_url(postgres_database)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def proxied_client(postgres_database: str, proxy: TcpProxy) -> Iterator[Client]:
    url = sa.make_url(postgres_database).set(port=proxy.port)
    settings = Settings(
        database_url=url.render_as_string(hide_password=False), db_connect_timeout=2
    )
    with TestClient[Litestar](create_app(settings)) as client:
        yield client


def test_postgres_going_away_is_503_with_retry_after_and_recovery_is_automatic(
    proxied_client: Client, proxy: TcpProxy
) -> None:
    hero = create(proxied_client, "Before")

    proxy.stop()
    during = [
        proxied_client.get(f"/heroes/{hero['id']}"),
        proxied_client.post("/heroes", json=new_hero("During")),
        proxied_client.get("/heroes"),
        proxied_client.get("/health/ready"),
    ]
    proxy.start()
    after = proxied_client.get(f"/heroes/{hero['id']}")

    for response in during:
        assert_error(response, 503)
        assert response.headers["retry-after"] == "1"
    assert proxied_client.get("/health/live").status_code == 200
    assert after.json() == hero
    assert [h["name"] for h in proxied_client.get("/heroes").json()] == ["Before"]


@pytest.fixture
def own_postgres_database(postgres_url: str) -> Iterator[str]:
    """A migrated PostgreSQL database of the test's own, which it may turn read-only; dropped."""
    name = f"hero_faults_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    migrate(url)
    yield url
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def fail_over(url: str, *, read_only: bool) -> None:
    """Make new sessions of ``url``'s database read-only (a standby) or not, and cut the others.

    What the service sees when a failover moves its connections: they are cut, and the server
    they reach next refuses writes until a primary takes over.
    """
    name = sa.make_url(url).database
    setting = "SET default_transaction_read_only = on" if read_only else "RESET ALL"
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" {setting}')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name]
        )


def test_read_only_postgres_is_503_for_writes_and_writes_resume_after_the_failover(
    own_postgres_database: str,
) -> None:
    with TestClient[Litestar](create_app(Settings(database_url=own_postgres_database))) as client:
        hero = create(client, "Before")

        fail_over(own_postgres_database, read_only=True)
        # A read finds the cut connection and runs again on a new one. (A write on a cut
        # connection is 503, in doubt when it may have been sent: tested with the proxy.)
        assert client.get("/heroes").status_code == 200
        refused = [
            client.post("/heroes", json=new_hero("During")),
            client.patch(f"/heroes/{hero['id']}", json={"age": 40}),
            client.delete(f"/heroes/{hero['id']}"),
        ]
        read = client.get(f"/heroes/{hero['id']}")
        fail_over(own_postgres_database, read_only=False)
        assert client.get("/heroes").status_code == 200
        after = client.post("/heroes", json=new_hero("After"))

        for response in refused:
            error = assert_error(response, 503)
            assert response.headers["retry-after"] == "1"
            assert "nothing was stored" in error.detail
        assert read.json() == hero
        assert after.status_code == 201, after.text
        assert [h["name"] for h in client.get("/heroes").json()] == ["Before", "After"]


@pytest.mark.parametrize("pooler", ["none", "transaction"])
def test_connections_remade_after_a_failover_leave_no_coroutine_unawaited(
    own_postgres_database: str, pooler: Pooler
) -> None:
    """The pooled connections found cut are made again; the driver's connect coroutine that
    SQLAlchemy leaves unstarted on the way is closed, not left for the collector to report
    wherever it runs (on 3.12, inside a namedtuple's ``__new__``, that report fails a test)."""
    settings = Settings(database_url=own_postgres_database, db_pooler=pooler)
    with (
        TestClient[Litestar](create_app(settings)) as client,
        warnings.catch_warnings(record=True) as reported,
    ):
        warnings.simplefilter("always")
        hero = create(client, "Before")
        with concurrent.futures.ThreadPoolExecutor(4) as pool:  # several pooled connections
            list(pool.map(lambda _: client.get("/heroes"), range(16)))
        fail_over(own_postgres_database, read_only=False)
        answers = [client.get(f"/heroes/{hero['id']}").status_code for _ in range(8)]
        gc.collect()

    # Straight to PostgreSQL the pooler mode retries a read once, on another pooled connection,
    # which may be cut too: a 503 then, until the pool holds new ones.
    assert set(answers) <= {200, 503}
    assert answers[-4:] == [200] * 4
    elsewhere = [
        f"{w.filename}:{w.lineno}: {w.message}"
        for w in reported
        if "never awaited" in str(w.message) and not w.filename.endswith("concurrency.py")
    ]
    assert elsewhere == []  # where SQLAlchemy closes its own coroutine, the filter hides it


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {seconds} s"
        time.sleep(0.02)


def waiting_on_a_lock(url: str) -> bool:
    """Whether a statement on ``url``'s database waits for a lock."""
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as admin:
        found = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
            [sa.make_url(url).database],
        ).fetchone()
    return bool(found and found[0])


def stored_names(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as connection:
        return [name for (name,) in connection.execute("SELECT name FROM heroes ORDER BY id")]


@pytest.mark.parametrize("keyed", [True, False], ids=["with-key", "without-key"])
def test_a_write_cut_off_mid_statement_is_503_in_doubt_and_a_keyed_retry_creates_once(
    postgres_database: str, proxied_client: Client, proxy: TcpProxy, keyed: bool
) -> None:
    headers = {"Idempotency-Key": str(uuid.uuid4())} if keyed else {}
    body = new_hero("Cut off")
    answers: list[httpx.Response] = []
    # The pooled connection has the statement prepared already, so the statement cut off is
    # wholly sent (asyncpg prepares a new one first: a cut before it runs would store nothing).
    warm_up = {"Idempotency-Key": str(uuid.uuid4())} if keyed else {}
    assert proxied_client.post("/heroes", json=new_hero("Warm"), headers=warm_up).status_code == 201
    with psycopg.connect(postgres_database) as locker:
        # The INSERT waits for this lock; the connection is cut meanwhile; the server, which
        # does not notice while waiting, stores the row once the lock is released.
        locker.execute("LOCK TABLE heroes IN SHARE ROW EXCLUSIVE MODE")
        writing = threading.Thread(
            target=lambda: answers.append(
                proxied_client.post("/heroes", json=body, headers=headers)
            )
        )
        writing.start()
        wait_until(lambda: waiting_on_a_lock(postgres_database), "waiting for the lock")
        proxy.stop()
        writing.join(10)
    wait_until(lambda: stored_names(postgres_database) == ["Warm", "Cut off"], "stored")
    proxy.start()
    retried = proxied_client.post("/heroes", json=body, headers=headers)

    error = assert_error(answers[0], 503)
    assert answers[0].headers["retry-after"] == "1"
    if keyed:
        assert "same Idempotency-Key is safe" in error.detail
        assert retried.status_code == 201, retried.text
        assert retried.headers["idempotent-replayed"] == "true"
        assert stored_names(postgres_database) == ["Warm", "Cut off"]
    else:
        assert "may have been stored" in error.detail
        assert stored_names(postgres_database) == ["Warm", "Cut off", "Cut off"]


# Behind PgBouncer ----------------------------------------------------------------------------


@pytest.fixture
def bouncer_before_proxy(
    postgres_database: str, proxy: TcpProxy
) -> Iterator[tuple[pgbouncer.PgBouncer, str]]:
    """PgBouncer (as deploy/ has it) whose PostgreSQL is behind ``proxy``; the app's URL."""
    if reason := pgbouncer.missing():
        if IN_CI:
            pytest.fail(f"CI must test PostgreSQL through PgBouncer too: {reason}")
        pytest.skip(reason)
    user = sa.make_url(postgres_database).username
    with pgbouncer.PgBouncer(("127.0.0.1", proxy.port), user=user, pool_size=1) as bouncer:
        yield bouncer, bouncer.url(postgres_database)


def test_postgres_going_away_behind_pgbouncer_is_503_and_recovery_is_automatic(
    bouncer_before_proxy: tuple[pgbouncer.PgBouncer, str], proxy: TcpProxy
) -> None:
    _, url = bouncer_before_proxy
    settings = Settings(database_url=url, db_pooler="transaction", db_connect_timeout=2)
    with TestClient[Litestar](create_app(settings)) as client:
        hero = create(client, "Before")

        proxy.stop()
        during = [
            client.get(f"/heroes/{hero['id']}"),
            client.post("/heroes", json=new_hero("During")),
            client.get("/heroes"),
            client.get("/health/ready"),
        ]
        proxy.start()
        # PgBouncer connects again server_login_retry (1 s in deploy/pgbouncer.ini) after it
        # last failed to; until then it refuses at once.
        after = client.get(f"/heroes/{hero['id']}")
        for _ in range(50):
            if after.status_code == 200:
                break
            assert_error(after, 503)
            time.sleep(0.1)
            after = client.get(f"/heroes/{hero['id']}")

        names = [h["name"] for h in client.get("/heroes").json()]

    for response in during:
        assert_error(response, 503)
        assert response.headers["retry-after"] == "1"
    assert after.json() == hero
    assert "During" not in names


@pytest.mark.parametrize(
    ("stopped", "pooler"),
    [
        ("PostgreSQL", None),
        *[(stopped, pooler) for pooler in POOLERS for stopped in ("PostgreSQL", "PgBouncer")],
    ],
)
def test_writes_while_the_database_cannot_be_reached_are_503_and_nothing_stored(
    postgres_database: str, proxy: TcpProxy, stopped: str, pooler: str | None
) -> None:
    """Connections cut and new ones refused: no statement is sent, so none is in doubt.

    Straight to PostgreSQL (the direct mode), and through each PgBouncer (in its mode) with
    PostgreSQL or PgBouncer itself stopped; several writes, so that both the pooled connection
    found dead and the connects that fail afterwards are answered.
    """
    url = sa.make_url(postgres_database).set(port=proxy.port)
    proxied = url.render_as_string(hide_password=False)
    with contextlib.ExitStack() as stack:
        if pooler is None:
            settings = Settings(database_url=proxied, db_connect_timeout=2)
            stop = proxy.stop
        else:
            bouncer = start_pgbouncer(POOLERS[pooler], proxied, pool_size=1, query_wait_timeout=1)
            stack.callback(bouncer.stop)
            settings = Settings(
                database_url=bouncer.url(postgres_database),
                db_pooler="transaction",
                db_pooler_prepared=pooler == "pgbouncer-prepared",
                db_connect_timeout=2,
            )
            stop = bouncer.stop if stopped == "PgBouncer" else proxy.stop
        client = stack.enter_context(TestClient[Litestar](create_app(settings)))
        create(client, "Before")

        stop()
        during = [client.post("/heroes", json=new_hero("During")) for _ in range(3)]

    for response in during:
        error = assert_error(response, 503)
        assert response.headers["retry-after"] == "1"
        assert "nothing was stored" in error.detail
    assert stored_names(postgres_database) == ["Before"]


@contextlib.contextmanager
def every_server_session_taken(url: str) -> Iterator[None]:
    """A transaction held open through PgBouncer, on its only server session, until the end."""
    with psycopg.connect(url, prepare_threshold=None) as holder:
        holder.execute("SELECT 1")  # begins the transaction: PgBouncer keeps the session for it
        yield
        holder.rollback()


@pytest.mark.parametrize("query_wait_timeout", ["1", "120"])
def test_a_full_pgbouncer_pool_is_503_with_retry_after_never_a_hang(
    postgres_database: str, query_wait_timeout: str
) -> None:
    """PgBouncer's queue gives up after its query_wait_timeout, as deploy/ sets it (the service's
    DB_POOL_TIMEOUT); with PgBouncer's default, 120 s, the service's own bound ends the wait."""
    if reason := pgbouncer.missing():
        if IN_CI:
            pytest.fail(f"CI must test PostgreSQL through PgBouncer too: {reason}")
        pytest.skip(reason)
    target = sa.make_url(postgres_database)
    with pgbouncer.PgBouncer(
        (target.host or "127.0.0.1", target.port or 5432),
        user=target.username,
        pool_size=1,
        query_wait_timeout=query_wait_timeout,
    ) as bouncer:
        url = bouncer.url(postgres_database)
        settings = Settings(
            database_url=url,
            db_pooler="transaction",
            db_pool_timeout=1,
            db_statement_timeout_ms=1000,
        )
        with TestClient[Litestar](create_app(settings)) as client:
            hero = create(client, "Before")
            with every_server_session_taken(url):
                waited = [client.post("/heroes", json=new_hero("Waited"))]
                if query_wait_timeout == "1":  # each wait on the service's own bound takes 7 s
                    waited.append(client.get(f"/heroes/{hero['id']}"))
            after = client.get("/heroes")

    for response in waited:
        assert_error(response, 503)
        assert response.headers["retry-after"] == "1"
    names = [h["name"] for h in after.json()]
    assert "Before" in names
    assert "Waited" not in names  # PgBouncer never sent it to PostgreSQL
