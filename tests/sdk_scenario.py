"""Every hero operation through the Python client that openapi-python-client generates.

tests/test_sdk.py generates the package ``hero_service_client`` from the served document and
runs this against a live server, with the package on the path::

    PYTHONPATH=<dir holding hero_service_client> python -m tests.sdk_scenario http://127.0.0.1:8000

It is written as a user of the client would write it: generated functions and models only, no
raw HTTP. An assertion that fails exits non-zero with its traceback.
"""

from __future__ import annotations

import sys
import uuid
from http import HTTPStatus

from hero_service_client import Client
from hero_service_client.api.heroes import (
    create_hero,
    delete_hero,
    get_hero,
    list_heroes,
    update_hero,
)
from hero_service_client.models import Deleted, Error, HeroCreate, HeroPublic, HeroUpdate

NOT_FOUND = Error(status_code=404, detail="Hero not found")


def create(client: Client, name: str, age: int | None) -> HeroPublic:
    """Create a hero and check the 201 answer: the hero and its URL in ``Location``."""
    body = HeroCreate(name=name, secret_name="Secret Identity", age=age)
    response = create_hero.sync_detailed(client=client, body=body)
    hero = response.parsed
    assert response.status_code == HTTPStatus.CREATED, response.content
    assert isinstance(hero, HeroPublic), hero
    assert (hero.name, hero.age) == (name, age)
    assert response.headers["Location"] == f"/heroes/{hero.id}"
    return hero


def read(client: Client, hero_id: int) -> HeroPublic:
    """The hero with ``hero_id``, which must exist."""
    hero = get_hero.sync(hero_id, client=client)
    assert isinstance(hero, HeroPublic), hero
    return hero


def run(base_url: str) -> None:
    """Create, read, list, update and delete heroes; check the errors a client sees."""
    # Heroes of other tests may share the database: this run's heroes share a name of their own.
    name = f"SDK hero {uuid.uuid4().hex[:8]}"
    with Client(base_url=base_url, raise_on_unexpected_status=True) as client:
        heroes = [create(client, name, age) for age in (10, 20, 30, 40, None)]

        assert read(client, heroes[2].id) == heroes[2]

        page = list_heroes.sync(client=client, name=name, offset=1, limit=2)
        assert page == heroes[1:3], page
        older = list_heroes.sync(client=client, name=name, min_age=25)
        assert older == heroes[2:4], older
        between = list_heroes.sync(client=client, name=name, min_age=15, max_age=35)
        assert between == heroes[1:3], between

        # Fields left UNSET are not sent, so they stay as they are.
        renamed = update_hero.sync(heroes[0].id, client=client, body=HeroUpdate(name="Renamed"))
        assert renamed == HeroPublic(id=heroes[0].id, name="Renamed", age=10), renamed
        # age=None is sent as an explicit null, which clears the age.
        cleared = update_hero.sync(heroes[3].id, client=client, body=HeroUpdate(age=None))
        assert cleared == HeroPublic(id=heroes[3].id, name=name, age=None), cleared
        assert read(client, heroes[3].id) == cleared

        deleted = delete_hero.sync(heroes[1].id, client=client)
        assert deleted == Deleted(ok=True), deleted
        gone = get_hero.sync_detailed(heroes[1].id, client=client)
        assert (gone.status_code, gone.parsed) == (HTTPStatus.NOT_FOUND, NOT_FOUND), gone
        again = delete_hero.sync_detailed(heroes[1].id, client=client)
        assert (again.status_code, again.parsed) == (HTTPStatus.NOT_FOUND, NOT_FOUND), again

        invalid = HeroCreate(name=name, secret_name="Secret Identity", age=-1)
        refused = create_hero.sync_detailed(client=client, body=invalid)
        error = refused.parsed
        assert refused.status_code == HTTPStatus.BAD_REQUEST, refused.content
        assert isinstance(error, Error), error
        assert isinstance(error.extra, list), error
        assert [(e.key, e.source) for e in error.extra] == [("age", "body")], error


if __name__ == "__main__":
    run(sys.argv[1])
    print("ok")
