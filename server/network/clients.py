"""OAuth2 machine clients (client credentials): created, rotated and revoked by administrators
or the operator's command line; their issued access tokens recorded for introspection and
revocation.

A client belongs to one organisation and is given one role, like a person; the scopes it may
hold are those that open something that role may do, and what it may do on a request is its
role ∩ its token's scopes (`Principal.can`). It acts through a service account of its own in
`users` (username "client:<client_id>", no usable password), so every "who did it" column
keeps naming a user and the audit also records the client (`actor_client_id`).

Secrets are 256 random bits, shown once and stored as SHA-256 hashes. Rotating keeps the
previous secret working for the configured overlap, so the third party can switch over without
downtime. Revoking is final: the client can get no token and its issued tokens stop working on
their next request; a "session" event (after commit) lets live websockets close too.

The `ClientCredentials` and `IssuedToken` snapshots implement authlib's ClientMixin and
TokenMixin, which the token, introspection and revocation endpoints (server.network.oauth) use.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.core import audit
from server.core.db import Database, utcnow
from server.core.errors import DomainError, InvalidInput, NotFound, Unauthenticated
from server.core.events import Event, EventBus
from server.core.pagination import Page, keyset_page
from server.core.security import (
    CLIENT_SUBJECT_PREFIX,
    SCOPE_PERMISSIONS,
    Permission,
    Principal,
    Role,
    TokenService,
    client_secret_matches,
    new_client_secret,
    role_scopes,
)
from server.core.validation import ensure_unique, get_or_not_found, required_text
from server.network.models import OAuthClient, OAuthToken, Organisation, User

# A client is a system acting for an organisation: never an administrator, and not a nurse
# (a nurse is a person at a ward).
CLIENT_ROLES = frozenset(Role) - {Role.ADMIN, Role.NURSE}
CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
GRANT_TYPE = "client_credentials"
SESSION_TOPIC = "session"
UNUSABLE_PASSWORD = "!oauth-client"  # not an argon2 hash: verify_password never accepts it


def split_scopes(scope: str | None) -> frozenset[str]:
    return frozenset((scope or "").split())


def join_scopes(scopes: Iterable[str]) -> str:
    return " ".join(sorted(set(scopes)))


@dataclass(frozen=True)
class ClientCredentials(ClientMixin):  # type: ignore[misc]
    """What the token endpoints know of a live (unrevoked) client, read once per request."""

    pk: int
    client_id: str
    scopes: frozenset[str]
    secret_hash: str
    previous_secret_hash: str | None
    previous_secret_expires_at: datetime | None

    def get_client_id(self) -> str:
        return self.client_id

    def check_client_secret(self, client_secret: str) -> bool:
        """The current secret, or the previous one while its overlap lasts."""
        if client_secret_matches(self.secret_hash, client_secret):
            return True
        return (
            self.previous_secret_expires_at is not None
            and self.previous_secret_expires_at > utcnow()
            and client_secret_matches(self.previous_secret_hash, client_secret)
        )

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in CLIENT_AUTH_METHODS

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == GRANT_TYPE

    def get_allowed_scope(self, scope: str | None) -> str:
        """The scope a token gets: what was asked for (already checked), else all of the
        client's."""
        requested = split_scopes(scope)
        return join_scopes(requested & self.scopes if requested else self.scopes)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False  # no browser flows for machine clients

    def check_response_type(self, response_type: str) -> bool:
        return False

    def get_default_redirect_uri(self) -> str | None:
        return None


@dataclass(frozen=True)
class IssuedToken(TokenMixin):  # type: ignore[misc]
    """One access token issued to a client, as introspection and revocation see it."""

    client_pk: int
    client_id: str
    jti: str
    scope: str
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    def check_client(self, client: ClientCredentials) -> bool:
        return client.pk == self.client_pk

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int((self.expires_at - self.issued_at).total_seconds())

    def is_expired(self) -> bool:
        return self.expires_at <= utcnow()

    def is_revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class ClientWithSecret:
    """A created or rotated client and its new secret: the only time the secret is shown."""

    client: OAuthClient
    secret: str


def client_snapshot(client: OAuthClient) -> dict[str, object]:
    """What the audit records of a client (never a secret or its hash)."""
    return audit.snapshot(
        client,
        "client_id",
        "name",
        "organisation_id",
        "role",
        "scopes",
        "secret_rotated_at",
        "previous_secret_expires_at",
        "revoked_at",
    )


