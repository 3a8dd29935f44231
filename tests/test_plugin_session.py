"""A route that asks Litestar's SQLAlchemy plugin for its per-request ``db_session`` works here.

The API's own operations run one statement each on a pooled connection (see docs/database.md);
a handler written the conventional way, with the plugin's session, gets a real transaction on
both databases: what it commits is stored, what it rolls back or leaves uncommitted is not.
On SQLite the session is a sync ``Session`` (its handler runs in a thread), on PostgreSQL an
``AsyncSession``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from litestar import Litestar, get, post
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath
from litestar.testing import TestClient
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from service.app import create_app
from service.database.tables import Hero
from service.settings import Settings
from tests.helpers import assert_error, create

NAMES = sa.select(Hero.name).order_by(Hero.id)


def new_hero(name: str) -> Hero:
    hero_id = int(name.removeprefix("id-")) if name.startswith("id-") else None
    return Hero(id=hero_id, name=name, secret_name=f"session-secret-{name}")


@get("/session/heroes", sync_to_thread=True)
def names_sync(db_session: NamedDependency[Session]) -> list[str]:
    return list(db_session.scalars(NAMES))


@post("/session/heroes/{name:str}/{outcome:str}", sync_to_thread=True)
def add_sync(
    db_session: NamedDependency[Session], name: FromPath[str], outcome: FromPath[str]
) -> dict[str, int | None]:
    hero = new_hero(name)
    db_session.add(hero)
    db_session.flush()  # the INSERT has run, in the session's transaction
    hero_id = hero.id
    if outcome == "commit":
        db_session.commit()
    elif outcome == "rollback":
        db_session.rollback()
    return {"id": hero_id}


@get("/session/heroes")
async def names_async(db_session: NamedDependency[AsyncSession]) -> list[str]:
    return list(await db_session.scalars(NAMES))


@post("/session/heroes/{name:str}/{outcome:str}")
async def add_async(
    db_session: NamedDependency[AsyncSession], name: FromPath[str], outcome: FromPath[str]
) -> dict[str, int | None]:
    hero = new_hero(name)
    db_session.add(hero)
    await db_session.flush()
    hero_id = hero.id  # read before a commit expires it
    if outcome == "commit":
        await db_session.commit()
    elif outcome == "rollback":
        await db_session.rollback()
    return {"id": hero_id}


ROUTES: dict[str, list[HTTPRouteHandler]] = {
    "sqlite": [names_sync, add_sync],
    "postgresql": [names_async, add_async],
}


@pytest.fixture
def session_client(settings: Settings) -> Iterator[TestClient[Litestar]]:
    """An app of create_app with the session routes of its database added."""
    app = create_app(settings)
    backend = sa.make_url(settings.database_url).get_backend_name()
    for handler in ROUTES[backend]:
        app.register(handler)
    with TestClient(app) as client:
        yield client


def stored_names(client: TestClient[Litestar]) -> list[str]:
    return [hero["name"] for hero in client.get("/heroes").json()]


def test_a_session_route_reads_what_the_api_wrote(session_client: TestClient[Litestar]) -> None:
    create(session_client, "Deadpond")
    create(session_client, "Rusty-Man")

    response = session_client.get("/session/heroes")

    assert response.status_code == 200
    assert response.json() == ["Deadpond", "Rusty-Man"]


def test_what_a_session_route_commits_the_api_serves(
    session_client: TestClient[Litestar],
) -> None:
    response = session_client.post("/session/heroes/Spider-Boy/commit")

    assert response.status_code == 201
    hero_id = response.json()["id"]
    hero = session_client.get(f"/heroes/{hero_id}")
    assert hero.status_code == 200
    assert hero.json()["name"] == "Spider-Boy"
    assert hero.headers["ETag"] == '"1"'


@pytest.mark.parametrize("outcome", ["rollback", "left-open"])
def test_what_a_session_route_does_not_commit_is_not_stored(
    session_client: TestClient[Litestar], outcome: str
) -> None:
    create(session_client, "Deadpond")

    response = session_client.post(f"/session/heroes/Tarantula/{outcome}")

    assert response.status_code == 201
    assert stored_names(session_client) == ["Deadpond"]
    assert session_client.get("/session/heroes").json() == ["Deadpond"]


def test_api_writes_go_on_after_session_routes(session_client: TestClient[Litestar]) -> None:
    for outcome in ("commit", "rollback", "left-open", "commit"):
        session_client.post(f"/session/heroes/Hero-{outcome}/{outcome}")

    create(session_client, "Black Lion")

    assert stored_names(session_client) == ["Hero-commit", "Hero-commit", "Black Lion"]


def test_a_write_the_database_refuses_in_a_session_is_409(
    session_client: TestClient[Litestar],
) -> None:
    hero = create(session_client, "Deadpond")

    response = session_client.post(f"/session/heroes/id-{hero['id']}/commit")

    assert_error(response, 409)
    assert stored_names(session_client) == ["Deadpond"]
