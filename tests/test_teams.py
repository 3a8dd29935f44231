"""The teams API over HTTP, and heroes in teams: on SQLite, PostgreSQL and through both poolers.

What each team endpoint answers, a hero's ``team_id`` and ``team``, the ``team_id`` filter, and a
team's delete, which sets its heroes' team to null in the same transaction.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from service.teams.detail import FIRST_HEROES
from tests.helpers import Client, assert_error, new_hero, without_timestamps


def new_team(name: str = "Preventers", headquarters: str = "Sharp Tower") -> dict[str, Any]:
    return {"name": name, "headquarters": headquarters}


def create_team(client: Client, name: str = "Preventers") -> dict[str, Any]:
    response = client.post("/teams", json=new_team(name))
    assert response.status_code == 201, response.text
    team: dict[str, Any] = response.json()
    return team


def create_hero(client: Client, name: str = "Deadpond", **extra: Any) -> dict[str, Any]:
    response = client.post("/heroes", json=new_hero(name, **extra))
    assert response.status_code == 201, response.text
    hero: dict[str, Any] = response.json()
    return hero


def test_create_answers_201_with_the_team_its_location_and_etag(client: Client) -> None:
    response = client.post("/teams", json=new_team("Preventers", "Sharp Tower"))

    assert response.status_code == 201, response.text
    team = response.json()
    assert without_timestamps(team) == {
        "id": team["id"],
        "name": "Preventers",
        "headquarters": "Sharp Tower",
    }
    assert response.headers["location"] == f"/teams/{team['id']}"
    assert response.headers["etag"] == '"1"'


def test_get_answers_the_team_with_no_heroes(client: Client) -> None:
    team = create_team(client)

    response = client.get(f"/teams/{team['id']}")

    assert response.status_code == 200
    assert response.json() == {**team, "heroes": []}
    assert response.headers["etag"] == '"1"'
    assert "link" not in response.headers


def test_get_answers_the_teams_heroes_by_id(client: Client) -> None:
    team = create_team(client)
    other = create_team(client, "Z-Force")
    mine = [create_hero(client, f"Hero {n}", team_id=team["id"]) for n in range(3)]
    create_hero(client, "Elsewhere", team_id=other["id"])
    create_hero(client, "Alone")

    shown = client.get(f"/teams/{team['id']}").json()["heroes"]

    assert shown == mine


def test_get_shows_the_first_heroes_and_links_to_the_rest(client: Client) -> None:
    team = create_team(client)
    heroes = [create_hero(client, f"Hero {n}", team_id=team["id"]) for n in range(FIRST_HEROES + 1)]

    response = client.get(f"/teams/{team['id']}")

    assert [hero["id"] for hero in response.json()["heroes"]] == [h["id"] for h in heroes][:-1]
    assert response.headers["link"] == f'</heroes?team_id={team["id"]}>; rel="related"'
    rest = client.get(response.headers["link"][1:].split(">")[0]).json()
    assert [hero["id"] for hero in rest] == [hero["id"] for hero in heroes]


def test_unknown_team_is_404(client: Client) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        response = client.request(method, "/teams/12345", json={"name": "x"})
        assert_error(response, 404)
        assert response.json()["detail"] == "Team not found"


def test_list_pages_by_cursor_sorted_by_name_and_counted(client: Client) -> None:
    for name in ("charlie", "Alpha", "bravo"):
        create_team(client, name)

    first = client.get("/teams", params={"order_by": "name", "limit": 2, "count": "true"})
    link = first.headers["link"].split(">")[0][1:]
    second = client.get(link)

    assert [team["name"] for team in first.json()] == ["Alpha", "bravo"]
    assert first.headers["x-total-count"] == "3"
    assert [team["name"] for team in second.json()] == ["charlie"]
    assert "link" not in second.headers


def test_list_filters_by_name_prefix(client: Client) -> None:
    create_team(client, "Preventers")
    create_team(client, "Z-Force")

    found = client.get("/teams", params={"name_prefix": "pre"}).json()

    assert [team["name"] for team in found] == ["Preventers"]


def test_patch_changes_the_field_sent_at_the_etag(client: Client) -> None:
    team = create_team(client)
    path = f"/teams/{team['id']}"

    stale = client.patch(path, json={"headquarters": "Bar"}, headers={"If-Match": '"2"'})
    changed = client.patch(path, json={"headquarters": "Bar"}, headers={"If-Match": '"1"'})

    assert_error(stale, 412)
    assert changed.status_code == 200, changed.text
    assert changed.json()["headquarters"] == "Bar"
    assert changed.json()["name"] == team["name"]
    assert changed.headers["etag"] == '"2"'


def test_delete_at_a_stale_etag_is_412_and_keeps_the_team(client: Client) -> None:
    team = create_team(client)
    client.patch(f"/teams/{team['id']}", json={"name": "Renamed"})

    response = client.delete(f"/teams/{team['id']}", headers={"If-Match": '"1"'})

    assert_error(response, 412)
    assert client.get(f"/teams/{team['id']}").status_code == 200


def test_delete_sets_its_heroes_team_to_null_and_keeps_them(client: Client) -> None:
    team = create_team(client)
    other = create_team(client, "Z-Force")
    hero = create_hero(client, team_id=team["id"])
    elsewhere = create_hero(client, "Elsewhere", team_id=other["id"])
    before = client.get(f"/heroes/{hero['id']}")

    deleted = client.delete(f"/teams/{team['id']}")
    after = client.get(f"/heroes/{hero['id']}")

    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"ok": True}
    assert client.get(f"/teams/{team['id']}").status_code == 404
    assert after.status_code == 200
    assert "team_id" not in after.json()
    assert "team" not in after.json()
    assert after.headers["etag"] != before.headers["etag"]
    assert client.get(f"/heroes/{elsewhere['id']}").json()["team_id"] == other["id"]
    assert client.get("/heroes", params={"team_id": team["id"]}).json() == []


def test_delete_at_a_stale_etag_leaves_its_heroes_in_the_team(client: Client) -> None:
    team = create_team(client)
    hero = create_hero(client, team_id=team["id"])

    refused = client.delete(f"/teams/{team['id']}", headers={"If-Match": '"7"'})

    assert_error(refused, 412)
    assert client.get(f"/heroes/{hero['id']}").json()["team_id"] == team["id"]


def test_a_keyed_create_is_answered_once(client: Client) -> None:
    headers = {"Idempotency-Key": str(uuid.uuid4())}

    first = client.post("/teams", json=new_team(), headers=headers)
    again = client.post("/teams", json=new_team(), headers=headers)
    other_body = client.post("/teams", json=new_team("Other"), headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert_error(other_body, 422, "Idempotency-Key")
    assert len(client.get("/teams").json()) == 1


def test_a_key_used_for_a_hero_is_refused_for_a_team(client: Client) -> None:
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    client.post("/heroes", json=new_hero(), headers=headers)

    response = client.post("/teams", json=new_team(), headers=headers)

    assert_error(response, 422, "Idempotency-Key")
    assert client.get("/teams").json() == []


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"headquarters": "Tower"}, "name"),
        ({"name": "Preventers"}, "headquarters"),
        ({"name": 3, "headquarters": "Tower"}, "name"),
        ({"name": "Preventers", "headquarters": None}, "headquarters"),
        ({"name": "", "headquarters": "Tower"}, "name"),
        ({"name": "x" * 256, "headquarters": "Tower"}, "name"),
        ({"name": "Preventers", "headquarters": "x" * 256}, "headquarters"),
        ({"name": "Pre\x00venters", "headquarters": "Tower"}, "name"),
    ],
)
def test_create_with_a_bad_field_is_400_naming_it(
    client: Client, body: dict[str, Any], key: str
) -> None:
    assert_error(client.post("/teams", json=body), 400, key)
    assert client.get("/teams").json() == []


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"name": None}, "name"),
        ({"headquarters": 1}, "headquarters"),
        ({"name": "x" * 10_000}, "name"),
    ],
)
def test_patch_with_a_bad_field_is_400_naming_it(
    client: Client, body: dict[str, Any], key: str
) -> None:
    team = create_team(client)

    assert_error(client.patch(f"/teams/{team['id']}", json=body), 400, key)


@pytest.mark.parametrize("team_id", ["0", "-1", str(2**63), str(10**30)])
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_out_of_range_team_id_is_400(client: Client, method: str, team_id: str) -> None:
    assert_error(client.request(method, f"/teams/{team_id}", json={}), 400, "team_id")


def test_a_hero_created_in_a_team_shows_it(client: Client) -> None:
    team = create_team(client)

    hero = create_hero(client, team_id=team["id"])
    got = client.get(f"/heroes/{hero['id']}")

    assert hero["team_id"] == team["id"]
    assert got.json() == {**hero, "team": team}
    assert got.headers["etag"] == '"1.1"'


@pytest.mark.parametrize(
    "name", ['A "quote" and a \\', "a tab\t, \u2028 and \x7f", "Émoji 😀", "1e3", "null"]
)
def test_a_hero_in_a_team_shows_the_names_and_times_as_their_creates_answered(
    client: Client, name: str
) -> None:
    created = client.post("/teams", json=new_team(name, headquarters=name[::-1]))

    hero = create_hero(client, name, team_id=created.json()["id"])
    got = client.get(f"/heroes/{hero['id']}")

    assert got.json() == {**hero, "team": created.json()}
    assert got.text.endswith(f',"team":{created.text}}}')


def test_a_hero_without_a_team_answers_as_before_teams(client: Client) -> None:
    hero = create_hero(client)

    got = client.get(f"/heroes/{hero['id']}")

    assert set(hero) == {"id", "name", "age", "created_at", "updated_at"}
    assert got.json() == hero
    assert got.headers["etag"] == '"1"'


def test_the_heroes_etag_changes_with_its_team_and_if_match_takes_it(client: Client) -> None:
    team = create_team(client)
    hero = create_hero(client, team_id=team["id"])
    path = f"/heroes/{hero['id']}"
    first = client.get(path).headers["etag"]

    client.patch(f"/teams/{team['id']}", json={"name": "Renamed"})
    renamed = client.get(path, headers={"If-None-Match": first})
    unchanged = client.get(path, headers={"If-None-Match": renamed.headers["etag"]})
    updated = client.patch(path, json={"age": 30}, headers={"If-Match": renamed.headers["etag"]})

    assert renamed.status_code == 200
    assert renamed.json()["team"]["name"] == "Renamed"
    assert unchanged.status_code == 304
    assert updated.status_code == 200, updated.text


def test_patch_moves_a_hero_to_another_team_and_null_takes_it_out(client: Client) -> None:
    team, other = create_team(client), create_team(client, "Z-Force")
    hero = create_hero(client, team_id=team["id"])
    path = f"/heroes/{hero['id']}"

    moved = client.patch(path, json={"team_id": other["id"]})
    shown = client.get(path).json()["team"]
    out = client.patch(path, json={"team_id": None})

    assert moved.json()["team_id"] == other["id"]
    assert shown == other
    assert "team_id" not in out.json()
    assert "team" not in client.get(path).json()


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_an_unknown_team_is_422_naming_team_id_and_stores_nothing(
    client: Client, method: str
) -> None:
    hero = create_hero(client)
    body = {**new_hero(), "team_id": 987_654}

    if method == "POST":
        response = client.post("/heroes", json=body)
    else:
        response = client.patch(f"/heroes/{hero['id']}", json={"team_id": 987_654})

    error = assert_error(response, 422, "team_id")
    assert error.extra is not None
    assert error.extra[0].source == "body"
    assert [h["id"] for h in client.get("/heroes").json()] == [hero["id"]]
    assert client.get(f"/heroes/{hero['id']}").json() == hero


def test_a_keyed_create_in_an_unknown_team_is_422_and_the_key_stays_free(client: Client) -> None:
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    body = {**new_hero(), "team_id": 987_654}

    refused = client.post("/heroes", json=body, headers=headers)
    team = create_team(client)
    created = client.post("/heroes", json={**body, "team_id": team["id"]}, headers=headers)

    assert_error(refused, 422, "team_id")
    assert created.status_code == 201, created.text


@pytest.mark.parametrize("team_id", [0, -1, 2**63, "1", 1.5, True])
def test_a_team_id_out_of_range_or_of_the_wrong_type_is_400(client: Client, team_id: Any) -> None:
    assert_error(client.post("/heroes", json={**new_hero(), "team_id": team_id}), 400, "team_id")


def test_the_heroes_list_filters_by_team(client: Client) -> None:
    team, other = create_team(client), create_team(client, "Z-Force")
    mine = [create_hero(client, f"Hero {n}", team_id=team["id"]) for n in range(2)]
    create_hero(client, "Elsewhere", team_id=other["id"])
    create_hero(client, "Alone")

    found = client.get("/heroes", params={"team_id": team["id"], "count": "true"})

    assert found.json() == mine
    assert found.headers["x-total-count"] == "2"


@pytest.mark.parametrize("team_id", ["0", "abc", str(2**63)])
def test_a_bad_team_id_filter_is_400(client: Client, team_id: str) -> None:
    assert_error(client.get("/heroes", params={"team_id": team_id}), 400, "team_id")
