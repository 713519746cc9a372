"""Organisations, locations, users and sign-in. Each write is one audited transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.core import audit
from server.core.db import Database, utcnow
from server.core.errors import (
    AccountDisabled,
    DomainError,
    ErrorCode,
    InvalidInput,
    Unauthenticated,
)
from server.core.events import Event, EventBus
from server.core.gs1 import gtin_check_digit
from server.core.pagination import Page, keyset_page
from server.core.security import (
    CLIENT_SUBJECT_PREFIX,
    GLOBAL_ROLES,
    PasswordPool,
    Permission,
    Principal,
    Role,
    TokenService,
    hash_refresh_token,
    needs_rehash,
    user_access_claims,
)
from server.core.sessions import SESSION_TOPIC
from server.core.validation import (
    LIKE_ESCAPE,
    ensure_unique,
    get_or_not_found,
    like_pattern,
    required_text,
)
from server.network.models import (
    Location,
    LocationKind,
    OAuthClient,
    OAuthToken,
    Organisation,
    OrganisationKind,
    RefreshToken,
    User,
    UserLocation,
    UserRole,
)


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


def location_descendants(locations: Iterable[tuple[int, int | None]], roots: set[int]) -> set[int]:
    """All locations at or below `roots` in the tree given as (id, parent_id) pairs."""
    children: dict[int | None, list[int]] = {}
    for location_id, parent_id in locations:
        children.setdefault(parent_id, []).append(location_id)
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        stack.extend(children.get(current, ()))
    return seen


def organisation_snapshot(org: Organisation) -> dict[str, object]:
    return audit.snapshot(org, "name", "kind", "gln")


def location_snapshot(loc: Location) -> dict[str, object]:
    return audit.snapshot(
        loc,
        "organisation_id",
        "parent_id",
        "code",
        "name",
        "kind",
        "allow_negative_stock",
        "active",
    )


class NetworkService:
    def __init__(
        self,
        db: Database,
        tokens: TokenService,
        bus: EventBus | None = None,
        passwords: PasswordPool | None = None,
    ) -> None:
        self.db = db
        self.tokens = tokens
        self.bus = bus or EventBus()
        self.passwords = passwords or PasswordPool()

    # --- principals and sign-in -----------------------------------------------------------

    async def authenticate(
        self, token: str, request_id: str | None = None, *, session: AsyncSession | None = None
    ) -> Principal:
        """The principal of an access token: valid and unexpired, its account active and its
        sign-in (`sid`) not revoked. Every HTTP request and every websocket operation."""
        claims = self.tokens.decode_claims(token)
        if session is None:
            async with self.db.read() as own:
                return await self._authenticate(own, claims, request_id)
        return await self._authenticate(session, claims, request_id)

    async def _authenticate(
        self, session: AsyncSession, token_claims: dict[str, Any], request_id: str | None
    ) -> Principal:
        if str(token_claims["sub"]).startswith(CLIENT_SUBJECT_PREFIX):
            return await self._load_client_principal(session, token_claims, request_id)
        claims = user_access_claims(token_claims)
        # From this process's cache while the reference version (one cheap read per request)
        # says nothing changed: a user disabled, a role or scope changed, a sign-in revoked
        # on any worker advances it (migration 0014), so those apply at once here too.
        cache = self.db.cache
        found: Principal | DomainError | None = await cache.get(
            session, "network.principals", claims.user_id, self._principal_or_refusal
        )
        if found is None or isinstance(found, DomainError):
            # A fresh refusal each time: re-raising the cached one would grow its traceback.
            refusal = found or Unauthenticated("this account no longer exists or is disabled")
            raise type(refusal)(refusal.message)
        if claims.session_id is not None:
            revoked = await cache.get(session, "network.revoked", claims.session_id, self._revoked)
            if revoked:
                raise Unauthenticated("this sign-in was revoked; sign in again")
        return replace(
            found,
            request_id=request_id or uuid.uuid4().hex,
            session_id=claims.session_id,
            expires_at=claims.expires_at,
        )

    async def _principal_or_refusal(
        self, session: AsyncSession, user_id: int
    ) -> Principal | DomainError:
        """The principal, or the refusal a missing or disabled account gets (cached alike)."""
        try:
            return await self._load_principal(session, user_id, None)
        except (Unauthenticated, AccountDisabled) as refusal:
            return refusal

    @staticmethod
    async def _revoked(session: AsyncSession, family: str) -> bool:
        """A sign-in is revoked once every refresh token of its family is (rotation spends
        one and adds the next in one transaction; revoking marks rows, never deletes them).
        A family this database never held (a cloned or restored database) is judged by the
        token's signature and expiry alone."""
        tokens, live = (
            await session.execute(
                select(
                    func.count(RefreshToken.id),
                    func.count(RefreshToken.id).filter(RefreshToken.revoked_at.is_(None)),
                ).where(RefreshToken.family == family)
            )
        ).one()
        return bool(tokens and not live)

    async def load_principal(
        self, user_id: int, request_id: str | None = None, *, session: AsyncSession | None = None
    ) -> Principal:
        """Build the request's principal from the database, so role changes apply at once.

        Given `session` (the request's read session), it reads there instead of opening one."""
        if session is None:
            async with self.db.read() as own:
                return await self._load_principal(own, user_id, request_id)
        return await self._load_principal(session, user_id, request_id)

    async def _load_client_principal(
        self, session: AsyncSession, claims: dict[str, object], request_id: str | None
    ) -> Principal:
        row = (
            await session.execute(
                select(OAuthClient, OAuthToken.revoked_at)
                .join(OAuthToken, OAuthToken.client_id == OAuthClient.id)
                .where(
                    OAuthClient.client_id == str(claims.get("client_id", "")),
                    OAuthToken.jti == str(claims.get("jti", "")),
                )
            )
        ).one_or_none()
        if row is None or row[0].revoked_at is not None or row[1] is not None:
            raise Unauthenticated("this client or its access token has been revoked")
        client: OAuthClient = row[0]
        roles = frozenset({client.role})
        location_ids = (
            None
            if roles & GLOBAL_ROLES
            else frozenset(await self._organisation_locations(session, client.organisation_id))
        )
        # The token's scopes, never more than the client holds now.
        scopes = frozenset(str(claims.get("scope", "")).split()) & frozenset(client.scopes.split())
        return Principal(
            user_id=client.user_id,
            username=CLIENT_SUBJECT_PREFIX + client.client_id,
            roles=roles,
            organisation_id=client.organisation_id,
            location_ids=location_ids,
            request_id=request_id or uuid.uuid4().hex,
            client_id=client.id,
            scopes=scopes,
            expires_at=datetime.fromtimestamp(int(str(claims["exp"])), UTC),
        )

    async def _load_principal(
        self, session: AsyncSession, user_id: int, request_id: str | None
    ) -> Principal:
        user = await session.get(User, user_id)
        if user is None:
            raise Unauthenticated("this account no longer exists or is disabled")
        if not user.active:
            raise AccountDisabled("this account no longer exists or is disabled")
        roles = frozenset(
            (await session.execute(select(UserRole.role).where(UserRole.user_id == user_id)))
            .scalars()
            .all()
        )
        location_ids = await self._scope(session, user, roles)
        principal = Principal(
            user_id=user.id,
            username=user.username,
            roles=roles,
            organisation_id=user.organisation_id,
            location_ids=location_ids,
        )
        if request_id:
            principal = Principal(**{**principal.__dict__, "request_id": request_id})
        return principal

    async def _scope(
        self, session: AsyncSession, user: User, roles: frozenset[Role]
    ) -> frozenset[int] | None:
        if roles & GLOBAL_ROLES:
            return None
        explicit = set(
            (
                await session.execute(
                    select(UserLocation.location_id).where(UserLocation.user_id == user.id)
                )
            ).scalars()
        )
        if not explicit and user.organisation_id is not None:
            return frozenset(await self._organisation_locations(session, user.organisation_id))
        tree = (await session.execute(select(Location.id, Location.parent_id))).all()
        return frozenset(location_descendants(tree, explicit))

    async def _organisation_locations(
        self, session: AsyncSession, organisation_id: int
    ) -> set[int]:
        """Every location of an organisation: its root locations and all below them."""
        tree = (await session.execute(select(Location.id, Location.parent_id))).all()
        roots = set(
            (
                await session.execute(
                    select(Location.id).where(
                        Location.organisation_id == organisation_id,
                        Location.parent_id.is_(None),
                    )
                )
            ).scalars()
        )
        return location_descendants(tree, roots)

    async def password_grant(self, username: str, password: str) -> TokenPair:
        async with self.db.read() as session:
            user = (
                await session.execute(select(User).where(User.username == username))
            ).scalar_one_or_none()
        ok = await self.passwords.verify(user.password_hash if user else None, password)
        if user is None or not ok or not user.active:
            raise DomainError("wrong username or password", code=ErrorCode.INVALID_CREDENTIALS)
        upgraded = None
        if needs_rehash(user.password_hash):
            upgraded = await self.passwords.hash(password)
        async with self.db.write() as session:
            if upgraded is not None:  # unless the password changed meanwhile
                await session.execute(
                    update(User)
                    .where(User.id == user.id, User.password_hash == user.password_hash)
                    .values(password_hash=upgraded)
                )
            return await self._issue(session, user.id, family=uuid.uuid4().hex)

    async def refresh_grant(self, refresh_token: str) -> TokenPair:
        """Rotate: the presented token is spent; presenting a spent one revokes its family."""
        now = utcnow()
        token_hash = hash_refresh_token(refresh_token)
        reused_family: str | None = None
        async with self.db.write() as session:
            token = (
                await session.execute(
                    select(RefreshToken)
                    .where(RefreshToken.token_hash == token_hash)
                    .with_for_update()
                )
            ).scalar_one_or_none()
            if token is None or token.expires_at < now:
                raise DomainError(
                    "unknown or expired refresh token", code=ErrorCode.INVALID_CREDENTIALS
                )
            if token.revoked_at is not None:
                reused_family = token.family
                await session.execute(
                    update(RefreshToken)
                    .where(RefreshToken.family == token.family, RefreshToken.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
                await self.bus.emit(session, [_sign_in_ended(token.family)])
            else:
                user = await session.get(User, token.user_id)
                if user is None or not user.active:
                    raise DomainError("account disabled", code=ErrorCode.INVALID_CREDENTIALS)
                token.revoked_at = now
                return await self._issue(session, token.user_id, family=token.family)
        raise DomainError(
            f"refresh token already used; every session of sign-in {reused_family[:8]} revoked",
            code=ErrorCode.INVALID_CREDENTIALS,
        )

    async def revoke(self, refresh_token: str) -> bool:
        """Revoke the sign-in the refresh token belongs to (its whole family): its access
        tokens stop working and its websockets close, on every worker."""
        async with self.db.write() as session:
            family = (
                await session.execute(
                    select(RefreshToken.family).where(
                        RefreshToken.token_hash == hash_refresh_token(refresh_token)
                    )
                )
            ).scalar_one_or_none()
            if family is None:
                return False
            # An UPDATE's result is a CursorResult (it has rowcount); execute() is typed as Result.
            result = cast(
                CursorResult[Any],
                await session.execute(
                    update(RefreshToken)
                    .where(RefreshToken.family == family, RefreshToken.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                ),
            )
            if not result.rowcount:
                return False
            await self.bus.emit(session, [_sign_in_ended(family)])
            return True

    async def _issue(self, session: AsyncSession, user_id: int, *, family: str) -> TokenPair:
        roles = frozenset(
            (await session.execute(select(UserRole.role).where(UserRole.user_id == user_id)))
            .scalars()
            .all()
        )
        refresh, refresh_hash = self.tokens.new_refresh_token()
        session.add(
            RefreshToken(
                user_id=user_id,
                family=family,
                token_hash=refresh_hash,
                expires_at=utcnow() + self.tokens.refresh_ttl,
            )
        )
        return TokenPair(
            access_token=self.tokens.issue_access_token(user_id, roles, session_id=family),
            refresh_token=refresh,
            expires_in=int(self.tokens.access_ttl.total_seconds()),
        )

    # --- lists ---------------------------------------------------------------------------

    async def organisations_page(
        self,
        principal: Principal,
        *,
        kind: OrganisationKind | None,
        first: int,
        after: str | None,
        max_page_size: int,
    ) -> Page[Organisation]:
        """Organisations in id order, optionally of one kind."""
        principal.require(Permission.NETWORK_READ)
        stmt = select(Organisation)
        if kind is not None:
            stmt = stmt.where(Organisation.kind == kind)
        return await _by_id(self.db, stmt, Organisation, first, after, max_page_size)

    async def locations_page(
        self,
        principal: Principal,
        *,
        organisation_id: int | None,
        kind: LocationKind | None,
        search: str | None,
        mine: bool,
        first: int,
        after: str | None,
        max_page_size: int,
    ) -> Page[Location]:
        """Locations in id order: of one organisation or kind, whose code or name contains
        `search` (any case), or (`mine`) only those in the principal's scope."""
        principal.require(Permission.NETWORK_READ)
        stmt = select(Location)
        if organisation_id is not None:
            stmt = stmt.where(Location.organisation_id == organisation_id)
        if kind is not None:
            stmt = stmt.where(Location.kind == kind)
        if search:
            pattern = like_pattern(search.lower())
            stmt = stmt.where(
                or_(
                    Location.code.ilike(pattern, escape=LIKE_ESCAPE),
                    Location.name.ilike(pattern, escape=LIKE_ESCAPE),
                )
            )
        if mine and principal.location_ids is not None:
            stmt = stmt.where(Location.id.in_(principal.location_ids))
        return await _by_id(self.db, stmt, Location, first, after, max_page_size)

    async def users_page(
        self, principal: Principal, *, first: int, after: str | None, max_page_size: int
    ) -> Page[User]:
        """People in id order (administrators only); OAuth clients' service accounts are not."""
        principal.require(Permission.USERS_MANAGE)
        clients = select(OAuthClient.user_id)
        stmt = select(User).where(User.id.not_in(clients))
        return await _by_id(self.db, stmt, User, first, after, max_page_size)

    # --- organisations -------------------------------------------------------------------

    async def create_organisation(
        self, principal: Principal, *, name: str, kind: OrganisationKind, gln: str | None = None
    ) -> Organisation:
        principal.require(Permission.NETWORK_MANAGE)
        name = required_text(name, "name")
        gln = _valid_gln(gln)
        async with self.db.write() as session:
            await ensure_unique(session, Organisation.name, name, "name")
            if gln:
                await ensure_unique(session, Organisation.gln, gln, "gln")
            org = Organisation(name=name, kind=kind, gln=gln)
            session.add(org)
            await session.flush()
            await audit.record(
                session,
                principal,
                action="organisation.create",
                entity_type="Organisation",
                entity_id=org.id,
                after=organisation_snapshot(org),
            )
            return org

    async def update_organisation(
        self,
        principal: Principal,
        organisation_id: int,
        *,
        name: str | None = None,
        kind: OrganisationKind | None = None,
        gln: str | None = None,
    ) -> Organisation:
        principal.require(Permission.NETWORK_MANAGE)
        async with self.db.write() as session:
            org = await get_or_not_found(session, Organisation, organisation_id, "organisation")
            before = organisation_snapshot(org)
            if name is not None and name != org.name:
                new_name = required_text(name, "name")
                await ensure_unique(session, Organisation.name, new_name, "name", exclude_id=org.id)
                org.name = new_name
            if kind is not None:
                org.kind = kind
            if gln is not None and gln != org.gln:
                new_gln = _valid_gln(gln)
                if new_gln:
                    await ensure_unique(
                        session, Organisation.gln, new_gln, "gln", exclude_id=org.id
                    )
                org.gln = new_gln
            await session.flush()
            await audit.record(
                session,
                principal,
                action="organisation.update",
                entity_type="Organisation",
                entity_id=org.id,
                before=before,
                after=organisation_snapshot(org),
            )
            return org

    # --- locations -----------------------------------------------------------------------

    async def create_location(
        self,
        principal: Principal,
        *,
        organisation_id: int,
        code: str,
        name: str,
        kind: LocationKind,
        parent_id: int | None = None,
        allow_negative_stock: bool = False,
    ) -> Location:
        principal.require(Permission.NETWORK_MANAGE)
        code = _location_code(code)
        name = required_text(name, "name")
        async with self.db.write() as session:
            await get_or_not_found(session, Organisation, organisation_id, "organisation")
            if parent_id is not None:
                parent = await get_or_not_found(session, Location, parent_id, "parent")
                if parent.organisation_id != organisation_id:
                    raise InvalidInput(
                        "a location's parent must belong to the same organisation", field="parent"
                    )
            await ensure_unique(session, Location.code, code, "code")
            location = Location(
                organisation_id=organisation_id,
                code=code,
                name=name,
                kind=kind,
                parent_id=parent_id,
                allow_negative_stock=allow_negative_stock,
            )
            session.add(location)
            await session.flush()
            await audit.record(
                session,
                principal,
                action="location.create",
                entity_type="Location",
                entity_id=location.id,
                after=location_snapshot(location),
            )
            return location

    async def update_location(
        self,
        principal: Principal,
        location_id: int,
        *,
        name: str | None = None,
        code: str | None = None,
        kind: LocationKind | None = None,
        parent_id: int | None = None,
        allow_negative_stock: bool | None = None,
        active: bool | None = None,
    ) -> Location:
        principal.require(Permission.NETWORK_MANAGE)
        async with self.db.write() as session:
            location = await get_or_not_found(session, Location, location_id, "location")
            before = location_snapshot(location)
            if name is not None:
                location.name = required_text(name, "name")
            if code is not None and _location_code(code) != location.code:
                new_code = _location_code(code)
                await ensure_unique(
                    session, Location.code, new_code, "code", exclude_id=location.id
                )
                location.code = new_code
            if kind is not None:
                location.kind = kind
            if parent_id is not None:
                await self._check_parent(session, location, parent_id)
                location.parent_id = parent_id
            if allow_negative_stock is not None:
                location.allow_negative_stock = allow_negative_stock
            if active is not None:
                location.active = active
            await session.flush()
            await audit.record(
                session,
                principal,
                action="location.update",
                entity_type="Location",
                entity_id=location.id,
                before=before,
                after=location_snapshot(location),
            )
            return location

    async def _check_parent(
        self, session: AsyncSession, location: Location, parent_id: int
    ) -> None:
        parent = await get_or_not_found(session, Location, parent_id, "parent")
        if parent.organisation_id != location.organisation_id:
            raise InvalidInput(
                "a location's parent must belong to the same organisation", field="parent"
            )
        tree = (await session.execute(select(Location.id, Location.parent_id))).all()
        if parent_id in location_descendants(tree, {location.id}):
            raise InvalidInput("a location cannot be moved under itself", field="parent")

    # --- users ---------------------------------------------------------------------------

    async def create_user(
        self,
        principal: Principal | None,
        *,
        username: str,
        full_name: str,
        password: str,
        roles: Iterable[Role],
        organisation_id: int | None = None,
        location_ids: Iterable[int] = (),
    ) -> User:
        """`principal` None is the command line (the operator of the machine), never the API."""
        if principal is not None:
            principal.require(Permission.USERS_MANAGE)
        username = required_text(username, "username").lower()
        if username.startswith(CLIENT_SUBJECT_PREFIX):
            raise InvalidInput(
                f"usernames starting with {CLIENT_SUBJECT_PREFIX!r} belong to OAuth2 clients",
                field="username",
            )
        roles = frozenset(roles)
        _check_password(password)
        if not roles:
            raise InvalidInput("give the user at least one role", field="roles")
        password_hash = await self.passwords.hash(password)  # before the write transaction
        async with self.db.write() as session:
            await ensure_unique(session, User.username, username, "username")
            if organisation_id is not None:
                await get_or_not_found(session, Organisation, organisation_id, "organisation")
            user = User(
                username=username,
                full_name=required_text(full_name, "full_name"),
                password_hash=password_hash,
                organisation_id=organisation_id,
            )
            session.add(user)
            await session.flush()
            await self._set_roles_and_scope(session, user, roles, location_ids)
            await audit.record(
                session,
                principal,
                action="user.create",
                entity_type="User",
                entity_id=user.id,
                after=await self._user_snapshot(session, user),
            )
            return user

    async def update_user(
        self,
        principal: Principal,
        user_id: int,
        *,
        full_name: str | None = None,
        password: str | None = None,
        roles: Iterable[Role] | None = None,
        organisation_id: int | None = None,
        location_ids: Iterable[int] | None = None,
        active: bool | None = None,
    ) -> User:
        principal.require(Permission.USERS_MANAGE)
        if password is not None:
            _check_password(password)
            password_hash = await self.passwords.hash(password)  # before the write transaction
        async with self.db.write() as session:
            user = await get_or_not_found(session, User, user_id, "user")
            await _not_a_client_account(session, user)
            before = await self._user_snapshot(session, user)
            if full_name is not None:
                user.full_name = required_text(full_name, "full_name")
            if password is not None:
                user.password_hash = password_hash
            if organisation_id is not None:
                await get_or_not_found(session, Organisation, organisation_id, "organisation")
                user.organisation_id = organisation_id
            if active is not None:
                if not active and user.id == principal.user_id:
                    raise InvalidInput("you cannot disable your own account", field="active")
                user.active = active
            if roles is not None or location_ids is not None:
                current_roles = (
                    frozenset(roles)
                    if roles is not None
                    else frozenset(
                        (
                            await session.execute(
                                select(UserRole.role).where(UserRole.user_id == user.id)
                            )
                        ).scalars()
                    )
                )
                if not current_roles:
                    raise InvalidInput("give the user at least one role", field="roles")
                current_locations = (
                    list(location_ids)
                    if location_ids is not None
                    else list(
                        (
                            await session.execute(
                                select(UserLocation.location_id).where(
                                    UserLocation.user_id == user.id
                                )
                            )
                        ).scalars()
                    )
                )
                await self._set_roles_and_scope(session, user, current_roles, current_locations)
            ended: list[Event] = []
            if active is False or password is not None:
                families = (
                    await session.execute(
                        update(RefreshToken)
                        .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
                        .values(revoked_at=utcnow())
                        .returning(RefreshToken.family)
                    )
                ).scalars()
                # A new password ends the user's sign-ins: their websockets close 4401.
                ended = [_sign_in_ended(family) for family in sorted(set(families))]
            await session.flush()
            after = await self._user_snapshot(session, user)
            # Deactivated, or what the user may see changed: every websocket of the user closes
            # 4403 (running subscriptions were authorised with the old access).
            access = ("active", "organisation_id", "roles", "location_ids")
            if any(before[key] != after[key] for key in access):
                reason = "account disabled" if not user.active else "access changed"
                ended.insert(0, Event(SESSION_TOPIC, {"user_id": user.id, "reason": reason}))
            await self.bus.emit(session, ended)
            await audit.record(
                session,
                principal,
                action="user.update",
                entity_type="User",
                entity_id=user.id,
                before=before,
                after=after,
            )
            return user

    async def _set_roles_and_scope(
        self,
        session: AsyncSession,
        user: User,
        roles: frozenset[Role],
        location_ids: Iterable[int],
    ) -> None:
        location_ids = sorted(set(location_ids))
        for location_id in location_ids:
            location = await get_or_not_found(session, Location, location_id, "locations")
            if (
                user.organisation_id is not None
                and location.organisation_id != user.organisation_id
            ):
                raise InvalidInput(
                    f"location {location.code} belongs to another organisation", field="locations"
                )
        if Role.NURSE in roles and not location_ids and not roles & GLOBAL_ROLES:
            raise InvalidInput("a nurse must be scoped to at least one ward", field="locations")
        await session.execute(delete(UserRole).where(UserRole.user_id == user.id))
        await session.execute(delete(UserLocation).where(UserLocation.user_id == user.id))
        session.add_all([UserRole(user_id=user.id, role=role) for role in sorted(roles)])
        session.add_all([UserLocation(user_id=user.id, location_id=loc) for loc in location_ids])
        await session.flush()

    async def _user_snapshot(self, session: AsyncSession, user: User) -> dict[str, object]:
        roles = (
            (await session.execute(select(UserRole.role).where(UserRole.user_id == user.id)))
            .scalars()
            .all()
        )
        locations = (
            (
                await session.execute(
                    select(UserLocation.location_id).where(UserLocation.user_id == user.id)
                )
            )
            .scalars()
            .all()
        )
        return {
            "username": user.username,
            "full_name": user.full_name,
            "organisation_id": user.organisation_id,
            "active": user.active,
            "roles": sorted(r.value for r in roles),
            "location_ids": sorted(locations),
        }


async def _not_a_client_account(session: AsyncSession, user: User) -> None:
    """A client's service account changes only through the client (create, rotate, revoke):
    a password set on it would be a way around the client's scopes."""
    client_id = (
        await session.execute(select(OAuthClient.client_id).where(OAuthClient.user_id == user.id))
    ).scalar_one_or_none()
    if client_id is not None:
        raise InvalidInput(
            f"{user.username} is OAuth2 client {client_id}'s account; manage the client instead",
            field="id",
        )


async def _by_id(
    db: Database, stmt: Any, model: Any, first: int, after: str | None, max_page_size: int
) -> Page[Any]:
    """One page of `stmt` in `model.id` order."""
    return await keyset_page(
        db,
        stmt,
        keys=[model.id],
        first=first,
        after=after,
        max_page_size=max_page_size,
        key_of=lambda r: [r.id],
    )


def _sign_in_ended(family: str) -> Event:
    return Event(SESSION_TOPIC, {"session_id": family})


def _location_code(code: str) -> str:
    code = (code or "").strip().upper()
    if not code or len(code) > 32 or not all(c.isalnum() or c in "-_." for c in code):
        raise InvalidInput("a location code is 1-32 letters, digits, '-', '_' or '.'", field="code")
    return code


def _valid_gln(gln: str | None) -> str | None:
    if gln is None or not gln.strip():
        return None
    gln = gln.strip()
    if len(gln) != 13 or not gln.isdigit() or gtin_check_digit(gln[:-1]) != gln[-1]:
        raise InvalidInput(f"{gln!r} is not a valid 13-digit GLN", field="gln")
    return gln


def _check_password(password: str) -> None:
    if len(password or "") < 8:
        raise InvalidInput("a password needs at least 8 characters", field="password")
