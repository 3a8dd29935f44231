"""The one table of database faults: what a driver's error means, and the service's error for it.

Over 300 lines on purpose: the table is every SQLSTATE class, SQLite result code and driver error
the service meets, one row each, so that none is answered by accident.

Every place where SQL runs wraps it the same way, ``with database_errors():`` (as advanced-alchemy's
``wrap_sqlalchemy_exception()`` does): a driver's error becomes :class:`DatabaseUnavailable`,
:class:`WriteRefused` or :class:`InvalidValue`, which ``service.http.errors`` answers 503, 409 and
400; what the table calls a bug of the service passes through unchanged, to be answered 500 and
logged with its trace. The table knows PostgreSQL's SQLSTATE classes and codes, SQLite's result
codes, and the errors that asyncpg, psycopg, sqlite3, the socket and SQLAlchemy's pool raise of
their own.
"""

from __future__ import annotations

import enum
import sqlite3
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from types import TracebackType


class DatabaseUnavailable(Exception):
    """The database is busy, slow or unreachable: the request may succeed if retried shortly.

    ``in_doubt``: the connection was lost while a statement may have been running, so a write
    may have been stored (the database may have committed it before its answer was lost);
    otherwise nothing was stored.
    """

    def __init__(self, message: str, *, in_doubt: bool = False) -> None:
        super().__init__(message)
        self.in_doubt = in_doubt


class WriteRefused(Exception):
    """The database refused the write (a constraint failed); nothing was stored."""


class ReferenceMissing(WriteRefused):
    """The write names a row of another table that does not exist (a foreign key failed).

    Nothing was stored. ``constraint``: the foreign key's name, as PostgreSQL says it (SQLite
    names none); which value of the request it was is the resource's to say.
    """

    def __init__(self, message: str, *, constraint: str | None = None) -> None:
        super().__init__(message)
        self.constraint = constraint


class InvalidValue(Exception):
    """The database cannot take a value of the request (out of its range); nothing was stored.

    The service's own validation should have refused the value first: one that reaches the
    database is a gap in it, answered as invalid input rather than a 500.
    """


class Fault(enum.Enum):
    """What a driver error means for the request, and so how it is answered."""

    REFUSED = "refused"
    """The database refused the write (a constraint, a trigger): 409, nothing stored."""
    UNAVAILABLE = "unavailable"
    """Busy, locked, read-only, out of resources, unreachable: 503, nothing stored, retry."""
    IN_DOUBT = "in doubt"
    """The connection was lost while the statement may have run: 503, a write may be stored."""
    INVALID = "invalid"
    """A value the database cannot take (validation should have caught it): 400."""
    BUG = "bug"
    """A mistake of the service (bad SQL, a misused connection): 500, logged with its trace."""


