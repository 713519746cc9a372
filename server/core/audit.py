"""Append-only, hash-chained audit log.

Each event stores the hash of the one before it and its own sequence number; a one-row head
holds the last sequence and hash. Editing, deleting or reordering any row breaks the chain at
that row, and `verify()` names the first one that does not add up.

Checkpoints: a verification that found the chain intact records (seq, hash, verified_at) of the
event it ended on. `verify(since_checkpoint=True)` then starts from the newest checkpoint: it
re-hashes the checkpointed event (its contents must still give the stored hash), walks only the
events after it and checks the head. It guarantees every event after the checkpoint, and the
checkpointed event itself, are intact and linked to it; an edit to an earlier event is found by
a full run, which also checks every checkpoint's hash against the event it names.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, ForeignKey, Integer, String, bindparam, event, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, Session, SessionTransaction, mapped_column

from server.core.db import (
    Base,
    Driver,
    UTCDateTime,
    before_commit,
    dialect_of,
    driver_time,
    run,
    utcnow,
)
from server.core.security import Principal

GENESIS_HASH = "0" * 64


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    actor_name: Mapped[str] = mapped_column(String(100))
    # The OAuth2 client that acted (through its service account `actor_id`); null for people.
    actor_client_id: Mapped[int | None] = mapped_column(ForeignKey("oauth_clients.id"))
    role: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(String(200))
    request_id: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The single row every audit write locks, so the chain never forks under concurrency."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[str] = mapped_column(String(64), default=GENESIS_HASH)


class AuditCheckpoint(Base):
    """An event up to which the chain was verified intact: where the next run may start."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    verified_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# One encoder, built once: json.dumps with options builds a new one on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode


def _canonical(value: Any) -> str:
    return _CANONICAL(value)


HASHED_FIELDS = (
    "seq",
    "occurred_at",
    "actor_id",
    "actor_name",
    "role",
    "action",
    "entity_type",
    "entity_id",
    "before",
    "after",
    "reason",
    "request_id",
    "prev_hash",
)


# Hashed only when set, so the events written before clients existed keep their hashes.
OPTIONAL_HASHED_FIELDS = ("actor_client_id",)


def hash_of(fields: dict[str, Any], occurred_at: str | None = None) -> str:
    """The chain hash of one event given as a mapping of its hashed fields (`occurred_at`:
    its isoformat, when the caller has it already)."""
    payload = {name: fields[name] for name in HASHED_FIELDS}
    for name in OPTIONAL_HASHED_FIELDS:
        if fields.get(name) is not None:
            payload[name] = fields[name]
    payload["occurred_at"] = occurred_at or payload["occurred_at"].isoformat()
    return hashlib.sha256(_CANONICAL(payload).encode()).hexdigest()


def compute_hash(event: AuditEvent) -> str:
    return hash_of(
        {name: getattr(event, name) for name in (*HASHED_FIELDS, *OPTIONAL_HASHED_FIELDS)}
    )


_PLAIN = (str, int, bool, type(None))


def jsonable(value: Any) -> Any:
    """Before/after snapshots as plain JSON (dates, decimals and enums as strings). A flat
    mapping of plain values (a movement's snapshot) is already that, and is kept as it is."""
    if (
        type(value) is dict
        and all(type(k) is str for k in value)
        and all(type(v) in _PLAIN for v in value.values())
    ):
        return value
    return json.loads(_canonical(value))


def snapshot(row: Any, *columns: str, **renamed: str) -> dict[str, Any]:
    """A row's `columns` as an audit before/after (enums by value, the rest as `jsonable`);
    `renamed` adds keys that differ from their attribute: `requested="requested_quantity"`."""
    values = {name: getattr(row, name) for name in columns}
    values.update({key: getattr(row, attribute) for key, attribute in renamed.items()})
    plain = jsonable({k: v.value if isinstance(v, enum.Enum) else v for k, v in values.items()})
    return cast(dict[str, Any], plain)  # a dict of str keys stays one through JSON


@dataclass(frozen=True)
class AuditEntry:
    """What happened to one entity; `record_many` turns entries into chained events."""

    action: str
    entity_type: str
    entity_id: object
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    reason: str | None = None


