"""How the service runs SQL: statements compiled once per driver, run without blocking the loop.

Every API operation is one statement: a SELECT, or an INSERT, UPDATE or DELETE with RETURNING.
Each statement is its own transaction, so when :meth:`Database.fetch` returns, the database has
committed it: a 2xx always means the write is stored, and a write that fails is an exception
(mapped to an error response), never a half-written row.

Statements are written once, in SQLAlchemy Core, and compiled once for each (dialect, driver,
parameter style) they meet. On the drivers the service ships with (sqlite3 and asyncpg) they run on
the driver's own connection: SQLAlchemy's per-execution work costs more than the query itself
(measured in ``tests/benchmarks/RESULTS-choices.md``). That fast path keeps what makes SQLAlchemy
safe: the column types' bind and result processors are applied (a DateTime or UUID is never written
or read raw), cursors are closed, and as soon as the engine has
``before_cursor_execute``/``after_cursor_execute`` listeners (SQL logging, tracing) or echoes SQL,
statements go through ``Connection.execute`` so those see every query. Other drivers always take
that path.

Where each statement runs is each database's own module (``service.database.engines`` builds
the engines and picks it): ``service.database.sqlite`` (reads inline, writes on a group-committing
writer thread), ``service.database.postgres`` (asyncpg on the plugin's ``AsyncEngine``, every
wait awaited) and ``service.database.pooled`` (PostgreSQL behind a transaction pooler). What a
driver's error means is ``service.database.faults``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, Protocol, cast

import sqlalchemy as sa
from typing_extensions import TypeVar

Row = Sequence[Any]
"""A row as the driver returns it: its columns in the order of the statement's."""
Processor = Callable[[Any], Any]
T = TypeVar("T")
RowT = TypeVar("RowT", default=Any)
"""What a statement's rows are to its callers (see :class:`Statement`)."""

FAST_DRIVERS = frozenset({"pysqlite", "asyncpg"})
"""Drivers whose own connection runs the compiled statements; others go through SQLAlchemy."""


class Compiled(NamedTuple):
    """A statement's SQL for one driver, with what turns values into parameters and back."""

    sql: str
    names: tuple[str, ...]
    defaults: dict[str, Any]
    bind_processors: tuple[tuple[int, Processor], ...]
    result_processors: tuple[tuple[int, Processor], ...]
    """The result columns that need converting, by position (often none or a few)."""

    def arguments(self, params: dict[str, Any]) -> list[Any]:
        """The positional parameters for ``params``, converted by the column types."""
        values = [params[name] if name in params else self.defaults[name] for name in self.names]
        for index, process in self.bind_processors:
            values[index] = process(values[index])
        return values

    def rows(self, rows: Sequence[Row]) -> Sequence[Row]:
        """``rows`` as the driver returned them, converted by the column types."""
        processors = self.result_processors
        if not processors:
            return rows
        converted = []
        for row in rows:
            values = list(row)
            for index, process in processors:
                values[index] = process(values[index])
            converted.append(values)
        return converted


class Statement(Generic[RowT]):
    """A Core statement, compiled once for each driver it runs on, and what its rows are.

    ``row`` names the rows: called with a row's columns, in the statement's order, it returns
    the row as its callers see it (a NamedTuple or a Struct whose fields are the columns, an
    ``int`` for a count): :meth:`Database.fetch_all` and :meth:`Database.fetch_one` return
    those, and so does a unit's ``Run``. Without it, rows stay the driver's sequences.
    ``slow=True`` marks a read whose cost grows with the table (a count): SQLite runs it on a
    pooled connection in a thread instead of inline on the event loop (but for an in-memory
    database, whose one connection cannot be shared with a thread that may wait).
    ``writes=True`` marks a statement that changes data where SQLAlchemy cannot see it (SQL
    text, a SELECT over data-modifying CTEs): a write is never run twice by a retry.
    """

    __slots__ = ("_compiled", "row", "slow", "statement", "writes")

    def __init__(
        self,
        statement: sa.Executable,
        *,
        row: Callable[..., RowT] | None = None,
        slow: bool = False,
        writes: bool = False,
    ) -> None:
        self.statement = statement
        self.row = row
        self.slow = slow
        self.writes = writes or bool(statement.is_dml)
        """Whether the statement changes data (INSERT, UPDATE, DELETE)."""
        self._compiled: dict[tuple[str, str, str], Compiled] = {}

    def named(self, rows: Sequence[Row]) -> Sequence[RowT]:
        """``rows``, as the driver returned them, made the statement's rows."""
        make = self.row
        if make is None:  # then RowT is Any: the driver's rows
            return cast("Sequence[RowT]", rows)
        return [make(*values) for values in rows]

    def compiled(self, dialect: sa.Dialect) -> Compiled:
        """The statement for ``dialect``'s driver and parameter style."""
        key = (dialect.name, dialect.driver, dialect.paramstyle)
        return self._compiled.get(key) or self._compile(key, dialect)

    def _compile(self, key: tuple[str, str, str], dialect: sa.Dialect) -> Compiled:
        compiled: Any = self.statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        if not compiled.positional:
            raise TypeError(f"{dialect.driver} takes named parameters: run it through SQLAlchemy")
        names = tuple(compiled.positiontup)
        # SQLAlchemy's own tables of the types' converters; None where a type needs none.
        binds = compiled._bind_processors
        results = [
            column.type._cached_result_processor(dialect, None)
            for column in compiled._result_columns
        ]
        self._compiled[key] = Compiled(
            sql=compiled.string,
            names=names,
            defaults=dict(compiled.params),
            bind_processors=tuple((i, binds[n]) for i, n in enumerate(names) if n in binds),
            result_processors=tuple((i, p) for i, p in enumerate(results) if p is not None),
        )
        return self._compiled[key]