SQLSTATE_CLASSES: dict[str, Fault] = {
    "00": Fault.BUG,  # successful completion: never raised
    "01": Fault.BUG,  # warning: never raised
    "02": Fault.BUG,  # no data: never raised
    "03": Fault.BUG,  # SQL statement not yet complete
    "08": Fault.IN_DOUBT,  # connection exception: lost, maybe after the commit (see SQLSTATES)
    "09": Fault.REFUSED,  # triggered action exception
    "0A": Fault.BUG,  # feature not supported
    "0B": Fault.BUG,  # invalid transaction initiation
    "0F": Fault.BUG,  # locator exception
    "0L": Fault.BUG,  # invalid grantor
    "0P": Fault.BUG,  # invalid role specification
    "0Z": Fault.BUG,  # diagnostics exception
    "10": Fault.BUG,  # XQuery error
    "20": Fault.BUG,  # case not found
    "21": Fault.BUG,  # cardinality violation
    "22": Fault.INVALID,  # data exception: out of range, bad encoding (validate before)
    "23": Fault.REFUSED,  # integrity constraint violation
    "24": Fault.BUG,  # invalid cursor state
    "25": Fault.BUG,  # invalid transaction state (but read-only: see SQLSTATES)
    "26": Fault.BUG,  # invalid SQL statement name
    "27": Fault.REFUSED,  # triggered data change violation
    "28": Fault.UNAVAILABLE,  # invalid authorization specification: a password or pg_hba change
    "2B": Fault.BUG,  # dependent privilege descriptors still exist
    "2D": Fault.BUG,  # invalid transaction termination
    "2F": Fault.BUG,  # SQL routine exception
    "34": Fault.BUG,  # invalid cursor name
    "38": Fault.BUG,  # external routine exception
    "39": Fault.BUG,  # external routine invocation exception
    "3B": Fault.BUG,  # savepoint exception
    "3D": Fault.UNAVAILABLE,  # invalid catalog name: the database does not exist (yet, again)
    "3F": Fault.BUG,  # invalid schema name
    "40": Fault.UNAVAILABLE,  # transaction rollback: serialization failure, deadlock
    "42": Fault.BUG,  # syntax error or access rule violation (but privileges: see SQLSTATES)
    "44": Fault.REFUSED,  # WITH CHECK OPTION violation
    "53": Fault.UNAVAILABLE,  # insufficient resources: disk full, out of memory, connections
    "54": Fault.BUG,  # program limit exceeded: a statement too complex
    "55": Fault.UNAVAILABLE,  # object not in prerequisite state: lock not available, in use
    "57": Fault.UNAVAILABLE,  # operator intervention: cancel, statement timeout (see SQLSTATES)
    "58": Fault.UNAVAILABLE,  # system error: I/O
    "72": Fault.UNAVAILABLE,  # snapshot too old
    "F0": Fault.UNAVAILABLE,  # configuration file error
    "HV": Fault.BUG,  # foreign data wrapper error
    "P0": Fault.REFUSED,  # PL/pgSQL RAISE: a trigger refusing the write
    "XX": Fault.UNAVAILABLE,  # internal error, data corrupted: the database needs its operator
}
"""Every class of PostgreSQL's SQLSTATE codes (its first two characters) and what it means."""

SQLSTATES: dict[str, Fault] = {
    "08001": Fault.UNAVAILABLE,  # could not connect: nothing was sent
    "08004": Fault.UNAVAILABLE,  # the server rejected the connection: nothing was sent
    "25006": Fault.UNAVAILABLE,  # read-only transaction: a standby, a primary in a failover
    "25P03": Fault.UNAVAILABLE,  # idle-in-transaction timeout: the transaction was rolled back
    "25P04": Fault.UNAVAILABLE,  # transaction timeout: rolled back
    "26000": Fault.UNAVAILABLE,  # prepared statement does not exist: a pooler lost it; not run
    "42P05": Fault.UNAVAILABLE,  # prepared statement already exists: a pooler mixed them; not run
    "42501": Fault.UNAVAILABLE,  # insufficient privilege: the operator changed grants
    "57P01": Fault.IN_DOUBT,  # admin shutdown: the server ended the session under the statement
    "57P02": Fault.IN_DOUBT,  # crash shutdown
    "57P05": Fault.IN_DOUBT,  # idle session timeout
}
"""Codes that mean otherwise than their class."""

SQLITE_RESULT_CODES: dict[str, Fault] = {
    "SQLITE_ERROR": Fault.BUG,  # an SQL error: no such table, a syntax error
    "SQLITE_INTERNAL": Fault.BUG,
    "SQLITE_PERM": Fault.UNAVAILABLE,  # the file's permissions
    "SQLITE_ABORT": Fault.UNAVAILABLE,  # a statement aborted by a rollback
    "SQLITE_BUSY": Fault.UNAVAILABLE,  # the write lock was held past the busy timeout
    "SQLITE_LOCKED": Fault.UNAVAILABLE,
    "SQLITE_NOMEM": Fault.UNAVAILABLE,
    "SQLITE_READONLY": Fault.UNAVAILABLE,
    "SQLITE_INTERRUPT": Fault.UNAVAILABLE,
    "SQLITE_IOERR": Fault.UNAVAILABLE,
    "SQLITE_CORRUPT": Fault.UNAVAILABLE,  # the operator must restore a backup
    "SQLITE_NOTFOUND": Fault.BUG,
    "SQLITE_FULL": Fault.UNAVAILABLE,  # the disk is full
    "SQLITE_CANTOPEN": Fault.UNAVAILABLE,  # the file, or a file descriptor for it
    "SQLITE_PROTOCOL": Fault.UNAVAILABLE,
    "SQLITE_EMPTY": Fault.BUG,
    "SQLITE_SCHEMA": Fault.UNAVAILABLE,  # the schema changed under the statement: run it again
    "SQLITE_TOOBIG": Fault.INVALID,
    "SQLITE_CONSTRAINT": Fault.REFUSED,  # a constraint, or a trigger's RAISE
    "SQLITE_MISMATCH": Fault.INVALID,  # a value of the wrong type for its column
    "SQLITE_MISUSE": Fault.BUG,
    "SQLITE_NOLFS": Fault.UNAVAILABLE,
    "SQLITE_AUTH": Fault.UNAVAILABLE,
    "SQLITE_FORMAT": Fault.BUG,
    "SQLITE_RANGE": Fault.BUG,  # a parameter index out of range
    "SQLITE_NOTADB": Fault.UNAVAILABLE,  # the file is not a database
    "SQLITE_NOTICE": Fault.BUG,  # never raised
    "SQLITE_WARNING": Fault.BUG,  # never raised
}
"""Every SQLite primary result code of an error (the low byte of the extended code)."""
_SQLITE_FAULTS = {getattr(sqlite3, name): fault for name, fault in SQLITE_RESULT_CODES.items()}

