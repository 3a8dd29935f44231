"""Schemathesis against the served OpenAPI document: the API does what its contract says.

Every operation is fuzzed with valid and invalid input under every Schemathesis check: no 5xx,
only documented status codes, content types, headers and bodies, valid data accepted, invalid
data rejected, ``Allow`` right, plus two of ours: no answer gives a secret name away, and every
status answered is one the committed ``openapi.json`` (the SDKs' source) documents for the
operation. Every resource of ``RESOURCES`` is fuzzed: its operations are the served
document's. The stateful test walks the links from each create (createHero, createTeam) to the
new row's get, update and delete, which adds the checks that need a history (a deleted hero
stays gone, a created one can be read). One more run, on SQLite, fuzzes an app with every
option that adds answers on (an API key, the rate limit, a small body limit), so that 401, 429
and 413 are answered, and checked.
The suite's runs are derandomized, so every run sends the same requests. ``just fuzz`` runs
more examples on a random seed (``FUZZ_SEED``, ``FUZZ_EXAMPLES``), printing the seed to replay.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import msgspec
import pytest
import schemathesis
import sqlalchemy as sa
from litestar import Litestar
from schemathesis import Case, CheckContext, Response
from schemathesis.python.asgi import shutdown_lifespans

from service.app import create_app
from service.database.pages import Position
from service.database.tables import Base
from service.heroes.controller import ORDERS
from service.http.cursors import encode_cursor
from service.http.security import WRITE_METHODS
from service.openapi_document import served_document
from tests.helpers import direct_engine, settings_for

COMMITTED_DOCUMENT = Path(__file__).parents[1] / "openapi.json"

pytestmark = pytest.mark.fuzz

SEED = int(os.environ.get("FUZZ_SEED", "20240601"))
"""The suite's seed; ``just fuzz`` sets another, at random or to replay."""
RANDOM_RUN = "FUZZ_SEED" in os.environ
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))

CONFIG: dict[str, Any] = {
    "seed": SEED,
    "checks": {
        # Every check Schemathesis has, none turned off.
        "enabled": True,
        "positive_data_acceptance": {
            # Schemathesis' default list plus 412: a well-formed If-Match that names another
            # version of the hero is refused by design (RFC 9110), like an unknown id's 404;
            # and 422: an Idempotency-Key used before with another body (the fuzzer sends the
            # documented example key with many bodies) is refused by design too.
            "expected-statuses": [
                "2xx",
                "3xx",
                "401",
                "403",
                "404",
                "409",
                "412",
                "422",
                "429",
                "5xx",
            ]
        },
        # Far above any answer of the service; only a hang or a lock wait would reach it.
        "max_response_time": 5.0,
    },
    "generation": {"mode": "all", "max-examples": EXAMPLES, "deterministic": not RANDOM_RUN},
    # Only the links the document states (each create to get, update, delete). Links inferred
    # from listHeroes draw ids from a list that the shared database grows between examples, so
    # Hypothesis cannot replay a scenario and stops with FlakyStrategyDefinition.
    "phases": {"stateful": {"inference": {"algorithms": []}}},
}
"""All checks; valid and invalid input; EXAMPLES (50 in the suite) fuzzed cases per operation
beyond the coverage ones."""