async def record(
    session: AsyncSession,
    principal: Principal | None,
    *,
    action: str,
    entity_type: str,
    entity_id: object,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str | None = None,
) -> None:
    """One event of the caller's unit of work (appended at its end: see `record_many`)."""
    await record_many(
        session, principal, [AuditEntry(action, entity_type, entity_id, before, after, reason)]
    )


@functools.cache
def _advance_head(dialect: str) -> Any:
    """Reserve `count` sequence numbers and read the previous hash in one locking statement."""
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    stmt = insert(AuditHead).values(id=1, last_seq=bindparam("count"), last_hash=GENESIS_HASH)
    return stmt.on_conflict_do_update(
        index_elements=["id"], set_={"last_seq": AuditHead.last_seq + stmt.excluded.last_seq}
    ).returning(AuditHead.last_seq, AuditHead.last_hash)


_SET_HEAD_HASH = (
    update(AuditHead.__table__).where(AuditHead.id == 1).values(last_hash=bindparam("hash"))
)
_EVENT_COLUMNS = (
    "seq",
    "occurred_at",
    "actor_id",
    "actor_name",
    "actor_client_id",
    "role",
    "action",
    "entity_type",
    "entity_id",
    "before",
    "after",
    "reason",
    "request_id",
    "prev_hash",
    "hash",
)
_JSON = json.JSONEncoder().encode  # what SQLAlchemy's JSON type stores (json.dumps)
_QUOTED_COLUMNS = ", ".join(f'"{name}"' for name in _EVENT_COLUMNS)
_INSERT_EVENTS = (
    f"INSERT INTO audit_events ({_QUOTED_COLUMNS}) VALUES ({', '.join('?' * len(_EVENT_COLUMNS))})"
)

# PostgreSQL: the events (per-event columns as arrays, the actor's as one value each) and the
# head's new hash, in one statement.
_PG_EVENT_TYPES = {
    "seq": "integer[]",
    "occurred_at": "timestamptz",
    "actor_id": "integer",
    "actor_name": "varchar",
    "actor_client_id": "integer",
    "role": "varchar",
    "action": "varchar[]",
    "entity_type": "varchar[]",
    "entity_id": "varchar[]",
    "before": "text[]",
    "after": "text[]",
    "reason": "varchar[]",
    "request_id": "varchar",
    "prev_hash": "varchar[]",
    "hash": "varchar[]",
}
_PG_ARRAYS = [name for name, type_ in _PG_EVENT_TYPES.items() if type_.endswith("[]")]
_PG_PARAM = {name: f"${n}::{type_}" for n, (name, type_) in enumerate(_PG_EVENT_TYPES.items(), 1)}
_PG_APPEND = (
    f"WITH appended AS (INSERT INTO audit_events ({_QUOTED_COLUMNS}) SELECT "
    + ", ".join(
        f"u.{name}" + ("::json" if name in ("before", "after") else "")
        if name in _PG_ARRAYS
        else _PG_PARAM[name]
        for name in _EVENT_COLUMNS
    )
    + " FROM unnest("
    + ", ".join(_PG_PARAM[name] for name in _PG_ARRAYS)
    + f") AS u({', '.join(_PG_ARRAYS)}) ORDER BY u.seq RETURNING 1) "  # ids follow seq
    + f"UPDATE audit_head SET last_hash = ${len(_PG_EVENT_TYPES) + 1}::varchar WHERE id = 1"
)


@dataclass(frozen=True)
class _Pending:
    """Events recorded in a unit of work, not yet appended to the chain."""

    principal: Principal | None
    entries: list[AuditEntry]
    transaction: Any  # the innermost SessionTransaction they were recorded in (None: the root)


_PENDING = "apotheca.audit.pending"  # session.info: list[_Pending]


async def record_many(
    session: AsyncSession, principal: Principal | None, entries: list[AuditEntry]
) -> None:
    """Events of the caller's unit of work, appended to the chain at its end.

    Every writer locks the chain's head (a row lock on PostgreSQL), so the append runs last in
    the transaction (`before_commit`): the head is the last lock each writer takes, held only
    for the append and the commit, never while a writer waits on another lock (a lock order
    that cannot deadlock). Events recorded inside a savepoint that rolls back are dropped with
    it. One append per unit of work: two statements on PostgreSQL, three on SQLite."""
    if not entries:
        return
    pending = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
        before_commit(session, _append_pending)
    pending.append(
        _Pending(principal, list(entries), session.sync_session.get_nested_transaction())
    )


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, transaction: SessionTransaction) -> None:
    """A savepoint rolled back: its events (and those of savepoints inside it) go with it."""
    pending = session.info.get(_PENDING)
    if pending and transaction.nested:
        pending[:] = [p for p in pending if not _within(p.transaction, transaction)]