DRIVER_ERRORS: dict[str, Fault] = {
    # sqlite3's errors without a result code (raised by the module itself), by class.
    "sqlite3.IntegrityError": Fault.REFUSED,
    "sqlite3.DataError": Fault.INVALID,
    "sqlite3.OperationalError": Fault.UNAVAILABLE,
    "sqlite3.ProgrammingError": Fault.BUG,  # a closed connection, a misused cursor
    # asyncpg's client-side errors: no SQLSTATE.
    "asyncpg.exceptions._base.InterfaceError": Fault.UNAVAILABLE,  # e.g. the connection is closed
    "asyncpg.exceptions._base.DataError": Fault.INVALID,  # an argument it cannot encode
    "asyncpg.exceptions._base.ClientConfigurationError": Fault.BUG,
    "asyncpg.exceptions._base.UnsupportedClientFeatureError": Fault.BUG,
    "asyncpg.exceptions._base.UnsupportedServerFeatureError": Fault.BUG,
    # "cannot switch to state ...": a connection the server closed, used before asyncpg saw it
    # (a failover, pg_terminate_backend); raised before the statement is sent.
    "asyncpg.exceptions._base.InternalClientError": Fault.UNAVAILABLE,
    "asyncpg.exceptions._base.ProtocolError": Fault.IN_DOUBT,
    "asyncpg.exceptions._base.OutdatedSchemaCacheError": Fault.UNAVAILABLE,  # retried, it runs
    "asyncpg.exceptions._base.TargetServerAttributeNotMatched": Fault.UNAVAILABLE,  # no primary
    # psycopg's errors without a SQLSTATE are raised by the client.
    "psycopg.OperationalError": Fault.IN_DOUBT,  # the connection was lost
    "psycopg.InterfaceError": Fault.UNAVAILABLE,  # the connection is closed
    "psycopg.DataError": Fault.INVALID,  # a value it cannot adapt
    "psycopg.ProgrammingError": Fault.BUG,
}
"""Driver errors that carry no SQLSTATE nor result code, by class (the first in the MRO)."""

_PYTHON_ERRORS: tuple[tuple[type[BaseException], Fault], ...] = (
    (TimeoutError, Fault.UNAVAILABLE),  # a connect that timed out (asyncio.TimeoutError too)
    (OSError, Fault.IN_DOUBT),  # the socket failed (refused, reset, unreachable)
    (sa.exc.TimeoutError, Fault.UNAVAILABLE),  # no pooled connection within DB_POOL_TIMEOUT
    (sa.exc.DisconnectionError, Fault.UNAVAILABLE),  # a pooled connection found closed
)
"""What the socket, the pool and SQLAlchemy raise of their own."""