STATEFUL_SETTINGS = hypothesis.settings(
    max_examples=2 * EXAMPLES,
    stateful_step_count=8,
    # A random run's seed is given to Hypothesis as --hypothesis-seed (see `just fuzz`).
    derandomize=not RANDOM_RUN,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
"""A hundred scenarios of up to eight linked calls."""

FIXED_DETAILS = {
    404: "Hero not found",
    409: "The database refused the write; nothing was stored.",
    412: "The hero has changed since the ETag in If-Match was issued",
    503: "The database is busy or unavailable; retry shortly.",
}
"""The ``detail`` of answers that say the same whatever the request."""

SHORTEST_TELLING_SECRET = 8
"""Shorter secret names are too likely to turn up in an answer by chance to count as a leak."""


@schemathesis.check
def secret_names_stay_secret(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """No answer has a ``secret_name`` field, nor shows the secret name the request sent."""
    if "json" in ",".join(response.headers.get("content-type", [])) and response.content:
        leaked = "secret_name" in field_names(msgspec.json.decode(response.content))
        assert not leaked, "The answer has a secret_name field"
    body = case.body if isinstance(case.body, dict) else {}
    sent = body.get("secret_name")
    if isinstance(sent, str) and len(sent) >= SHORTEST_TELLING_SECRET:
        # The media type is the service's whatever the request ("application/json" came as a
        # secret name once); every other header may carry what the client sent.
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-type"}
        shown = response.text + repr(headers)
        if response.status_code in FIXED_DETAILS:
            # The fuzzer reuses text from earlier answers: a secret name "Hero not found" is
            # not shown by a 404 that always says so.
            shown = shown.replace(FIXED_DETAILS[response.status_code], "")
        told_elsewhere = any(sent in str(v) for k, v in body.items() if k != "secret_name")
        assert told_elsewhere or sent not in shown, "The answer shows the secret name sent"
    return None


DOCUMENTED_STATUSES = {
    (method.upper(), path): set(operation["responses"])
    for path, item in msgspec.json.decode(COMMITTED_DOCUMENT.read_bytes())["paths"].items()
    for method, operation in item.items()
}
"""The statuses openapi.json documents for each operation, by method and path."""


@schemathesis.check
def every_status_is_documented(
    ctx: CheckContext, response: Response, case: Case[Any]
) -> bool | None:
    """The answer's status is one that openapi.json documents for the operation.

    Schemathesis checks the status against the document it fuzzes from; this checks it against
    the committed one, whatever the app's configuration. A request sent with another method
    than the operation's (Schemathesis tries TRACE on each path: 405) is no operation's.
    """
    if case.method.upper() != case.operation.method.upper():
        return None
    documented = DOCUMENTED_STATUSES[(case.operation.method.upper(), case.operation.path)]
    assert str(response.status_code) in documented, (
        f"{case.operation.label} answered {response.status_code}, which openapi.json does not "
        f"document for it (it documents {', '.join(sorted(documented))})"
    )
    return None


def with_a_real_cursor(query: dict[str, Any]) -> dict[str, Any]:
    """Swap a made-up cursor that fits the schema for a real one, and leave out its offset.

    A cursor is opaque: any string of 1 to 1024 characters fits the schema, but only those the
    service made are cursors (the others are refused, as tests/test_listing.py checks), and a
    cursor with an offset is refused by design, which the schema cannot say. Cursors or offsets
    that break the schema are left as drawn, to be refused.
    """
    cursor = query.get("cursor")
    if not isinstance(cursor, str) or not 1 <= len(cursor) <= 1024:
        return query
    order_by = query.get("order_by")
    sort = ORDERS.parse(order_by if order_by in ORDERS.order_by else "id")
    first: dict[str, int | str | None] = {"id": 0, "name": "", "age": None}  # before any hero
    query["cursor"] = encode_cursor(sort, Position(first[sort.key], 0))
    if str(query.get("offset")).isdigit():
        query.pop("offset")
    return query


@schemathesis.hook
def map_query(_ctx: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    """The cursors the fuzzing and stateful phases draw, made real (``with_a_real_cursor``)."""
    return None if query is None else with_a_real_cursor(query)


def field_names(value: object) -> set[str]:
    """Every object key anywhere in a decoded JSON value."""
    if isinstance(value, dict):
        return set(value).union(*(field_names(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(field_names(item) for item in value))
    return set()


def config() -> schemathesis.Config:
    """A fresh Schemathesis configuration from ``CONFIG``."""
    return schemathesis.Config.from_dict(CONFIG)


schema = schemathesis.openapi.from_dict(served_document(), config=config())


@pytest.fixture
def fuzzed_app(database_url: str) -> Iterator[Litestar]:
    """An app on an empty database, which keeps its state over all cases of a test."""
    yield create_app(settings_for(database_url, access_log=False))
    # Schemathesis keeps an app it started running for the process; stop it, closing the pool.
    shutdown_lifespans()


@schema.parametrize()
@hypothesis.settings(
    deadline=None,
    database=None,
    # The app is shared by all cases on purpose: the database fills as a live one would.
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
def test_every_operation_keeps_its_contract(case: Case[Any], fuzzed_app: Litestar) -> None:
    case.query = with_a_real_cursor(case.query)  # the hook misses the coverage phase's cases
    case.call_and_validate(app=fuzzed_app)


def test_linked_operations_keep_their_contract(fuzzed_app: Litestar, database_url: str) -> None:
    linked = schemathesis.openapi.from_asgi("/schema/openapi.json", fuzzed_app, config=config())
    engine = direct_engine(database_url)

    class FromNoRows(linked.as_state_machine()):  # type: ignore[misc]
        """Each scenario starts with no rows, so that replaying one sends the same requests.

        Hypothesis replays and varies scenarios; with rows left by the earlier ones, the same
        steps would list other rows and draw other ids, which it reports as a flaky test.
        """

        def setup(self) -> None:
            remove_every_row(engine)

    try:
        FromNoRows.run(settings=STATEFUL_SETTINGS)
    finally:
        engine.dispose()


API_KEY = "fuzz-key-2d8f6a41c3b9"
AUTHORIZED = {"Authorization": f"Bearer {API_KEY}"}
EVERY_OPTION: dict[str, Any] = {
    "api_key": API_KEY,
    "rate_limit_per_minute": 60,
    "max_body_size": 256,
}
"""The settings that add answers: 401 to a write without the key, 429 past 60 requests of the
app's minute, 413 to a body over 256 bytes (a valid hero's can reach 600)."""
EVERY_OPTION_EXAMPLES = max(5, EXAMPLES // 5)
"""Fewer than the suite's: this run looks for statuses, the others for everything else."""


def every_option_config() -> schemathesis.Config:
    """``CONFIG`` for an app with ``EVERY_OPTION``: bodies valid or not may be too large (413);
    fewer examples."""
    options = copy.deepcopy(CONFIG)
    options["generation"]["max-examples"] = EVERY_OPTION_EXAMPLES
    options["checks"]["positive_data_acceptance"]["expected-statuses"].append("413")
    options["checks"]["negative_data_rejection"] = {
        # Schemathesis' default list, plus 413: a body over MAX_BODY_SIZE is refused unread.
        "expected-statuses": [
            *("400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428"),
            *("429", "5xx"),
        ]
    }
    return schemathesis.Config.from_dict(options)


every_option_schema = schemathesis.openapi.from_dict(
    msgspec.json.decode(COMMITTED_DOCUMENT.read_bytes()), config=every_option_config()
)
"""The committed document, which SDKs are generated from: fuzzed against an app whose document
would say more (``security`` on the writes), to check that it names every status all the same."""


@pytest.fixture
def app_with_every_option(tmp_path: Path) -> Iterator[Litestar]:
    """An app with ``EVERY_OPTION`` on a SQLite file, which keeps its state over all cases."""
    database_url = f"sqlite:///{tmp_path / 'heroes.db'}"
    yield create_app(settings_for(database_url, access_log=False, **EVERY_OPTION))
    shutdown_lifespans()


@every_option_schema.parametrize()
@hypothesis.settings(
    deadline=None,
    database=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
def test_every_status_answered_with_every_option_on_is_documented(
    case: Case[Any], app_with_every_option: Litestar
) -> None:
    case.query = with_a_real_cursor(case.query)
    case.call_and_validate(app=app_with_every_option, headers=AUTHORIZED)
    if case.method.upper() in WRITE_METHODS:
        case.call_and_validate(app=app_with_every_option)  # without the key: 401


def remove_every_row(engine: sa.Engine) -> None:
    """Empty every table of every resource and restart their ids, behind the app's back."""
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            for table in reversed(Base.metadata.sorted_tables):
                connection.exec_driver_sql(f"DELETE FROM {table.name}")
        else:
            tables = ", ".join(Base.metadata.tables)
            connection.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY")