def _within(inner: SessionTransaction | None, outer: SessionTransaction) -> bool:
    while inner is not None:
        if inner is outer:
            return True
        inner = inner.parent
    return False


@event.listens_for(Session, "before_commit")
def _nothing_left_behind(session: Session) -> None:
    """A commit that skipped the append would lose events: refuse it (a savepoint's release
    fires this too: its events wait for the end of the unit of work)."""
    if session.info.get(_PENDING) and session.get_nested_transaction() is None:
        raise RuntimeError("audit events recorded but not appended: write through Database.write")


async def _append_pending(session: AsyncSession) -> None:
    """The unit of work's events, in recording order, one append per run of one principal."""
    pending: list[_Pending] = session.info.pop(_PENDING, [])
    runs: list[tuple[Principal | None, list[AuditEntry]]] = []
    for item in pending:
        if runs and runs[-1][0] is item.principal:
            runs[-1][1].extend(item.entries)
        else:
            runs.append((item.principal, list(item.entries)))
    for principal, entries in runs:
        await _append(session, principal, entries)


async def _append(
    session: AsyncSession, principal: Principal | None, entries: list[AuditEntry]
) -> None:
    """Chain `entries` onto the head: the head upsert both reserves the sequence numbers and
    locks the head (row lock on PostgreSQL, the writer's lock on SQLite), so the chain never
    forks under concurrency."""
    if session.new or session.dirty or session.deleted:
        await session.flush()  # the entities these events describe are written first
    dialect = dialect_of(session)
    last_seq, prev_hash = (
        await run(session, _advance_head(dialect), {"count": len(entries)})
    ).one()
    seq = last_seq - len(entries)
    now = utcnow()
    actor_id = principal.user_id if principal else None
    actor_name = principal.username if principal else "system"
    actor_client_id = principal.client_id if principal else None
    role = principal.primary_role if principal else "SYSTEM"
    request_id = principal.request_id if principal else None
    now_text = now.isoformat()
    rows: list[dict[str, Any]] = []
    for entry in entries:
        seq += 1
        row = {
            "seq": seq,
            "occurred_at": now,
            "actor_id": actor_id,
            "actor_name": actor_name,
            "actor_client_id": actor_client_id,
            "role": role,
            "action": entry.action,
            "entity_type": entry.entity_type,
            "entity_id": str(entry.entity_id),
            "before": jsonable(entry.before) if entry.before is not None else None,
            "after": jsonable(entry.after) if entry.after is not None else None,
            "reason": entry.reason,
            "request_id": request_id,
            "prev_hash": prev_hash,
        }
        row["hash"] = prev_hash = hash_of(row, now_text)
        rows.append(row)
    # Through the driver: SQLAlchemy's bind processing of 15 columns a row costs more than
    # the insert. JSON as SQLAlchemy's JSON type writes it (None as the JSON text null).
    stored_at = driver_time(dialect, now)
    driver = await Driver.of(session)
    before = ["null" if row["before"] is None else _JSON(row["before"]) for row in rows]
    after = ["null" if row["after"] is None else _JSON(row["after"]) for row in rows]
    if dialect != "sqlite":
        # The events and the head's new hash in one statement (one round trip).
        await driver.fetch_native(
            _PG_APPEND,
            (
                [row["seq"] for row in rows],
                stored_at,
                actor_id,
                actor_name,
                actor_client_id,
                role,
                [row["action"] for row in rows],
                [row["entity_type"] for row in rows],
                [row["entity_id"] for row in rows],
                before,
                after,
                [row["reason"] for row in rows],
                request_id,
                [row["prev_hash"] for row in rows],
                [row["hash"] for row in rows],
                prev_hash,
            ),
        )
        return
    await driver.executemany(
        _INSERT_EVENTS,
        [
            (
                row["seq"],
                stored_at,
                actor_id,
                actor_name,
                actor_client_id,
                role,
                row["action"],
                row["entity_type"],
                row["entity_id"],
                before_,
                after_,
                row["reason"],
                request_id,
                row["prev_hash"],
                row["hash"],
            )
            for row, before_, after_ in zip(rows, before, after, strict=True)
        ],
    )
    await run(session, _SET_HEAD_HASH, {"hash": prev_hash})


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    checked: int  # events verified up to the end (or to the first bad one), checkpoint included
    first_bad_seq: int | None = None
    first_bad_id: int | None = None
    problem: str | None = None
    from_seq: int = 0  # the checkpoint this run started after (0: the whole chain)
    last_hash: str = GENESIS_HASH  # the hash of the last event verified

    @property
    def newly_checked(self) -> int:
        """Events this run read and re-hashed (those after its checkpoint)."""
        return self.checked - self.from_seq


