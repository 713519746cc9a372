"""Async engine, sessions and the one rule for write transactions on each database.

SQLite allows one writer: write transactions start with BEGIN IMMEDIATE (so two writers never
both read then both write), and concurrent writers of this process are grouped into one
transaction (group commit, `GroupCommit`): each runs in its own savepoint, so a refusal undoes
only its own work, and all of them are acknowledged by one COMMIT. PostgreSQL gives each
request its own transaction and relies on row locks and atomic upserts taken inside it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque, namedtuple
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any, ClassVar, cast

import aiosqlite
import asyncpg
from sqlalchemy import DateTime, MetaData, Table, event, exc, make_url
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from server.core import cache

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)

    if TYPE_CHECKING:
        # Every model here maps one Table (none a join or a subquery), so Core statements may
        # take `Model.__table__`; SQLAlchemy types it as the general FromClause.
        __table__: ClassVar[Table]


def utcnow() -> datetime:
    return datetime.now(UTC)


def midnight_utc(day: date) -> datetime:
    """The UTC instant a day starts: the bound for `occurred_at` range filters."""
    return datetime.combine(day, time.min, tzinfo=UTC)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def dialect_of(session: AsyncSession) -> str:
    """The database a session talks to ("sqlite", "postgresql"); its sessions are all bound."""
    return session.get_bind().dialect.name


class WriterConnection(aiosqlite.Connection):
    """aiosqlite for the single writer, without a thread hop per call inside a transaction.

    aiosqlite sends every call (cursor, execute, fetch, close) to the connection's own thread
    and back: about four round trips a statement, which cost more than SQLite's work. Once
    BEGIN IMMEDIATE holds the write lock nothing inside the transaction can wait on another
    writer (WAL readers never block it), so its statements run on the event loop's thread.
    BEGIN (which may wait for another process's lock), COMMIT (which may checkpoint) and
    ROLLBACK still go to the connection's thread, so they never block the loop.
    """

    inline = False

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.inline and self._connection is not None:
            return fn(*args, **kwargs)
        # aiosqlite leaves its _execute unannotated
        return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    async def commit(self) -> None:
        self.inline = False
        await super().commit()

    async def rollback(self) -> None:
        self.inline = False
        await super().rollback()


def _writer_connections(path: str) -> Callable[[], WriterConnection]:
    def connect() -> WriterConnection:
        # Used from the loop's thread inside transactions, so not bound to the one it opened in.
        connection = WriterConnection(
            lambda: sqlite3.connect(path, check_same_thread=False), iter_chunk_size=64
        )
        connection._thread.daemon = True
        return connection

    return connect


def _install_sqlite_pragmas(engine: Engine, *, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
        driver = connection.connection.driver_connection
        if isinstance(driver, WriterConnection):
            driver.inline = True  # the write lock is held: the rest runs without hops


AFTER_COMMIT = cache.AFTER_COMMIT
_BEFORE_COMMIT = "apotheca.before_commit"  # session.info: see before_commit


def before_commit(session: AsyncSession, step: Callable[[AsyncSession], Awaitable[None]]) -> None:
    """Run `step(session)` at the end of this unit of work (the request's transaction, or its
    savepoint in a group commit), after everything else in it and only if it succeeds: for a
    write whose lock every writer takes, so that it is the last lock taken and held only until
    the commit (the audit chain's head)."""
    session.info.setdefault(_BEFORE_COMMIT, []).append(step)


async def _run_before_commit(session: AsyncSession) -> None:
    while steps := session.info.pop(_BEFORE_COMMIT, None):
        for step in steps:
            await step(session)


def _run_after_commit(session: AsyncSession) -> None:
    _run(session.info.pop(AFTER_COMMIT, []))


def _run(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        callback()


@dataclass(eq=False)
class _Turn:
    """One `write()` waiting for, holding, or done with its place in a group."""

    ready: asyncio.Future[bool] = field(default_factory=asyncio.Future)  # True: in a savepoint
    done: asyncio.Future[bool] = field(default_factory=asyncio.Future)  # True: work kept
    committed: asyncio.Future[None] = field(default_factory=asyncio.Future)
    abandoned: bool = False


class GroupCommit:
    """SQLite's single writer, shared: the writes queued while a transaction is open join it.

    A leader task opens one session and transaction and hands it to each queued `write()` in
    turn; each turn runs in a savepoint (released on success, rolled back on a refusal), the
    session's identity map is emptied between turns, and after-commit callbacks are kept per
    turn. One COMMIT then acknowledges every turn that kept its work; if it fails, each of
    them gets the error, so nothing is acknowledged that was not committed. A write that finds
    nobody else queued runs alone, without a savepoint.
    """

    # Turns per transaction. Larger groups commit less often but make every member wait for
    # the whole group's Python work before its acknowledgement: the tail latency (bench/
    # realtime.py, 50 connections) is lower at 16 than at 64 for the same throughput.
    MAX_GROUP = 16

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], max_group: int = MAX_GROUP
    ) -> None:
        self._sessions = sessions
        self._max_group = max_group
        self._queue: deque[_Turn] = deque()
        self._leader: asyncio.Task[None] | None = None
        self._session: AsyncSession | None = None
        self.groups = 0  # transactions committed or rolled back: what the tests observe
        self.turns = 0

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        turn = _Turn()
        self._queue.append(turn)
        if self._leader is None or self._leader.done():
            self._leader = asyncio.create_task(self._lead())
        try:
            savepoint = await turn.ready
        except BaseException:
            turn.abandoned = True  # cancelled while queued: the leader skips it
            if turn.ready.done() and not turn.ready.cancelled() and not turn.done.done():
                turn.done.set_result(False)
            raise
        session = self._session
        assert session is not None
        outer = dict(session.info)
        session.info.clear()
        try:
            if savepoint:
                async with session.begin_nested():
                    yield session
                    await _run_before_commit(session)
            else:
                yield session
                await _run_before_commit(session)
                await session.flush()
        except BaseException:
            session.info.clear()
            session.info.update(outer)
            if not turn.done.done():
                turn.done.set_result(False)
            raise
        mine = session.info.pop(AFTER_COMMIT, [])
        session.info.clear()
        session.info.update(outer)
        # Run once the group commits, even if this caller is cancelled while it waits: the
        # work is committed then, and its events must still go out.
        turn.committed.add_done_callback(
            lambda done: _run(mine) if not done.cancelled() and done.exception() is None else None
        )
        turn.done.set_result(True)
        await turn.committed

    async def _lead(self) -> None:
        while self._queue:
            group: list[_Turn] = []
            try:
                async with self._sessions() as session, session.begin():
                    self._session = session
                    while self._queue and len(group) < self._max_group:
                        turn = self._queue.popleft()
                        if turn.abandoned:
                            continue
                        savepoint = bool(group or self._queue)
                        group.append(turn)
                        turn.ready.set_result(savepoint)
                        kept = await turn.done
                        self.turns += 1
                        if not savepoint:
                            if not kept:
                                raise _Refused
                            break  # alone: commit now rather than wait for company
                        session.expunge_all()
            except _Refused:
                pass  # a lone turn's refusal: its transaction is rolled back, it has its error
            except BaseException as error:
                for turn in group:
                    if not turn.committed.done():
                        turn.committed.set_exception(error)
                if not isinstance(error, Exception):
                    raise
            else:
                for turn in group:
                    if not turn.committed.done():
                        turn.committed.set_result(None)
            finally:
                self._session = None
                self.groups += 1


class _Refused(Exception):
    """A lone write raised: roll its transaction back (it reports its own error)."""


# Connections kept open for reads, and how many more a burst may open (closed on return).
READ_POOL: dict[str, Any] = {"pool_size": 10, "max_overflow": 20}


class Database:
    """Owns the engines; `read()` for queries, `write()` for one serialisable-enough transaction."""

    def __init__(
        self, url: str, *, echo: bool = False, group_commit_max: int = GroupCommit.MAX_GROUP
    ) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        if self.sqlite:
            # As many pooled readers as PostgreSQL's: with the default 5, a sixth concurrent
            # request opened an overflow connection (a thread, a file handle, four PRAGMAs)
            # and closed it on return, so ten clients paid a connect for every other request.
            path = make_url(url).database
            on_file = bool(path) and path != ":memory:"  # memory: one static connection
            self.engine = create_async_engine(url, echo=echo, **(READ_POOL if on_file else {}))
            creator = {"async_creator": _writer_connections(path)} if path and on_file else {}
            self.writer = create_async_engine(url, echo=echo, **creator)
            _install_sqlite_pragmas(self.engine.sync_engine, immediate=False)
            _install_sqlite_pragmas(self.writer.sync_engine, immediate=True)
        else:
            self.engine = create_async_engine(url, echo=echo, **READ_POOL)
            self.writer = self.engine
        self._version_connection: sqlite3.Connection | None = None
        path = make_url(url).database if self.sqlite else None
        if path and path != ":memory:":
            # Requests read the reference version before anything else; on SQLite that is a
            # primary-key read on this connection, on the loop's thread (WAL readers never
            # wait for the writer), instead of a read transaction's four thread hops.
            self._version_connection = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None
            )
        self.cache = cache.ReferenceCache(  # this process's copies of reference data
            self._read_version if self._version_connection is not None else None
        )
        info = {cache.CACHE: self.cache}
        self._read_sessions = async_sessionmaker(self.engine, expire_on_commit=False, info=info)
        self._write_sessions = async_sessionmaker(self.writer, expire_on_commit=False, info=info)
        self.group_commit = (
            GroupCommit(self._write_sessions, max(1, group_commit_max)) if self.sqlite else None
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._read_sessions() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One transaction: committed on success, rolled back on any exception.

        Callables appended to `session.info[AFTER_COMMIT]` run once the outermost transaction
        has committed (never for a rollback, never at a savepoint); `before_commit` steps run
        last inside it.
        """
        if self.group_commit is not None:
            async with self.group_commit.write() as session:
                session.info[cache.WRITING] = True  # the turn's info starts empty
                session.info[cache.CACHE] = self.cache
                yield session
            return
        async with self._write_sessions() as session:
            session.info[cache.WRITING] = True
            async with session.begin():
                yield session
                await _run_before_commit(session)
            _run_after_commit(session)

    def _read_version(self) -> int:
        assert self._version_connection is not None
        (version,) = self._version_connection.execute(cache.VERSION_SQL).fetchone()
        return int(version)

    async def dispose(self) -> None:
        if self._version_connection is not None:
            self._version_connection.close()
            self._version_connection = None
        await self.engine.dispose()
        if self.writer is not self.engine:
            await self.writer.dispose()

    @property
    def engines(self) -> tuple[AsyncEngine, ...]:
        return (self.engine,) if self.writer is self.engine else (self.engine, self.writer)


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A Core statement as one dialect's driver takes it: SQL with positional placeholders,
    the bind names in placeholder order, and the type processors SQLAlchemy would apply."""

    statement: Any  # kept so the id it is cached under is never reused
    sql: str
    compiled: Any
    names: tuple[str, ...]
    binds: tuple[Callable[[Any], Any] | None, ...]
    row: Callable[..., tuple[Any, ...]]
    results: tuple[Callable[[Any], Any] | None, ...]  # one per result column
    expanding_names: frozenset[str]  # IN lists: the SQL depends on their lengths
    shapes: dict[tuple[int, ...], tuple[str, tuple[str, ...]]]  # IN list lengths -> SQL, names


_COMPILED: dict[tuple[int, str, tuple[str, ...] | None], _Compiled] = {}
_MAX_COMPILED = 512  # statements are built once each; a flood of ad-hoc ones is not kept


def _compile(statement: Any, dialect: Any, params: dict[str, Any]) -> _Compiled:
    # An INSERT without values() takes its columns from the parameters, as SQLAlchemy does.
    columns = tuple(params) if statement.is_insert else None
    key = (id(statement), dialect.name, columns)
    found = _COMPILED.get(key)
    if found is not None and found.statement is statement:
        return found
    # An INSERT without RETURNING is compiled as for executemany: PostgreSQL's would otherwise
    # return the new primary key for the ORM (with RETURNING, that form needs SQLAlchemy's
    # own batching).
    compiled = statement.compile(
        dialect=dialect,
        column_keys=list(columns or ()) or None,
        for_executemany=columns is not None and not statement._returning,
    )
    names = tuple(compiled.positiontup or ())
    processors = compiled._bind_processors
    outputs = compiled._result_columns
    keys = [column[0] for column in outputs]
    made = _Compiled(
        statement,
        compiled.string,
        compiled,
        names,
        tuple(processors.get(name) for name in names),
        namedtuple("Row", keys, rename=True) if keys else _plain_row,
        tuple(_result_processor(column[3], dialect) for column in outputs),
        frozenset(compiled.bind_names[p] for p in compiled.post_compile_params if p.expanding),
        {},
    )
    if any(p.literal_execute for p in compiled.post_compile_params):
        raise ValueError("run() takes no literal_execute parameters; use session.execute")
    if len(_COMPILED) >= _MAX_COMPILED:
        _COMPILED.clear()
    _COMPILED[key] = made
    return made


def _plain_row(*values: Any) -> tuple[Any, ...]:
    """A row of a statement SQLAlchemy knows no result columns of (textual SQL)."""
    return values


def _result_processor(type_: Any, dialect: Any) -> Callable[[Any], Any] | None:
    """The type's result processor, chosen without the driver's column type code. Only
    asyncpg's numerics need one to choose, and asyncpg returns them as Decimal already."""
    try:
        return cast(Callable[[Any], Any] | None, type_._cached_result_processor(dialect, None))
    except (exc.InvalidRequestError, TypeError):
        return None


class Rows(list[Any]):
    """Result rows of `run`: named tuples, with the few accessors the callers use."""

    def all(self) -> list[Any]:
        return list(self)

    def first(self) -> Any:
        return self[0] if self else None

    def one(self) -> Any:
        if len(self) != 1:
            raise exc.NoResultFound("no row") if not self else exc.MultipleResultsFound("rows")
        return self[0]

    def scalar(self) -> Any:
        return self[0][0] if self else None

    def scalars(self) -> list[Any]:
        return [row[0] for row in self]


_DRIVER = "core.db.driver"  # session.info: the Driver of the session's current transaction


async def run(
    session: AsyncSession,
    statement: Any,
    params: dict[str, Any] | list[dict[str, Any]] | None = None,
) -> Rows:
    """`session.execute(statement, params)` for a Core statement, on the driver.

    The statement is compiled once per dialect and its binds and results go through the same
    type processors SQLAlchemy uses, but none of the per-call work around them (cache key,
    execution context, result metadata), which costs several times the database's own work
    for the small statements of a write. Pending ORM changes are flushed first, as autoflush
    would. A list of rows runs as one executemany on the driver, or through the session when
    rows must come back (SQLAlchemy then sends them as one multi-row statement)."""
    if session.new or session.dirty or session.deleted:
        await session.flush()
    driver = await Driver.of(session)
    first = (params[0] if params else {}) if isinstance(params, list) else (params or {})
    prepared = _compile(statement, session.get_bind().dialect, first)
    if isinstance(params, list) and len(params) != 1:
        if prepared.results or prepared.expanding_names:
            # Rows returned from many: SQLAlchemy's insertmanyvalues makes them one statement.
            return Rows((await session.execute(statement, params)).all())
        await driver.executemany_native(prepared.sql, [_bound(prepared, row) for row in params])
        return Rows()
    if prepared.expanding_names:
        raw = await driver.fetch_native(*_bound_expanded(prepared, first))
    else:
        raw = await driver.fetch_native(prepared.sql, _bound(prepared, first))
    make, results = prepared.row, prepared.results
    if not any(results):
        return Rows(make(*row) for row in raw)
    return Rows(
        make(*(p(v) if p is not None else v for p, v in zip(results, row, strict=True)))
        for row in raw
    )


def _bound_expanded(prepared: _Compiled, params: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """SQL and values of a statement with IN lists: the SQL is SQLAlchemy's expansion, kept
    per list lengths; the values are flattened under the names SQLAlchemy gives the items
    (`name_i`, `name_i_j` for tuples), each through its type's processor."""
    compiled = prepared.compiled
    values = compiled.construct_params(params, _no_postcompile=True)
    processors = compiled._bind_processors
    flat: dict[str, Any] = {}
    lengths = []
    for name, value in values.items():
        processor = processors.get(name)
        if name not in prepared.expanding_names:
            flat[name] = processor(value) if processor is not None else value
            continue
        lengths.append(len(value))
        for i, item in enumerate(value, 1):
            if isinstance(item, tuple):
                for j, element in enumerate(item, 1):
                    each = processor[j - 1] if isinstance(processor, tuple) else None
                    flat[f"{name}_{i}_{j}"] = each(element) if each is not None else element
            else:
                flat[f"{name}_{i}"] = processor(item) if processor is not None else item
    key = tuple(lengths)
    shape = prepared.shapes.get(key)
    if shape is None:
        state = compiled.construct_expanded_state(params)
        if len(prepared.shapes) > 64:
            prepared.shapes.clear()
        shape = prepared.shapes[key] = (state.statement, tuple(state.positiontup or ()))
    sql, names = shape
    return sql, tuple(flat[name] for name in names)


def _bound(prepared: _Compiled, params: dict[str, Any]) -> tuple[Any, ...]:
    """The driver's values in placeholder order, each through its type's processor; binds the
    parameters do not name (a statement's own constants) come from SQLAlchemy's defaults."""
    named = all(name in params for name in prepared.names)
    values = params if named else prepared.compiled.construct_params(params)
    return tuple(
        p(values[name]) if p is not None else values[name]
        for name, p in zip(prepared.names, prepared.binds, strict=True)
    )


class Driver:
    """The driver connection under a session's transaction, for bulk inserts of precomputed
    rows: SQLAlchemy's per-row bind processing costs more than the database's own work.

    SQL is written with `?` placeholders (turned into `$n` for asyncpg) and rows hold driver
    values: `sqlite_time` / plain datetimes, JSON already dumped. On SQLite's writer, once BEGIN
    IMMEDIATE holds the lock (`WriterConnection.inline`), the call runs on the loop's thread.
    Driver errors are raised as SQLAlchemy's, as a statement through the session would be.
    """

    def __init__(self, dialect: str, connection: Any, observed: Any = None) -> None:
        self.dialect = dialect
        self._connection = connection
        self._observed = observed  # the SQLAlchemy Connection whose statement events fire

    def _announce(self, sql: str, params: Any, many: bool) -> None:
        """`before_cursor_execute` listeners (statement counters in /metrics, benches and
        tests) see driver statements as they see SQLAlchemy's."""
        observed = self._observed
        if observed is not None and observed.dispatch.before_cursor_execute:
            observed.dispatch.before_cursor_execute(observed, None, sql, params, None, many)

    @classmethod
    async def of(cls, session: AsyncSession) -> Driver:
        """The driver of the session's current transaction (looked up once per transaction)."""
        transaction = session.sync_session.get_transaction()
        cached = session.info.get(_DRIVER)
        if transaction is not None and cached is not None and cached[0] is transaction:
            return cast(Driver, cached[1])
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        adapter = raw.dbapi_connection
        if getattr(adapter, "_transaction", False) is None:
            # SQLAlchemy's asyncpg adapter sends BEGIN with its first statement; a statement
            # sent to asyncpg first would run outside the transaction (committed at once).
            await adapter._start_transaction()  # type: ignore[union-attr]
        driver = cls(connection.dialect.name, raw.driver_connection, connection.sync_connection)
        session.info[_DRIVER] = (session.sync_session.get_transaction(), driver)
        return driver

    def _sql(self, sql: str) -> str:
        if self.dialect == "sqlite":
            return sql
        parts = sql.split("?")
        return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], 1)) + parts[-1]

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self.executemany_native(self._sql(sql), rows)

    async def executemany_native(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._announce(sql, rows, True)
        driver = self._connection
        try:
            if isinstance(driver, WriterConnection) and driver.inline:
                driver._connection.executemany(sql, rows)  # type: ignore[union-attr]
            else:
                await driver.executemany(sql, rows)
        except _DRIVER_ERRORS as error:
            raise _as_sqlalchemy(error, sql) from error

    async def fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        return await self.fetch_native(self._sql(sql), params)

    async def fetch_native(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of one statement in the driver's own placeholders (`?`, or `$n` for asyncpg)."""
        self._announce(sql, params, False)
        driver = self._connection
        try:
            if isinstance(driver, WriterConnection) and driver.inline:
                return driver._connection.execute(sql, params).fetchall()  # type: ignore[union-attr]
            if self.dialect == "sqlite":
                async with driver.execute(sql, params) as cursor:
                    return list(await cursor.fetchall())
            return list(await driver.fetch(sql, *params))
        except _DRIVER_ERRORS as error:
            raise _as_sqlalchemy(error, sql) from error


_DRIVER_ERRORS = (sqlite3.Error, asyncpg.PostgresError)


def _as_sqlalchemy(error: Exception, sql: str) -> Exception:
    """A driver's integrity error as `sqlalchemy.exc.IntegrityError`, the rest as DBAPIError."""
    if isinstance(error, sqlite3.IntegrityError | asyncpg.IntegrityConstraintViolationError):
        return exc.IntegrityError(sql, None, error)
    return exc.DBAPIError(sql, None, error)


def driver_time(dialect: str, moment: datetime) -> datetime | str:
    """A timestamp as the driver takes it for a UTCDateTime column: aware for asyncpg, and on
    SQLite the text SQLAlchemy's DateTime stores (UTC, naive, microseconds)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime given; use timezone-aware UTC datetimes")
    if dialect != "sqlite":
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored in UTC and always come back timezone-aware, on both databases."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
