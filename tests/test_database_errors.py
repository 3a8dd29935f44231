"""Every driver error is sorted on purpose: the table in ``service.database.faults``, walked.

Each row of the table is checked with the exceptions the drivers really raise for it: asyncpg's
and psycopg's class for a SQLSTATE (bare, and wrapped by SQLAlchemy as the service meets them),
sqlite3's errors with their result codes, and the client-side errors that carry no SQLSTATE.
Every SQLSTATE psycopg knows, and every SQLite result code, falls in a row: none is answered by
accident.
"""

from __future__ import annotations

import sqlite3

import asyncpg
import asyncpg.exceptions._base as asyncpg_base
import psycopg
import psycopg.errors
import pytest
import sqlalchemy as sa

from service.database.faults import (
    DRIVER_ERRORS,
    SQLITE_RESULT_CODES,
    SQLSTATE_CLASSES,
    SQLSTATES,
    DatabaseUnavailable,
    Fault,
    InvalidValue,
    WriteRefused,
    database_error,
    fault_of,
)

ANSWER: dict[Fault, type[Exception] | None] = {
    Fault.REFUSED: WriteRefused,
    Fault.UNAVAILABLE: DatabaseUnavailable,
    Fault.IN_DOUBT: DatabaseUnavailable,
    Fault.INVALID: InvalidValue,
    Fault.BUG: None,
}
"""The service's exception for each kind of fault (None: a bug of ours, answered 500)."""


def expected_fault(sqlstate: str) -> Fault:
    return SQLSTATES.get(sqlstate) or SQLSTATE_CLASSES[sqlstate[:2]]


def asyncpg_error(sqlstate: str) -> Exception:
    cls = asyncpg_base.PostgresMessageMeta.get_message_class_for_sqlstate(sqlstate)
    error: Exception = cls("a message")
    if cls.sqlstate != sqlstate:  # a code asyncpg has no class of its own for
        error.sqlstate = sqlstate  # type: ignore[attr-defined]
    return error


def psycopg_error(sqlstate: str) -> Exception | None:
    """psycopg's error for ``sqlstate``; None for a code it has no class for."""
    try:
        cls = psycopg.errors.lookup(sqlstate)
    except KeyError:
        return None
    error: Exception = cls("a message")
    return error


def wrapped(error: Exception) -> Exception:
    """``error`` as SQLAlchemy raises it from ``Connection.execute``."""
    wrapper = sa.exc.DBAPIError.instance("SELECT 1", {}, error, psycopg.Error)
    wrapper.__cause__ = error
    return wrapper


def assert_answered(error: BaseException, fault: Fault) -> None:
    translated = database_error(error)
    expected = ANSWER[fault]
    if expected is None:
        assert translated is None, (error, translated)
        return
    assert isinstance(translated, expected), (error, translated)
    if isinstance(translated, DatabaseUnavailable):
        assert translated.in_doubt is (fault is Fault.IN_DOUBT), error
    native = error.orig if isinstance(error, sa.exc.DBAPIError) else error
    assert translated.args[0].startswith(f"{type(native).__name__}: ")


TABLE_SQLSTATES = sorted(
    {f"{code}000" for code in SQLSTATE_CLASSES} | set(SQLSTATES), key=lambda code: code
)


@pytest.mark.parametrize("sqlstate", TABLE_SQLSTATES)
def test_every_sqlstate_row_answers_as_the_table_says_on_asyncpg_and_psycopg(
    sqlstate: str,
) -> None:
    fault = expected_fault(sqlstate)

    errors = [asyncpg_error(sqlstate), psycopg_error(sqlstate)]

    for error in errors:
        if error is None:  # psycopg has no class for this code (a class's own, or no error)
            continue
        assert fault_of(error) is fault, error
        assert_answered(error, fault)
        assert_answered(wrapped(error), fault)


def test_every_sqlstate_psycopg_knows_falls_in_a_class_of_the_table() -> None:
    known = {code for code in psycopg.errors._sqlcodes if len(code) == 5}  # codes, not names

    unlisted = sorted(code for code in known if code[:2] not in SQLSTATE_CLASSES)

    assert len(known) > 250
    assert unlisted == []


