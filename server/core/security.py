"""Who is asking and what they may do: passwords, tokens, principals, roles and scopes.

Every check in the system goes through `Principal.require`, so the access rules live here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import os
import secrets
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from server.core.errors import Forbidden, RateLimited, Unauthenticated


class Role(StrEnum):
    ADMIN = "ADMIN"
    PHARMACIST = "PHARMACIST"
    WAREHOUSE_MANAGER = "WAREHOUSE_MANAGER"
    NURSE = "NURSE"
    SUPPLIER = "SUPPLIER"
    AUDITOR = "AUDITOR"
    REGULATOR = "REGULATOR"


class Permission(StrEnum):
    STOCK_READ = "STOCK_READ"
    STOCK_RECEIVE = "STOCK_RECEIVE"
    STOCK_DISPENSE = "STOCK_DISPENSE"
    STOCK_RETURN = "STOCK_RETURN"
    STOCK_ADJUST = "STOCK_ADJUST"
    STOCK_DISPOSE = "STOCK_DISPOSE"
    STOCK_PRODUCE = "STOCK_PRODUCE"
    CATALOG_READ = "CATALOG_READ"
    CATALOG_MANAGE = "CATALOG_MANAGE"
    NETWORK_READ = "NETWORK_READ"
    NETWORK_MANAGE = "NETWORK_MANAGE"
    USERS_MANAGE = "USERS_MANAGE"
    AUDIT_READ = "AUDIT_READ"
    ALERT_ACKNOWLEDGE = "ALERT_ACKNOWLEDGE"
    COUNT_MANAGE = "COUNT_MANAGE"
    SUPPLIER_MANAGE = "SUPPLIER_MANAGE"
    PROCUREMENT_READ = "PROCUREMENT_READ"
    ORDER_MANAGE = "ORDER_MANAGE"
    ORDER_ACKNOWLEDGE = "ORDER_ACKNOWLEDGE"
    SHIPMENT_SEND = "SHIPMENT_SEND"
    SHIPMENT_RECEIVE = "SHIPMENT_RECEIVE"
    TRANSFER_REQUEST = "TRANSFER_REQUEST"
    TRANSFER_APPROVE = "TRANSFER_APPROVE"
    TRANSFER_FULFIL = "TRANSFER_FULFIL"
    TRANSFER_RECEIVE = "TRANSFER_RECEIVE"
    RECALL_MANAGE = "RECALL_MANAGE"
    TRACE_READ = "TRACE_READ"
    FINANCE_READ = "FINANCE_READ"
    BUDGET_MANAGE = "BUDGET_MANAGE"


_ALL_ROLES = frozenset(Role)
_STOCK_STAFF = frozenset({Role.ADMIN, Role.PHARMACIST, Role.WAREHOUSE_MANAGER})

ROLE_PERMISSIONS: dict[Permission, frozenset[Role]] = {
    Permission.STOCK_READ: _ALL_ROLES - {Role.SUPPLIER},
    Permission.STOCK_RECEIVE: _STOCK_STAFF,
    Permission.STOCK_DISPENSE: frozenset({Role.ADMIN, Role.PHARMACIST, Role.NURSE}),
    Permission.STOCK_RETURN: frozenset({Role.ADMIN, Role.PHARMACIST, Role.NURSE}),
    Permission.STOCK_ADJUST: _STOCK_STAFF,
    Permission.STOCK_DISPOSE: _STOCK_STAFF | {Role.NURSE},
    # Commissioning lots: stock staff, and only at a manufacturer's own locations (the
    # production service checks the organisation).
    Permission.STOCK_PRODUCE: _STOCK_STAFF,
    Permission.CATALOG_READ: _ALL_ROLES,
    Permission.CATALOG_MANAGE: frozenset({Role.ADMIN, Role.PHARMACIST}),
    Permission.NETWORK_READ: _ALL_ROLES,
    Permission.NETWORK_MANAGE: frozenset({Role.ADMIN}),
    Permission.USERS_MANAGE: frozenset({Role.ADMIN}),
    Permission.AUDIT_READ: frozenset({Role.ADMIN, Role.AUDITOR}),
    Permission.ALERT_ACKNOWLEDGE: _STOCK_STAFF | {Role.NURSE},
    Permission.COUNT_MANAGE: _STOCK_STAFF | {Role.NURSE},
    Permission.SUPPLIER_MANAGE: frozenset({Role.ADMIN, Role.PHARMACIST}),
    # Suppliers read procurement too, but only their own orders and shipments (services check).
    Permission.PROCUREMENT_READ: _STOCK_STAFF | {Role.SUPPLIER, Role.AUDITOR},
    Permission.ORDER_MANAGE: _STOCK_STAFF,
    Permission.ORDER_ACKNOWLEDGE: frozenset({Role.ADMIN, Role.SUPPLIER}),
    Permission.SHIPMENT_SEND: _STOCK_STAFF | {Role.SUPPLIER},
    Permission.SHIPMENT_RECEIVE: _STOCK_STAFF,
    Permission.TRANSFER_REQUEST: _STOCK_STAFF | {Role.NURSE},
    Permission.TRANSFER_APPROVE: _STOCK_STAFF,
    Permission.TRANSFER_FULFIL: _STOCK_STAFF,
    Permission.TRANSFER_RECEIVE: _STOCK_STAFF | {Role.NURSE},
    Permission.RECALL_MANAGE: frozenset({Role.ADMIN, Role.PHARMACIST, Role.REGULATOR}),
    Permission.TRACE_READ: _STOCK_STAFF | {Role.AUDITOR, Role.REGULATOR},
    # Costs, spend and budgets (server.finance): prices are procurement staff's business.
    Permission.FINANCE_READ: _STOCK_STAFF | {Role.AUDITOR},
    Permission.BUDGET_MANAGE: frozenset({Role.ADMIN, Role.PHARMACIST}),
}

# Roles that are not confined to their organisation's locations.
GLOBAL_ROLES = frozenset({Role.ADMIN, Role.AUDITOR, Role.REGULATOR})

# OAuth2 scopes of machine clients and the permissions each opens. A client may use a
# permission only if one of its token's scopes opens it AND its role grants it (role ∩ scopes).
# A write scope carries the read its own checks need (updating a shipment reads it first).
# Nothing opens USERS_MANAGE or NETWORK_MANAGE: who may act is managed by people only.
SCOPE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "stock:read": frozenset({Permission.STOCK_READ}),
    "stock:write": frozenset(
        {
            Permission.STOCK_READ,
            Permission.STOCK_RECEIVE,
            Permission.STOCK_DISPENSE,
            Permission.STOCK_RETURN,
            Permission.STOCK_ADJUST,
            Permission.STOCK_DISPOSE,
        }
    ),
    # A manufacturer's MES/ERP commissioning lots (recordProduction).
    "production:write": frozenset(
        {Permission.STOCK_READ, Permission.CATALOG_READ, Permission.STOCK_PRODUCE}
    ),
    # An EHR or dispensing cabinet posting FHIR MedicationDispenses (and reversing them).
    "dispense:write": frozenset(
        {Permission.STOCK_READ, Permission.STOCK_DISPENSE, Permission.STOCK_RETURN}
    ),
    "catalog:read": frozenset({Permission.CATALOG_READ}),
    "catalog:write": frozenset({Permission.CATALOG_READ, Permission.CATALOG_MANAGE}),
    "network:read": frozenset({Permission.NETWORK_READ}),
    "alerts:write": frozenset({Permission.ALERT_ACKNOWLEDGE}),
    "counts:write": frozenset({Permission.COUNT_MANAGE}),
    "procurement:read": frozenset({Permission.PROCUREMENT_READ}),
    "suppliers:write": frozenset({Permission.PROCUREMENT_READ, Permission.SUPPLIER_MANAGE}),
    "orders:write": frozenset(
        {Permission.PROCUREMENT_READ, Permission.ORDER_MANAGE, Permission.ORDER_ACKNOWLEDGE}
    ),
    "shipments:write": frozenset(
        {Permission.PROCUREMENT_READ, Permission.SHIPMENT_SEND, Permission.SHIPMENT_RECEIVE}
    ),
    "transfers:write": frozenset(
        {
            Permission.TRANSFER_REQUEST,
            Permission.TRANSFER_APPROVE,
            Permission.TRANSFER_FULFIL,
            Permission.TRANSFER_RECEIVE,
        }
    ),
    "supervision:read": frozenset({Permission.TRACE_READ}),
    "recalls:write": frozenset({Permission.TRACE_READ, Permission.RECALL_MANAGE}),
    "audit:read": frozenset({Permission.AUDIT_READ}),
    "finance:read": frozenset({Permission.FINANCE_READ}),
}


@functools.cache
def scope_permissions(scopes: frozenset[str]) -> frozenset[Permission]:
    """Every permission the given scopes open (unknown scope names open nothing)."""
    return frozenset().union(*(SCOPE_PERMISSIONS.get(scope, frozenset()) for scope in scopes))


def role_scopes(roles: frozenset[Role]) -> frozenset[str]:
    """The scopes that open at least one permission these roles have: all a client may hold."""
    return frozenset(
        scope
        for scope, permissions in SCOPE_PERMISSIONS.items()
        if any(roles & ROLE_PERMISSIONS[p] for p in permissions)
    )


@dataclass(frozen=True)
class WitnessCredentials:
    """A second person's username and password, typed on the same device to witness a
    controlled drug's movement (server/controlled)."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Principal:
    """The signed-in user (or OAuth2 client) of one request. `location_ids` None means every
    location. A client acts through its own service account (`user_id`), with `client_id` its
    row in oauth_clients and `scopes` its token's scopes; `scopes` None (a person) restricts
    nothing."""

    user_id: int
    username: str
    roles: frozenset[Role]
    organisation_id: int | None
    location_ids: frozenset[int] | None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Permissions lent for one use case a service has already authorised (e.g. a nurse
    # receiving a transfer writes TRANSFER_IN); location scope still applies.
    grants: frozenset[Permission] = frozenset()
    # An OAuth2 client's principal: its id and granted scopes (None: a person, no scope limit).
    client_id: int | None = None
    scopes: frozenset[str] | None = None
    # The sign-in (refresh-token family, the token's `sid`) and when the access token expires:
    # a websocket re-checks both and ends when either does (server.core.sessions).
    session_id: str | None = None
    expires_at: datetime | None = None

    def can(self, permission: Permission) -> bool:
        if permission in self.grants:
            return True
        return self.scope_allows(permission) and bool(self.roles & ROLE_PERMISSIONS[permission])

    def scope_allows(self, permission: Permission) -> bool:
        return self.scopes is None or permission in scope_permissions(self.scopes)

    def granted(self, *permissions: Permission) -> Principal:
        """This principal, additionally allowed `permissions` (the audit still names its roles)."""
        return replace(self, grants=self.grants | frozenset(permissions))

    def sees_location(self, location_id: int) -> bool:
        return self.location_ids is None or location_id in self.location_ids

    def readable_locations(
        self, permission: Permission, location_id: int | None = None
    ) -> list[int] | None:
        """The locations a read may cover: the one asked for (checked), else the whole scope.

        None means every location. Raises Forbidden like `require`."""
        self.require(permission, location_id=location_id)
        if location_id is not None:
            return [location_id]
        return None if self.location_ids is None else sorted(self.location_ids)

    def require(self, permission: Permission, *, location_id: int | None = None) -> None:
        """Raise Forbidden unless a role grants `permission` (at `location_id`, when given)."""
        if not self.can(permission):
            what = permission.value.lower().replace("_", " ")
            if not self.scope_allows(permission):
                scopes = " ".join(sorted(self.scopes or ())) or "none"
                raise Forbidden(f"this client's scopes ({scopes}) do not allow {what}")
            roles = ", ".join(sorted(self.roles)) or "no role"
            raise Forbidden(f"{roles} may not {what}")
        if location_id is not None and not self.sees_location(location_id):
            raise Forbidden(
                f"location {location_id} is outside {self.username}'s scope", field="location"
            )

    @property
    def subject(self) -> str:
        """Who its token names (`sub`): the user id, or "client:<client_id>" for a client."""
        return self.username if self.client_id is not None else str(self.user_id)

    @property
    def primary_role(self) -> str:
        return ",".join(sorted(self.roles))


def require_principal(principal: Principal | None) -> Principal:
    if principal is None:
        raise Unauthenticated("sign in first: send 'Authorization: Bearer <access token>'")
    return principal


# --- passwords -------------------------------------------------------------------------------

# One lane (parallelism=1): argon2-cffi's default of 4 runs four threads per hash, so two hashes
# at once would take every core of a small server. The memory and time costs stay the
# defaults'; hashes made with other parameters still verify (each hash encodes its own).
_hasher = PasswordHasher(parallelism=1)
_DUMMY_HASH = _hasher.hash("timing-equaliser")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant work whether or not the user exists, so usernames cannot be probed by timing."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def _lower_priority(steps: int) -> None:
    """Make the calling (worker) thread `steps` nicer; where that is not per thread or not
    allowed, it keeps the process's priority."""
    if steps and sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + steps)


