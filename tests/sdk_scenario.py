"""Every hero and team operation through the Python client that openapi-python-client generates.

tests/test_sdk.py generates the package ``hero_service_client`` from the served document and
runs this against a live server started with an ``API_KEY``, with the package on the path::

    PYTHONPATH=<dir holding hero_service_client> python -m tests.sdk_scenario \
        http://127.0.0.1:8000 <API key>

It is written as a user of the client would write it: generated functions and models only, no
raw HTTP. An assertion that fails exits non-zero with its traceback.
"""

from __future__ import annotations

import re
import sys
import uuid
from datetime import timedelta
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from hero_service_client import AuthenticatedClient, Client
from hero_service_client.api.heroes import (
    create_hero,
    delete_hero,
    get_hero,
    list_heroes,
    update_hero,
)
from hero_service_client.api.teams import (
    create_team,
    delete_team,
    get_team,
    list_teams,
    update_team,
)
from hero_service_client.models import (
    Deleted,
    Error,
    HeroCreate,
    HeroPublic,
    HeroPublicWithTeam,
    HeroUpdate,
    ListHeroesOrderBy,
    TeamCreate,
    TeamPublic,
    TeamPublicWithHeroes,
    TeamUpdate,
)
from hero_service_client.types import UNSET

NOT_FOUND = Error(status_code=404, detail="Hero not found")
UNAUTHORIZED = Error(
    status_code=401, detail="Writes need the header Authorization: Bearer <API key>."
)


def create(client: AuthenticatedClient, name: str, age: int | None) -> HeroPublic:
    """Create a hero and check the 201 answer: the hero and its URL in ``Location``."""
    body = HeroCreate(name=name, secret_name="Secret Identity", age=age)
    response = create_hero.sync_detailed(client=client, body=body)
    hero = response.parsed
    assert response.status_code == HTTPStatus.CREATED, response.content
    assert isinstance(hero, HeroPublic), hero
    assert (hero.name, hero.age) == (name, age)
    assert response.headers["Location"] == f"/heroes/{hero.id}"
    return hero


def fields(hero: HeroPublic | HeroPublicWithTeam) -> tuple[int, str, int | None]:
    """What a test can know of a hero in advance: all but its timestamps."""
    return (hero.id, hero.name, hero.age)


def same_hero(shown: HeroPublicWithTeam, hero: HeroPublic) -> bool:
    """Whether ``GET /heroes/{id}`` shows ``hero`` as the write answered it."""
    as_written = (hero.id, hero.name, hero.age, hero.created_at, hero.updated_at, hero.team_id)
    return as_written == (
        shown.id,
        shown.name,
        shown.age,
        shown.created_at,
        shown.updated_at,
        shown.team_id,
    )


def next_cursor(link: str | None) -> str | None:
    """The ``cursor`` of the next page a ``Link: <...>; rel="next"`` header points at."""
    found = re.fullmatch(r'<([^>]+)>; rel="next"', link or "")
    return parse_qs(urlsplit(found[1]).query)["cursor"][0] if found else None


def read(client: AuthenticatedClient, hero_id: int) -> HeroPublicWithTeam:
    """The hero with ``hero_id``, which must exist, with its team if it has one."""
    hero = get_hero.sync(hero_id, client=client)
    assert isinstance(hero, HeroPublicWithTeam), hero
    return hero


def retry_a_create(client: AuthenticatedClient, name: str) -> None:
    """A create retried with its Idempotency-Key answers the first hero again."""
    body, key = HeroCreate(name=name, secret_name="Secret Identity", age=50), str(uuid.uuid4())
    first = create_hero.sync_detailed(client=client, body=body, idempotency_key=key)
    retried = create_hero.sync_detailed(client=client, body=body, idempotency_key=key)
    assert first.status_code == retried.status_code == HTTPStatus.CREATED, retried.content
    assert retried.parsed == first.parsed, (first.parsed, retried.parsed)
    assert retried.headers["Idempotent-Replayed"] == "true", retried.headers
    other = HeroCreate(name=name, secret_name="Someone Else", age=50)
    reused = create_hero.sync_detailed(client=client, body=other, idempotency_key=key)
    assert reused.status_code == HTTPStatus.UNPROCESSABLE_ENTITY, reused.content


def anonymous_writes_are_refused(base_url: str, name: str) -> None:
    """Without the API key, a client reads but may not write: 401, in the Error shape."""
    with Client(base_url=base_url, raise_on_unexpected_status=True) as anonymous:
        body = HeroCreate(name=name, secret_name="Secret Identity")
        refused = create_hero.sync_detailed(client=anonymous, body=body)
        assert refused.status_code == HTTPStatus.UNAUTHORIZED, refused.content
        assert refused.parsed == UNAUTHORIZED, refused.parsed
        assert refused.headers["WWW-Authenticate"].startswith("Bearer"), refused.headers
        assert list_heroes.sync(client=anonymous, name=name) == []