def fault_of(exc: BaseException) -> Fault | None:
    """What ``exc`` means, found under SQLAlchemy's wrappers; None if no database error.

    The first exception down the chain (SQLAlchemy's ``orig``, then ``__cause__``) that the
    table knows decides: its SQLSTATE, else its SQLite result code, else its class.
    """
    native: BaseException | None = exc
    while native is not None:
        fault = _fault(native)
        if fault is not None:
            return fault
        native = native.orig if isinstance(native, sa.exc.DBAPIError) else native.__cause__
    if isinstance(exc, sa.exc.OperationalError):  # a DBAPI error of a driver not in the table
        return Fault.UNAVAILABLE
    return None


def _fault(error: BaseException) -> Fault | None:
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return SQLSTATES.get(sqlstate) or SQLSTATE_CLASSES.get(sqlstate[:2], Fault.BUG)
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(error, sqlite3.Error) and isinstance(code, int):
        return _SQLITE_FAULTS.get(code & 0xFF, Fault.BUG)
    for cls in type(error).__mro__:
        fault = DRIVER_ERRORS.get(f"{cls.__module__}.{cls.__qualname__}")
        if fault is not None:
            return fault
    for kind, fault in _PYTHON_ERRORS:
        if isinstance(error, kind):
            return fault
    return None


def database_error(exc: BaseException, *, sent: bool = True) -> Exception | None:
    """The service's error for a failure of the database, or None where it is a bug of ours.

    ``sent=False`` says the statement never reached the database (the connection could not be
    had), so that a lost connection leaves nothing in doubt. The driver's exception is
    described by its class and its first line alone: SQLAlchemy's own message holds the
    statement's parameters, which may hold a secret name and must not reach a log.
    """
    fault = fault_of(exc)
    if fault is None or fault is Fault.BUG:
        return None
    native = _native(exc)
    if fault is Fault.INVALID:  # the driver's message may quote the value: not shown
        sqlstate = getattr(native, "sqlstate", None)
        said = f"SQLSTATE {sqlstate}" if sqlstate else "a value it cannot take"
        return InvalidValue(f"{type(native).__name__}: {said}")
    description = _describe(native)
    if fault is Fault.REFUSED:
        if _foreign_key_violation(native):
            return ReferenceMissing(description, constraint=_constraint_name(exc))
        return WriteRefused(description)
    return DatabaseUnavailable(description, in_doubt=fault is Fault.IN_DOUBT and sent)


def _native(exc: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's wrapper, if any."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc


FOREIGN_KEY_VIOLATION = "23503"
"""PostgreSQL's SQLSTATE for a foreign key that names no row."""
_SQLITE_FOREIGN_KEY = 787
"""SQLite's extended result code SQLITE_CONSTRAINT_FOREIGNKEY (``sqlite3`` names it from 3.12)."""


def _foreign_key_violation(error: BaseException) -> bool:
    if getattr(error, "sqlstate", None) == FOREIGN_KEY_VIOLATION:
        return True
    return isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", None) == (
        _SQLITE_FOREIGN_KEY
    )


def _constraint_name(exc: BaseException) -> str | None:
    """The name of the constraint a driver's error names (asyncpg's, or psycopg's diagnostics)."""
    native: BaseException | None = exc
    while native is not None:
        name = getattr(native, "constraint_name", None) or getattr(
            getattr(native, "diag", None), "constraint_name", None
        )
        if isinstance(name, str):
            return name
        native = native.orig if isinstance(native, sa.exc.DBAPIError) else native.__cause__
    return None


def _describe(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


class _DatabaseErrors:
    """The context manager :func:`database_errors` returns (one per ``sent``, reused)."""

    __slots__ = ("sent",)

    def __init__(self, *, sent: bool) -> None:
        self.sent = sent

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, Exception):
            translated = database_error(exc, sent=self.sent)
            if translated is not None:
                raise translated from None


_SENT = _DatabaseErrors(sent=True)
_NOT_SENT = _DatabaseErrors(sent=False)


def database_errors(*, sent: bool = True) -> AbstractContextManager[None]:
    """Where SQL runs: a driver's error raised inside leaves as the service's database error.

    What the table calls a bug (bad SQL, a misused connection) and what is no database error at
    all leave unchanged; so does a cancellation. ``sent=False`` wraps what comes before the
    statement is sent (taking a connection): a connection lost there leaves nothing in doubt.
    A class rather than ``@contextmanager``, since it wraps every statement: no generator each time.
    """
    return _SENT if sent else _NOT_SENT
