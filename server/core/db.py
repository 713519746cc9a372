"""Async engine, sessions and the one rule for write transactions on each database.

SQLite allows one writer: write transactions start with BEGIN IMMEDIATE (so two writers never
both read then both write) and are queued in-process by a lock instead of spinning on
SQLITE_BUSY. PostgreSQL relies on row locks and atomic upserts taken inside the transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


def midnight_utc(day: date) -> datetime:
    """The UTC instant a day starts: the bound for `occurred_at` range filters."""
    return datetime.combine(day, time.min, tzinfo=UTC)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


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


AFTER_COMMIT = "apotheca_after_commit"


def _run_after_commit(session: AsyncSession) -> None:
    for callback in session.info.pop(AFTER_COMMIT, []):
        callback()


class Database:
    """Owns the engines; `read()` for queries, `write()` for one serialisable-enough transaction."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        if self.sqlite:
            self.engine = create_async_engine(url, echo=echo)
            self.writer = create_async_engine(url, echo=echo)
            _install_sqlite_pragmas(self.engine.sync_engine, immediate=False)
            _install_sqlite_pragmas(self.writer.sync_engine, immediate=True)
        else:
            self.engine = create_async_engine(url, echo=echo, pool_size=10, max_overflow=20)
            self.writer = self.engine
        self._read_sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(self.writer, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if self.sqlite else None

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
        has committed (never for a rollback, never at a savepoint).
        """
        if self._write_lock is not None:
            async with self._write_lock, self._write_sessions() as session:
                async with session.begin():
                    yield session
                _run_after_commit(session)
        else:
            async with self._write_sessions() as session:
                async with session.begin():
                    yield session
                _run_after_commit(session)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.writer is not self.engine:
            await self.writer.dispose()

    @property
    def engines(self) -> tuple[AsyncEngine, ...]:
        return (self.engine,) if self.writer is self.engine else (self.engine, self.writer)


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