def teams(client: AuthenticatedClient, name: str) -> None:
    """A team: created, listed, read with its heroes, changed and deleted; a hero joins it."""
    body = TeamCreate(name=f"{name} team", headquarters="Sharp Tower")
    team = create_team.sync(client=client, body=body, idempotency_key=str(uuid.uuid4()))
    assert isinstance(team, TeamPublic), team
    listed = list_teams.sync(client=client, name=body.name)
    assert listed == [team], listed

    member = HeroCreate(name=name, secret_name="Secret Identity", team_id=team.id)
    hero = create_hero.sync(client=client, body=member)
    assert isinstance(hero, HeroPublic), hero
    assert hero.team_id == team.id, hero
    shown = read(client, hero.id)
    assert shown.team == team, shown
    assert list_heroes.sync(client=client, team_id=team.id) == [hero]
    with_heroes = get_team.sync(team.id, client=client)
    assert isinstance(with_heroes, TeamPublicWithHeroes), with_heroes
    assert with_heroes.heroes == [hero], with_heroes

    moved = update_team.sync(team.id, client=client, body=TeamUpdate(headquarters="Bar"))
    assert isinstance(moved, TeamPublic), moved
    assert (moved.name, moved.headquarters) == (team.name, "Bar"), moved

    nowhere = HeroCreate(name=name, secret_name="Secret Identity", team_id=2**62)
    refused = create_hero.sync_detailed(client=client, body=nowhere)
    error = refused.parsed
    assert refused.status_code == HTTPStatus.UNPROCESSABLE_ENTITY, refused.content
    assert isinstance(error, Error), error
    assert isinstance(error.extra, list), error
    assert [(e.key, e.source) for e in error.extra] == [("team_id", "body")], error

    assert delete_team.sync(team.id, client=client) == Deleted(ok=True)
    freed = read(client, hero.id)
    assert (freed.team_id, freed.team) == (UNSET, UNSET), freed
    gone = get_team.sync_detailed(team.id, client=client)
    assert gone.status_code == HTTPStatus.NOT_FOUND, gone.content


def run(base_url: str, api_key: str) -> None:
    """Create, read, list, update and delete heroes; check the errors a client sees."""
    # Heroes of other tests may share the database: this run's heroes share a name of their own.
    name = f"SDK hero {uuid.uuid4().hex[:8]}"
    anonymous_writes_are_refused(base_url, name)
    authenticated = AuthenticatedClient(
        base_url=base_url, token=api_key, raise_on_unexpected_status=True
    )
    with authenticated as client:
        heroes = [create(client, name, age) for age in (10, 20, 30, 40, None)]

        assert same_hero(read(client, heroes[2].id), heroes[2])

        page = list_heroes.sync(client=client, name=name, offset=1, limit=2)
        assert page == heroes[1:3], page
        older = list_heroes.sync(client=client, name=name, min_age=25)
        assert older == heroes[2:4], older
        between = list_heroes.sync(client=client, name=name, min_age=15, max_age=35)
        assert between == heroes[1:3], between

        # Oldest first, two per page, following the Link header's cursor; null ages come last.
        by_age: list[HeroPublic] = []
        cursor: str | None = None
        while True:
            response = list_heroes.sync_detailed(
                client=client,
                name_prefix=name.upper(),
                order_by=ListHeroesOrderBy("-age"),
                limit=2,
                count=True,
                cursor=cursor if cursor is not None else UNSET,
            )
            assert isinstance(response.parsed, list), response.content
            assert response.headers["X-Total-Count"] == "5", response.headers
            by_age += response.parsed
            cursor = next_cursor(response.headers.get("Link"))
            if cursor is None:
                break
        assert [hero.age for hero in by_age] == [40, 30, 20, 10, None], by_age
        assert {hero.id for hero in by_age} == {hero.id for hero in heroes}

        # Fields left UNSET are not sent, so they stay as they are.
        renamed = update_hero.sync(heroes[0].id, client=client, body=HeroUpdate(name="Renamed"))
        assert isinstance(renamed, HeroPublic), renamed
        assert fields(renamed) == (heroes[0].id, "Renamed", 10), renamed
        assert renamed.created_at == heroes[0].created_at
        assert renamed.updated_at > heroes[0].updated_at
        assert renamed.updated_at.utcoffset() == timedelta(0)
        # age=None is sent as an explicit null, which clears the age.
        cleared = update_hero.sync(heroes[3].id, client=client, body=HeroUpdate(age=None))
        assert isinstance(cleared, HeroPublic), cleared
        assert fields(cleared) == (heroes[3].id, name, None), cleared
        assert same_hero(read(client, heroes[3].id), cleared)

        deleted = delete_hero.sync(heroes[1].id, client=client)
        assert deleted == Deleted(ok=True), deleted
        gone = get_hero.sync_detailed(heroes[1].id, client=client)
        assert (gone.status_code, gone.parsed) == (HTTPStatus.NOT_FOUND, NOT_FOUND), gone
        again = delete_hero.sync_detailed(heroes[1].id, client=client)
        assert (again.status_code, again.parsed) == (HTTPStatus.NOT_FOUND, NOT_FOUND), again

        retry_a_create(client, name)
        teams(client, name)

        invalid = HeroCreate(name=name, secret_name="Secret Identity", age=-1)
        refused = create_hero.sync_detailed(client=client, body=invalid)
        error = refused.parsed
        assert refused.status_code == HTTPStatus.BAD_REQUEST, refused.content
        assert isinstance(error, Error), error
        assert isinstance(error.extra, list), error
        assert [(e.key, e.source) for e in error.extra] == [("age", "body")], error


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
    print("ok")