SELECT_ONE = Statement(sa.select(sa.literal_column("1")))
"""The readiness probe's query."""


def traced(engine: sa.Engine) -> bool:
    """Whether something watches the engine's statements (listeners, or ``echo``)."""
    events = engine.dispatch
    return bool(events.before_cursor_execute or events.after_cursor_execute or engine.echo)


class Run(Protocol):
    """Runs one statement of a unit, in the unit's transaction, and returns its rows, named."""

    def __call__(self, statement: Statement[RowT], params: dict[str, Any], /) -> Sequence[RowT]:
        """The rows of ``statement`` with ``params``."""
        ...


Unit = Callable[[Run], T]
"""Several statements that commit together or not at all: given a ``Run``, it runs them (it may
choose the next by the rows of the last) and returns its result. It runs off the event loop, so
it does nothing but run statements and compute."""


class InProgress(Exception):
    """A unit claiming the same name is still queued or running: the new one did not run."""


class Database:
    """Where the API's statements run: one per app, built by ``engines.open_database``."""

    dialect_name = ""
    """The SQLAlchemy dialect's name: ``sqlite``, ``postgresql``."""
    runs_units = False
    """Whether :meth:`run_unit` works: SQLite's writer runs several statements in a transaction.
    PostgreSQL runs every operation as one statement, its own transaction, so that it works
    through a transaction pooler: what must commit together is one statement there."""

    async def fetch(self, statement: Statement, **params: Any) -> Sequence[Row]:
        """Run ``statement`` with ``params`` as one transaction, committed when this returns.

        Its rows as the driver returns them: what each database implements. The queries call
        :meth:`fetch_all` and :meth:`fetch_one`, which return them named.
        """
        raise NotImplementedError

    async def fetch_all(self, statement: Statement[RowT], **params: Any) -> Sequence[RowT]:
        """The rows of ``statement`` with ``params``, named; committed when this returns."""
        return statement.named(await self.fetch(statement, **params))

    async def run_unit(self, unit: Unit[T], *, claim: str | None = None) -> T:
        """Run ``unit`` as one transaction, committed when this returns; what it returned.

        With a ``claim``, :class:`InProgress` is raised instead while another unit with the same
        claim is queued or running in this process.
        """
        raise NotImplementedError

    async def fetch_one(self, statement: Statement[RowT], **params: Any) -> RowT | None:
        """The first row of :meth:`fetch_all`, or None."""
        rows = await self.fetch(statement, **params)
        if not rows:
            return None
        if statement.row is None:  # then RowT is Any: the driver's row
            return cast("RowT", rows[0])
        return statement.row(*rows[0])

    async def close(self) -> None:
        """Give the connections back to the engine (at shutdown)."""


def run_on_driver(
    dialect: sa.Dialect, driver: Any, statement: Statement, params: dict[str, Any]
) -> Sequence[Row]:
    """Run ``statement`` on a sqlite3 connection, on a cursor of its own, closed afterwards."""
    cursor = driver.cursor()
    try:
        return run_on_cursor(dialect, cursor, statement, params)
    finally:
        cursor.close()


def run_on_cursor(
    dialect: sa.Dialect, cursor: Any, statement: Statement, params: dict[str, Any]
) -> Sequence[Row]:
    """Run ``statement`` on a sqlite3 cursor and fetch all its rows, which ends the statement."""
    compiled = statement.compiled(dialect)
    cursor.execute(compiled.sql, compiled.arguments(params))
    return compiled.rows(cursor.fetchall())


def run_through_sqlalchemy(
    connection: sa.Connection, statement: Statement, params: dict[str, Any]
) -> Sequence[Row]:
    """Run ``statement`` through ``Connection.execute`` (events fire) and commit it."""
    rows = connection.execute(statement.statement, params).all()
    connection.commit()
    return rows