@pytest.mark.parametrize(
    ("sqlstate", "fault"),
    [
        ("23505", Fault.REFUSED),  # a unique constraint
        ("25006", Fault.UNAVAILABLE),  # a read-only server: a standby, a failover
        ("40001", Fault.UNAVAILABLE),  # serialization failure
        ("40P01", Fault.UNAVAILABLE),  # deadlock
        ("53300", Fault.UNAVAILABLE),  # too many connections
        ("57014", Fault.UNAVAILABLE),  # statement timeout
        ("57P01", Fault.IN_DOUBT),  # the server shut down under the statement
        ("08006", Fault.IN_DOUBT),  # the connection failed during the statement
        ("08001", Fault.UNAVAILABLE),  # could not connect: nothing was sent
        ("22003", Fault.INVALID),  # a number out of range
        ("42P01", Fault.BUG),  # no such table
        ("26000", Fault.UNAVAILABLE),  # a prepared statement a pooler lost: refused, not run
        ("42P05", Fault.UNAVAILABLE),  # a prepared statement of another session, through a pooler
    ],
)
def test_the_faults_an_operator_meets(sqlstate: str, fault: Fault) -> None:
    error = psycopg_error(sqlstate)

    assert expected_fault(sqlstate) is fault
    assert error is not None
    assert fault_of(error) is fault


PRIMARY_RESULT_CODES = [
    "SQLITE_ERROR",
    "SQLITE_INTERNAL",
    "SQLITE_PERM",
    "SQLITE_ABORT",
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_NOMEM",
    "SQLITE_READONLY",
    "SQLITE_INTERRUPT",
    "SQLITE_IOERR",
    "SQLITE_CORRUPT",
    "SQLITE_NOTFOUND",
    "SQLITE_FULL",
    "SQLITE_CANTOPEN",
    "SQLITE_PROTOCOL",
    "SQLITE_EMPTY",
    "SQLITE_SCHEMA",
    "SQLITE_TOOBIG",
    "SQLITE_CONSTRAINT",
    "SQLITE_MISMATCH",
    "SQLITE_MISUSE",
    "SQLITE_NOLFS",
    "SQLITE_AUTH",
    "SQLITE_FORMAT",
    "SQLITE_RANGE",
    "SQLITE_NOTADB",
    "SQLITE_NOTICE",
    "SQLITE_WARNING",
]
"""SQLite's primary result codes but SQLITE_OK, SQLITE_ROW and SQLITE_DONE (no errors), 1 to 28."""


def test_every_sqlite_result_code_has_a_row() -> None:
    assert [getattr(sqlite3, name) for name in PRIMARY_RESULT_CODES] == list(range(1, 29))
    assert sorted(SQLITE_RESULT_CODES) == sorted(PRIMARY_RESULT_CODES)


@pytest.mark.parametrize("name", sorted(SQLITE_RESULT_CODES))
def test_every_sqlite_row_answers_as_the_table_says(name: str) -> None:
    error = sqlite3.OperationalError("a message")
    error.sqlite_errorcode = getattr(sqlite3, name) | (3 << 8)  # an extended code of it
    error.sqlite_errorname = name

    assert fault_of(error) is SQLITE_RESULT_CODES[name]
    assert_answered(error, SQLITE_RESULT_CODES[name])
    assert_answered(wrapped(error), SQLITE_RESULT_CODES[name])


def test_sqlite_errors_as_the_driver_raises_them() -> None:
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    connection.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as duplicate:
        connection.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.OperationalError) as bad_sql:
        connection.execute("SELECT * FROM nowhere")
    connection.close()
    with pytest.raises(sqlite3.ProgrammingError) as closed:
        connection.execute("SELECT 1")

    assert_answered(duplicate.value, Fault.REFUSED)
    assert_answered(bad_sql.value, Fault.BUG)
    assert_answered(closed.value, Fault.BUG)


SQLITE_WITHOUT_CODE = [
    (sqlite3.OperationalError("no code"), Fault.UNAVAILABLE),
    (sqlite3.IntegrityError("no code"), Fault.REFUSED),
    (sqlite3.DataError("no code"), Fault.INVALID),
    (sqlite3.ProgrammingError("no code"), Fault.BUG),
]
"""Errors sqlite3 raises without a result code (or made up, as the writer once did)."""