def needs_rehash(password_hash: str | None) -> bool:
    """Whether a stored hash was made with other parameters than today's (the four-lane
    hashes from before one lane): rehashed at the next successful sign-in."""
    if not password_hash:
        return False
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return False


class PasswordPool:
    """argon2 off the event loop: its own thread (argon2-cffi releases the GIL) and a bounded
    queue, so a sign-in flood neither stalls everyone's queries nor piles up without end. One
    worker by default: a one-lane hash then holds at most one core, whatever the flood. The
    workers run `nice` steps below the event loop (Linux: niceness is per thread; argon2's own
    lane threads inherit it), so when the cores are short, queries go first and sign-ins wait.

    `verify` refuses at once (RateLimited, "temporarily_unavailable") when `workers + queue`
    verifications are already in flight; `hash` (admins setting passwords) waits its turn."""

    def __init__(self, workers: int = 1, queue: int = 8, nice: int = 10) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, workers),
            thread_name_prefix="argon2",
            initializer=_lower_priority,
            initargs=(max(0, nice),),
        )
        self._capacity = max(1, workers) + max(0, queue)
        self._in_flight = 0

    async def verify(self, password_hash: str | None, password: str) -> bool:
        if self._in_flight >= self._capacity:
            raise RateLimited(
                "too many sign-ins are being checked; retry shortly",
                retry_after=1,
                oauth_error="temporarily_unavailable",
            )
        return bool(await self._run(verify_password, password_hash, password))

    async def hash(self, password: str) -> str:
        return str(await self._run(hash_password, password))

    async def _run(self, function: Any, *args: Any) -> Any:
        future = asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        self._in_flight += 1
        # Released when the thread is done, not when a disconnected caller gives up waiting.
        future.add_done_callback(self._release)
        return await asyncio.shield(future)

    def _release(self, _: object) -> None:
        self._in_flight -= 1


