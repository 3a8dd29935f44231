"""PATCH as a property: any sequence of partial updates acts as ``dict.update`` on the hero."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient

from service.app import create_app
from service.database.tables import AGE_MAX, NAME_MAX_LENGTH, Hero
from tests.helpers import direct_engine, moment, settings_for, without_timestamps

NAMES = st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=NAME_MAX_LENGTH)
"""Every name the API documents as valid: 1 to 255 characters of any kind but NUL."""
AGES = st.none() | st.integers(min_value=0, max_value=AGE_MAX)
NEW_HEROES = st.fixed_dictionaries(
    {"name": NAMES, "secret_name": NAMES}, optional={"age": st.integers(0, AGE_MAX)}
)
UPDATES = st.fixed_dictionaries({}, optional={"name": NAMES, "secret_name": NAMES, "age": AGES})
"""Partial updates: any subset of the fields, the empty one included, age possibly null."""


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient[Litestar]]:
    """One app for all the examples of a test; each example works on a hero of its own."""
    app = create_app(settings_for(database_url, access_log=False))
    with TestClient[Litestar](app) as client:
        yield client


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """A connection to the same database, to read what the API never shows: the secret name."""
    engine = direct_engine(database_url)
    yield engine
    engine.dispose()


def stored_secret_name(engine: sa.Engine, hero_id: int) -> str | None:
    with engine.connect() as connection:
        query = sa.select(Hero.secret_name).where(Hero.id == hero_id)
        secret: str | None = connection.execute(query).scalar_one_or_none()
        return secret


@given(new_hero=NEW_HEROES, updates=st.lists(UPDATES, max_size=6))
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    # The client is shared by the examples on purpose: building an app per example costs more
    # than the example, and every example creates a hero of its own.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_patches_act_like_dict_update(
    client: TestClient[Litestar],
    engine: sa.Engine,
    new_hero: dict[str, Any],
    updates: list[dict[str, Any]],
) -> None:
    created = client.post("/heroes", json=new_hero)
    assert created.status_code == 201, created.text
    hero_id = created.json()["id"]
    expected = {"id": hero_id, "age": None, **new_hero}
    before = created.json()

    for update in updates:
        expected.update(update)
        public = {key: value for key, value in expected.items() if key != "secret_name"}

        patched = client.patch(f"/heroes/{hero_id}", json=update)

        assert patched.status_code == 200, (update, patched.text)
        after = patched.json()
        assert without_timestamps(after) == public, update
        assert client.get(f"/heroes/{hero_id}").json() == after, update
        assert stored_secret_name(engine, hero_id) == expected["secret_name"], update
        assert after["created_at"] == before["created_at"], update
        changed = moment(after["updated_at"]) > moment(before["updated_at"])
        assert changed is bool(update), update
        before = after