@pytest.mark.parametrize(("error", "fault"), SQLITE_WITHOUT_CODE)
def test_sqlite_errors_without_a_result_code_are_sorted_by_class(
    error: Exception, fault: Fault
) -> None:
    assert fault_of(error) is fault
    assert_answered(error, fault)


CLIENT_SIDE = [
    (asyncpg.InterfaceError("connection is closed"), Fault.UNAVAILABLE),
    (asyncpg_base.DataError("invalid input for query argument $1"), Fault.INVALID),
    (asyncpg_base.ClientConfigurationError("bad"), Fault.BUG),
    (asyncpg_base.UnsupportedClientFeatureError("no"), Fault.BUG),
    (asyncpg_base.UnsupportedServerFeatureError("no"), Fault.BUG),
    (asyncpg_base.InternalClientError("cannot switch to state 11"), Fault.UNAVAILABLE),
    (asyncpg_base.ProtocolError("unexpected message"), Fault.IN_DOUBT),
    (
        asyncpg_base.OutdatedSchemaCacheError("cached plan", schema="s", data_type="t"),
        Fault.UNAVAILABLE,
    ),
    (asyncpg_base.TargetServerAttributeNotMatched("not a primary"), Fault.UNAVAILABLE),
    (psycopg.OperationalError("server closed the connection unexpectedly"), Fault.IN_DOUBT),
    (psycopg.InterfaceError("the connection is closed"), Fault.UNAVAILABLE),
    (psycopg.DataError("int too large"), Fault.INVALID),
    (
        psycopg.ProgrammingError("the query has 1 placeholder but 2 parameters were passed"),
        Fault.BUG,
    ),
    (ConnectionResetError("reset by peer"), Fault.IN_DOUBT),
    (BrokenPipeError("broken pipe"), Fault.IN_DOUBT),
    (OSError("network is unreachable"), Fault.IN_DOUBT),
    (TimeoutError("connect timed out"), Fault.UNAVAILABLE),
    (sa.exc.TimeoutError("QueuePool limit reached"), Fault.UNAVAILABLE),
    (sa.exc.DisconnectionError("connection closed by the server"), Fault.UNAVAILABLE),
]


@pytest.mark.parametrize(("error", "fault"), CLIENT_SIDE, ids=lambda value: type(value).__name__)
def test_client_side_errors_without_sqlstate_have_rows_of_their_own(
    error: Exception, fault: Fault
) -> None:
    assert getattr(error, "sqlstate", None) is None
    assert fault_of(error) is fault
    assert_answered(error, fault)


def test_the_driver_error_rows_are_the_ones_walked() -> None:
    walked = {
        f"{type(error).__module__}.{type(error).__qualname__}"
        for error, _ in [*SQLITE_WITHOUT_CODE, *CLIENT_SIDE]
        if not type(error).__module__.startswith(("builtins", "sqlalchemy"))
    }

    assert walked == set(DRIVER_ERRORS)


def test_an_error_after_which_nothing_was_sent_is_not_in_doubt() -> None:
    refused = ConnectionRefusedError("connect call failed")

    in_doubt = database_error(refused)
    before_sending = database_error(refused, sent=False)

    assert isinstance(in_doubt, DatabaseUnavailable)
    assert in_doubt.in_doubt
    assert isinstance(before_sending, DatabaseUnavailable)
    assert not before_sending.in_doubt


def test_bugs_of_ours_are_not_database_errors() -> None:
    assert database_error(ValueError("naive datetime")) is None
    assert database_error(KeyError("name")) is None
    assert fault_of(ValueError("naive datetime")) is None


def test_the_description_holds_no_parameter() -> None:
    error = psycopg_error("23505")
    assert error is not None
    error.args = ("duplicate key\nDETAIL: Key (secret_name)=(Dive Wilson) already exists.",)

    translated = database_error(wrapped(error))

    assert isinstance(translated, WriteRefused)
    assert "Dive Wilson" not in str(translated)