# --- tokens ----------------------------------------------------------------------------------

ACCESS_TOKEN_ALGORITHM = "HS256"
MAX_VERIFIED_TOKENS = 10_000
ISSUER = "apotheca"
# `sub` of a client's access token: "client:<client_id>" (RFC 9068: the client is the subject).
CLIENT_SUBJECT_PREFIX = "client:"


@dataclass(frozen=True)
class AccessClaims:
    """What an access token says: whose it is, which sign-in issued it, when it expires."""

    user_id: int
    session_id: str | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True)
class TokenService:
    secret_key: str
    access_ttl: timedelta
    refresh_ttl: timedelta
    # Tokens whose signature and claims were verified, with their claims: a client sends the
    # same token with every request until it expires, and verifying it (JSON, base64, HMAC)
    # costs more than the rest of authenticating. Expiry is checked on every use.
    _verified: dict[str, dict[str, Any]] = field(
        default_factory=dict, repr=False, compare=False, hash=False
    )

    @property
    def _key(self) -> OctKey:
        return OctKey.import_key(self.secret_key.encode())

    def issue_access_token(
        self, user_id: int, roles: frozenset[Role], *, session_id: str | None = None
    ) -> str:
        """`session_id` (claim `sid`) names the sign-in, so revoking it ends this token too."""
        now = datetime.now(UTC)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": str(user_id),
            "roles": sorted(roles),
            "iat": int(now.timestamp()),
            "exp": int((now + self.access_ttl).timestamp()),
            "jti": uuid.uuid4().hex,
        }
        if session_id is not None:
            claims["sid"] = session_id
        return jwt.encode({"alg": ACCESS_TOKEN_ALGORITHM}, claims, self._key)

    def issue_client_token(self, client_id: str, scope: str) -> str:
        """A client's access token: no roles in it (they are read per request), its scopes."""
        now = datetime.now(UTC)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": CLIENT_SUBJECT_PREFIX + client_id,
            "client_id": client_id,
            "scope": scope,
            "iat": int(now.timestamp()),
            "exp": int((now + self.access_ttl).timestamp()),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode({"alg": ACCESS_TOKEN_ALGORITHM, "typ": "at+jwt"}, claims, self._key)

    def decode_claims(self, token: str) -> dict[str, Any]:
        """The claims of a valid access token (ours, signed, with an `exp` still ahead), else
        Unauthenticated. A token without `exp` is refused: it would never expire."""
        known = self._verified.get(token)
        if known is not None:
            if known["exp"] > datetime.now(UTC).timestamp():
                return dict(known)
            del self._verified[token]
        try:
            decoded = jwt.decode(token, self._key, algorithms=[ACCESS_TOKEN_ALGORITHM])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": ISSUER},
                sub={"essential": True},
                exp={"essential": True},
            ).validate(decoded.claims)
            claims = dict(decoded.claims)
        except (JoseError, ValueError, KeyError, TypeError, OverflowError) as exc:
            reason = exc.__class__.__name__
            raise Unauthenticated(f"invalid or expired access token ({reason})") from None
        if isinstance(claims["exp"], int | float):
            if len(self._verified) >= MAX_VERIFIED_TOKENS:
                self._verified.clear()  # a flood of distinct tokens is not kept
            self._verified[token] = claims
        return dict(claims)

    def decode_access(self, token: str) -> AccessClaims:
        """The claims of a valid, unexpired user access token, else Unauthenticated."""
        return user_access_claims(self.decode_claims(token))

    def decode_access_token(self, token: str) -> int:
        """Return the user id of a valid, unexpired user access token, else Unauthenticated."""
        return self.decode_access(token).user_id

    @staticmethod
    def new_refresh_token() -> tuple[str, str]:
        """An opaque token for the client and the hash we store (never the token itself)."""
        token = secrets.token_urlsafe(32)
        return token, hash_refresh_token(token)


def user_access_claims(claims: dict[str, Any]) -> AccessClaims:
    """A person's access token claims (`sub` is a user id), else Unauthenticated."""
    try:
        sid = claims.get("sid")
        return AccessClaims(
            user_id=int(claims["sub"]),
            session_id=str(sid) if sid is not None else None,
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
    except (ValueError, KeyError, TypeError, OverflowError, OSError):
        raise Unauthenticated("not a user's access token") from None


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- client secrets --------------------------------------------------------------------------


def new_client_secret() -> tuple[str, str]:
    """A client secret (256 random bits, shown once) and the hash we store.

    SHA-256, not argon2: the secret is machine-made with full entropy, so there is nothing for
    a slow hash to protect against, and every token request checks it."""
    secret = secrets.token_urlsafe(32)
    return secret, hash_client_secret(secret)


def hash_client_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def client_secret_matches(secret_hash: str | None, secret: str) -> bool:
    """Constant-time comparison of a presented secret with a stored hash."""
    return secret_hash is not None and hmac.compare_digest(hash_client_secret(secret), secret_hash)