async def verify(
    session: AsyncSession, *, batch_size: int = 5000, since_checkpoint: bool = False
) -> AuditVerification:
    """Walk the chain in sequence order; report the first event whose hash or link is wrong.

    From genesis by default (and then every checkpoint must name its event's hash); from the
    newest checkpoint with `since_checkpoint` (see the module doc for what that guarantees)."""
    expected_prev = GENESIS_HASH
    expected_seq = 1
    last_id = 0
    checkpoints: dict[int, str] = {}
    if since_checkpoint:
        start = (
            await session.execute(
                select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(1)
            )
        ).scalar_one_or_none()
        if start is not None:
            event = (
                await session.execute(select(AuditEvent).where(AuditEvent.seq == start.seq))
            ).scalar_one_or_none()
            if event is None or event.hash != start.hash or compute_hash(event) != event.hash:
                return AuditVerification(
                    False,
                    start.seq - 1,
                    start.seq,
                    event.id if event else None,
                    "the checkpointed event was deleted or edited since it was verified",
                    from_seq=start.seq - 1,
                )
            expected_prev, expected_seq, last_id = start.hash, start.seq + 1, event.id
    else:
        marks = (await session.execute(select(AuditCheckpoint.seq, AuditCheckpoint.hash))).all()
        checkpoints = {seq: hash_ for seq, hash_ in marks}
    from_seq = expected_seq - 1
    checked = from_seq
    while True:
        rows = (
            (
                await session.execute(
                    select(AuditEvent)
                    .where(AuditEvent.id > last_id)
                    .order_by(AuditEvent.id)
                    .limit(batch_size)
                )
            )
            .scalars()
            .all()
        )
        if not rows:
            break
        for event in rows:
            problem = None
            if event.seq != expected_seq:
                problem = (
                    f"sequence {event.seq} where {expected_seq} was expected "
                    "(an event was deleted or rows were reordered)"
                )
            elif event.prev_hash != expected_prev:
                problem = "its previous-hash link does not match the event before it"
            elif compute_hash(event) != event.hash:
                problem = "its contents do not match its hash (the row was edited)"
            elif checkpoints.get(event.seq, event.hash) != event.hash:
                problem = "its hash differs from the checkpoint that verified it"
            if problem:
                return AuditVerification(
                    False, checked, event.seq, event.id, problem, from_seq=from_seq
                )
            expected_prev = event.hash
            expected_seq += 1
            checked += 1
            last_id = event.id
        session.expunge_all()
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one_or_none()
    head_seq = head.last_seq if head else 0
    head_hash = head.last_hash if head else GENESIS_HASH
    if head_seq != expected_seq - 1 or head_hash != expected_prev:
        return AuditVerification(
            False,
            checked,
            expected_seq,
            None,
            f"the chain ends at sequence {expected_seq - 1} but the head records {head_seq} "
            "(trailing events were deleted)",
            from_seq=from_seq,
        )
    return AuditVerification(True, checked, from_seq=from_seq, last_hash=expected_prev)


async def save_checkpoint(session: AsyncSession, result: AuditVerification) -> None:
    """Record where an intact verification ended (once per sequence number)."""
    if not result.ok or result.checked == 0 or result.newly_checked == 0:
        return
    insert = sqlite_insert if dialect_of(session) == "sqlite" else pg_insert
    await session.execute(
        insert(AuditCheckpoint)
        .values(seq=result.checked, hash=result.last_hash, verified_at=utcnow())
        .on_conflict_do_nothing(index_elements=["seq"])
    )
