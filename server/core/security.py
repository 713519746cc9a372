"""Who is asking and what they may do: passwords, tokens, principals, roles and scopes.

Every check in the system goes through `Principal.require`, so the access rules live here once.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
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


_ALL_ROLES = frozenset(Role)
_STOCK_STAFF = frozenset({Role.ADMIN, Role.PHARMACIST, Role.WAREHOUSE_MANAGER})

ROLE_PERMISSIONS: dict[Permission, frozenset[Role]] = {
    Permission.STOCK_READ: _ALL_ROLES - {Role.SUPPLIER},
    Permission.STOCK_RECEIVE: _STOCK_STAFF,
    Permission.STOCK_DISPENSE: frozenset({Role.ADMIN, Role.PHARMACIST, Role.NURSE}),
    Permission.STOCK_RETURN: frozenset({Role.ADMIN, Role.PHARMACIST, Role.NURSE}),
    Permission.STOCK_ADJUST: _STOCK_STAFF,
    Permission.STOCK_DISPOSE: _STOCK_STAFF | {Role.NURSE},
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
}

# Roles that are not confined to their organisation's locations.
GLOBAL_ROLES = frozenset({Role.ADMIN, Role.AUDITOR, Role.REGULATOR})


@dataclass(frozen=True)
class Principal:
    """The signed-in user of one request. `location_ids` None means every location."""

    user_id: int
    username: str
    roles: frozenset[Role]
    organisation_id: int | None
    location_ids: frozenset[int] | None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Permissions lent for one use case a service has already authorised (e.g. a nurse
    # receiving a transfer writes TRANSFER_IN); location scope still applies.
    grants: frozenset[Permission] = frozenset()

    def can(self, permission: Permission) -> bool:
        return permission in self.grants or bool(self.roles & ROLE_PERMISSIONS[permission])

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
            roles = ", ".join(sorted(self.roles)) or "no role"
            raise Forbidden(f"{roles} may not {permission.value.lower().replace('_', ' ')}")
        if location_id is not None and not self.sees_location(location_id):
            raise Forbidden(
                f"location {location_id} is outside {self.username}'s scope", field="location"
            )

    @property
    def primary_role(self) -> str:
        return ",".join(sorted(self.roles))


def require_principal(principal: Principal | None) -> Principal:
    if principal is None:
        raise Unauthenticated("sign in first: send 'Authorization: Bearer <access token>'")
    return principal


# --- passwords -------------------------------------------------------------------------------

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("timing-equaliser")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant work whether or not the user exists, so usernames cannot be probed by timing."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


class PasswordPool:
    """argon2 off the event loop: a few threads (argon2-cffi releases the GIL) and a bounded
    queue, so a sign-in flood neither stalls everyone's queries nor piles up without end.

    `verify` refuses at once (RateLimited, "temporarily_unavailable") when `workers + queue`
    verifications are already in flight; `hash` (admins setting passwords) waits its turn."""

    def __init__(self, workers: int = 2, queue: int = 8) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="argon2"
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
ISSUER = "apotheca"


@dataclass(frozen=True)
class TokenService:
    secret_key: str
    access_ttl: timedelta
    refresh_ttl: timedelta

    @property
    def _key(self) -> OctKey:
        return OctKey.import_key(self.secret_key.encode())

    def issue_access_token(self, user_id: int, roles: frozenset[Role]) -> str:
        now = datetime.now(UTC)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": str(user_id),
            "roles": sorted(roles),
            "iat": int(now.timestamp()),
            "exp": int((now + self.access_ttl).timestamp()),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode({"alg": ACCESS_TOKEN_ALGORITHM}, claims, self._key)

    def decode_access_token(self, token: str) -> int:
        """Return the user id of a valid, unexpired access token, else raise Unauthenticated."""
        try:
            decoded = jwt.decode(token, self._key, algorithms=[ACCESS_TOKEN_ALGORITHM])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": ISSUER}, sub={"essential": True}
            ).validate(decoded.claims)
            return int(decoded.claims["sub"])
        except (JoseError, ValueError, KeyError) as exc:
            reason = exc.__class__.__name__
            raise Unauthenticated(f"invalid or expired access token ({reason})") from None

    @staticmethod
    def new_refresh_token() -> tuple[str, str]:
        """An opaque token for the client and the hash we store (never the token itself)."""
        token = secrets.token_urlsafe(32)
        return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
