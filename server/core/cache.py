"""Per-process copies of reference data that rarely changes, never stale by one transaction.

Locations, products by GTIN and principals are read on every write and every request, but
change a few times a day. Triggers (migration 0014) advance the one row of `reference_version`
in every transaction that changes them, on either database and whoever writes (any worker, the
CLI, plain SQL). A transaction or request reads that number once (the idempotency claim
returns it with the key, other paths run `SELECT version`), and the cache drops everything it
holds when the number differs from the one its copies were read at. So a location deactivated
or a user disabled through worker A is refused by worker B on its very next transaction.

What a write transaction loads becomes cached only once that transaction has committed (it may
hold its own uncommitted changes, or roll back); what a read session loads is committed data
and is cached at once, if the number has not moved meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

VERSION_SQL = "SELECT version FROM reference_version WHERE id = 1"
VERSION_QUERY = text(VERSION_SQL)
# A scalar subquery any statement of the transaction can return alongside its own result.
VERSION_SUBQUERY = "(SELECT version FROM reference_version WHERE id = 1)"

SEEN = "apotheca_reference_version"  # session.info: the number this transaction/request read
CACHE = "apotheca_cache"  # session.info: the ReferenceCache of the session's Database
WRITING = "apotheca_writing"  # session.info: set by Database.write for its session
AFTER_COMMIT = "apotheca_after_commit"  # server.core.db's list of after-commit callbacks


class ReferenceCache:
    """Named maps valid for one `reference_version`; one instance per Database (per process)."""

    def __init__(self, read_version: Callable[[], int] | None = None) -> None:
        # Outside write transactions, the committed number can come from here instead (a
        # number read before the session's own reads: its copies are as new or newer).
        self._read_version = read_version
        self.version: int | None = None
        self._maps: dict[str, dict[Any, Any]] = {}
        self.hits = 0
        self.misses = 0  # what the tests and /metrics observe
        self.reloads = 0

    def seen(self, session: AsyncSession, version: int) -> None:
        """Record the number a statement of this transaction returned, dropping stale copies."""
        session.info[SEEN] = version
        if version != self.version:
            if self.version is not None:
                self.reloads += 1
            self._maps.clear()
            self.version = version

    async def check(self, session: AsyncSession) -> int:
        """The number this transaction sees: read once per transaction or request."""
        version = session.info.get(SEEN)
        if version is None:
            if self._read_version is not None and not session.info.get(WRITING):
                version = self._read_version()
            else:
                version = int((await session.execute(VERSION_QUERY)).scalar_one())
            self.seen(session, version)
        elif version != self.version:
            self.seen(session, version)
        return int(version)

    async def get_many(
        self,
        session: AsyncSession,
        name: str,
        keys: Iterable[K],
        load: Callable[[AsyncSession, set[K]], Awaitable[dict[K, V]]],
    ) -> dict[K, V]:
        """The values of `keys` (absent keys stay absent), loading the missing ones in one call."""
        version = await self.check(session)
        cached: dict[K, V] = self._maps.setdefault(name, {})
        found: dict[K, V] = {}
        missing: set[K] = set()
        for key in keys:
            if key in cached:
                found[key] = cached[key]
            else:
                missing.add(key)
        self.hits += len(found)
        if not missing:
            return {key: value for key, value in found.items() if value is not _ABSENT}
        self.misses += len(missing)
        loaded = await load(session, missing)
        found.update(loaded)
        # Known-absent keys are remembered too (as None is never a value, store a sentinel).
        entries: dict[K, Any] = {key: loaded.get(key, _ABSENT) for key in missing}
        if session.info.get(WRITING):
            session.info.setdefault(AFTER_COMMIT, []).append(
                lambda: self._store(name, version, entries)
            )
        else:
            self._store(name, version, entries)
        return {key: value for key, value in found.items() if value is not _ABSENT}

    async def get(
        self,
        session: AsyncSession,
        name: str,
        key: K,
        load: Callable[[AsyncSession, K], Awaitable[V | None]],
    ) -> V | None:
        """One value, or None when it does not exist (remembered, too)."""

        async def load_one(session: AsyncSession, keys: set[K]) -> dict[K, V]:
            value = await load(session, key)
            return {} if value is None else {key: value}

        return (await self.get_many(session, name, (key,), load_one)).get(key)

    def _store(self, name: str, version: int, entries: dict[Any, Any]) -> None:
        if self.version == version:  # else newer copies were dropped meanwhile: keep nothing
            self._maps.setdefault(name, {}).update(entries)


async def cached_many(
    session: AsyncSession,
    name: str,
    keys: Iterable[K],
    load: Callable[[AsyncSession, set[K]], Awaitable[dict[K, V]]],
) -> dict[K, V]:
    """`ReferenceCache.get_many` through the session's Database cache; a session made without
    one (a bare sessionmaker in a migration or script) loads directly."""
    db_cache: ReferenceCache | None = session.info.get(CACHE)
    if db_cache is None:
        return await load(session, set(keys))
    return await db_cache.get_many(session, name, keys, load)


async def cached_one(
    session: AsyncSession,
    name: str,
    key: K,
    load: Callable[[AsyncSession, K], Awaitable[V | None]],
) -> V | None:
    """`ReferenceCache.get` likewise: one value, or None when it does not exist."""
    db_cache: ReferenceCache | None = session.info.get(CACHE)
    if db_cache is None:
        return await load(session, key)
    return await db_cache.get(session, name, key, load)


class _Absent:
    """A key looked up and not found, so the next lookup need not ask the database."""

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Any = _Absent()