def _new_client_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-") or "client"
    return f"{slug}-{secrets.token_hex(4)}"


def check_client_scopes(role: Role, scopes: Iterable[str]) -> frozenset[str]:
    """The scopes a client of `role` may be given: known ones, each opening something the role
    may do (a SUPPLIER gets no audit:read: it could never use it)."""
    wanted = frozenset(s.strip() for s in scopes if s.strip())
    if not wanted:
        raise InvalidInput("give the client at least one scope", field="scopes")
    unknown = sorted(wanted - SCOPE_PERMISSIONS.keys())
    if unknown:
        raise InvalidInput(
            f"unknown scope {', '.join(unknown)}; known: {', '.join(sorted(SCOPE_PERMISSIONS))}",
            field="scopes",
        )
    useless = sorted(wanted - role_scopes(frozenset({role})))
    if useless:
        raise InvalidInput(
            f"a {role.value} client may not hold {', '.join(useless)}: the role allows none of "
            "what it opens",
            field="scopes",
        )
    return wanted


class OAuthClientService:
    def __init__(
        self, db: Database, bus: EventBus, tokens: TokenService, secret_overlap: timedelta
    ) -> None:
        self.db = db
        self.bus = bus
        self.tokens = tokens
        self.secret_overlap = secret_overlap

    # --- administration --------------------------------------------------------------------

    async def create_client(
        self,
        principal: Principal | None,
        *,
        name: str,
        organisation_id: int,
        role: Role,
        scopes: Iterable[str],
    ) -> ClientWithSecret:
        """`principal` None is the command line (the machine's operator), never the API."""
        if principal is not None:
            principal.require(Permission.USERS_MANAGE)
        name = required_text(name, "name", max_length=80)
        if role not in CLIENT_ROLES:
            raise InvalidInput(
                f"a client may not be {role.value}; give it "
                f"{', '.join(sorted(r.value for r in CLIENT_ROLES))}",
                field="role",
            )
        granted = check_client_scopes(role, scopes)
        secret, secret_hash = new_client_secret()
        async with self.db.write() as session:
            await get_or_not_found(session, Organisation, organisation_id, "organisation")
            await ensure_unique(session, OAuthClient.name, name, "name")
            client_id = _new_client_id(name)
            account = User(
                username=CLIENT_SUBJECT_PREFIX + client_id,
                full_name=name,
                password_hash=UNUSABLE_PASSWORD,
                organisation_id=organisation_id,
            )
            session.add(account)
            await session.flush()
            client = OAuthClient(
                client_id=client_id,
                name=name,
                organisation_id=organisation_id,
                user_id=account.id,
                role=role,
                scopes=join_scopes(granted),
                secret_hash=secret_hash,
            )
            session.add(client)
            await session.flush()
            await audit.record(
                session,
                principal,
                action="oauth_client.create",
                entity_type="OAuthClient",
                entity_id=client.id,
                after=client_snapshot(client),
            )
        return ClientWithSecret(client, secret)

    async def rotate_secret(self, principal: Principal | None, client_pk: int) -> ClientWithSecret:
        """A new secret; the previous one keeps working for the overlap window."""
        if principal is not None:
            principal.require(Permission.USERS_MANAGE)
        secret, secret_hash = new_client_secret()
        now = utcnow()
        async with self.db.write() as session:
            client = await self._live(session, client_pk)
            before = client_snapshot(client)
            client.previous_secret_hash = client.secret_hash
            client.previous_secret_expires_at = now + self.secret_overlap
            client.secret_hash = secret_hash
            client.secret_rotated_at = now
            await session.flush()
            await audit.record(
                session,
                principal,
                action="oauth_client.rotate_secret",
                entity_type="OAuthClient",
                entity_id=client.id,
                before=before,
                after=client_snapshot(client),
            )
        return ClientWithSecret(client, secret)

    async def revoke_client(self, principal: Principal | None, client_pk: int) -> OAuthClient:
        """Final: no more tokens, and the issued ones stop working on their next request."""
        if principal is not None:
            principal.require(Permission.USERS_MANAGE)
        now = utcnow()
        async with self.db.write() as session:
            client = await self._live(session, client_pk)
            before = client_snapshot(client)
            client.revoked_at = now
            client.previous_secret_hash = None
            client.previous_secret_expires_at = None
            await session.execute(
                update(OAuthToken)
                .where(OAuthToken.client_id == client.id, OAuthToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            await session.flush()
            await self.bus.emit(session, [Event(SESSION_TOPIC, {"client_id": client.id})])
            await audit.record(
                session,
                principal,
                action="oauth_client.revoke",
                entity_type="OAuthClient",
                entity_id=client.id,
                before=before,
                after=client_snapshot(client),
            )
        return client

    async def _live(self, session: AsyncSession, client_pk: int) -> OAuthClient:
        client = await get_or_not_found(session, OAuthClient, client_pk, "client")
        if client.revoked_at is not None:
            raise DomainError(
                f"client {client.client_id} was revoked on {client.revoked_at:%Y-%m-%d %H:%M}",
                field="client",
            )
        return client

    async def clients_page(
        self, principal: Principal, *, first: int, after: str | None, max_page_size: int
    ) -> Page[OAuthClient]:
        """Every OAuth client, revoked ones too, in id order (administrators only)."""
        principal.require(Permission.USERS_MANAGE)
        return await keyset_page(
            self.db,
            select(OAuthClient),
            keys=[OAuthClient.id],
            first=first,
            after=after,
            max_page_size=max_page_size,
            key_of=lambda r: [r.id],
        )

    async def find_by_client_id(self, client_id: str) -> OAuthClient:
        async with self.db.read() as session:
            client = (
                await session.execute(select(OAuthClient).where(OAuthClient.client_id == client_id))
            ).scalar_one_or_none()
        if client is None:
            raise NotFound(f"no client {client_id!r}", field="client")
        return client

    # --- what the token endpoints ask (server.network.oauth) -------------------------------

    async def credentials(self, client_id: str) -> ClientCredentials | None:
        """The live client with this client_id, None if unknown or revoked."""
        async with self.db.read() as session:
            client = (
                await session.execute(
                    select(OAuthClient).where(
                        OAuthClient.client_id == client_id, OAuthClient.revoked_at.is_(None)
                    )
                )
            ).scalar_one_or_none()
        if client is None:
            return None
        return ClientCredentials(
            pk=client.id,
            client_id=client.client_id,
            scopes=split_scopes(client.scopes),
            secret_hash=client.secret_hash,
            previous_secret_hash=client.previous_secret_hash,
            previous_secret_expires_at=client.previous_secret_expires_at,
        )

    def issue_token(self, client: ClientCredentials, scope: str) -> str:
        return self.tokens.issue_client_token(client.client_id, scope)

    async def record_token(self, client: ClientCredentials, access_token: str) -> None:
        """Remember an issued token by its id, so it can be introspected and revoked; records
        of tokens expired a day ago go (an expired token is refused by its `exp` anyway)."""
        claims = self.tokens.decode_claims(access_token)
        async with self.db.write() as session:
            await session.execute(
                delete(OAuthToken).where(OAuthToken.expires_at < utcnow() - timedelta(days=1))
            )
            session.add(
                OAuthToken(
                    client_id=client.pk,
                    jti=str(claims["jti"]),
                    scope=str(claims["scope"]),
                    issued_at=_timestamp(claims["iat"]),
                    expires_at=_timestamp(claims["exp"]),
                )
            )

    async def issued_token(self, token: str) -> IssuedToken | None:
        """The record of a client access token, None for anything else (garbage, expired,
        forged, a person's token)."""
        try:
            claims = self.tokens.decode_claims(token)
        except Unauthenticated:
            return None
        if not str(claims.get("sub", "")).startswith(CLIENT_SUBJECT_PREFIX):
            return None
        async with self.db.read() as session:
            row = (
                await session.execute(
                    select(OAuthToken, OAuthClient.client_id)
                    .join(OAuthClient, OAuthClient.id == OAuthToken.client_id)
                    .where(OAuthToken.jti == str(claims.get("jti", "")))
                )
            ).one_or_none()
        if row is None:
            return None
        record, client_id = row
        return IssuedToken(
            client_pk=record.client_id,
            client_id=client_id,
            jti=record.jti,
            scope=record.scope,
            issued_at=record.issued_at,
            expires_at=record.expires_at,
            revoked_at=record.revoked_at,
        )

    async def revoke_token(self, token: IssuedToken) -> None:
        async with self.db.write() as session:
            await session.execute(
                update(OAuthToken)
                .where(OAuthToken.jti == token.jti, OAuthToken.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )


def _timestamp(value: object) -> datetime:
    return datetime.fromtimestamp(int(str(value)), UTC)
