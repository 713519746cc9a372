"""Expected failures as data: each carries a stable code clients can switch on."""

from __future__ import annotations

import math
from enum import StrEnum


class ErrorCode(StrEnum):
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    INVALID_INPUT = "INVALID_INPUT"
    INVALID_ID = "INVALID_ID"
    INSUFFICIENT_STOCK = "INSUFFICIENT_STOCK"
    EXPIRED_LOT = "EXPIRED_LOT"
    LOT_NOT_ISSUABLE = "LOT_NOT_ISSUABLE"
    DUPLICATE = "DUPLICATE"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    BARCODE_INVALID = "BARCODE_INVALID"
    UNKNOWN_PRODUCT = "UNKNOWN_PRODUCT"
    UNKNOWN_BATCH = "UNKNOWN_BATCH"
    EXPIRY_MISMATCH = "EXPIRY_MISMATCH"
    SERIAL_ALREADY_DECOMMISSIONED = "SERIAL_ALREADY_DECOMMISSIONED"
    COUNT_ALREADY_OPEN = "COUNT_ALREADY_OPEN"
    COUNT_CLOSED = "COUNT_CLOSED"
    INVALID_TRANSITION = "INVALID_TRANSITION"
    LOT_ALREADY_RECALLED = "LOT_ALREADY_RECALLED"
    ALREADY_RECEIVED = "ALREADY_RECEIVED"
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"
    TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"
    RATE_LIMITED = "RATE_LIMITED"
    WITNESS_REQUIRED = "WITNESS_REQUIRED"
    WITNESS_INVALID = "WITNESS_INVALID"
    WITNESS_SAME_USER = "WITNESS_SAME_USER"
    PATIENT_REFERENCE_REQUIRED = "PATIENT_REFERENCE_REQUIRED"


class RequestCode(StrEnum):
    """Codes of refusals of the request itself, answered instead of executing it (in
    `errors[].extensions.code`, never in a mutation payload): one list for clients to switch on."""

    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
    QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
    TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
    TOO_MANY_TOKENS = "TOO_MANY_TOKENS"
    QUERY_TOO_COSTLY = "QUERY_TOO_COSTLY"  # server.core.cost: over the per-request maximum
    THROTTLED = "THROTTLED"  # server.core.cost: the principal's budget cannot pay for it
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    INVALID_JSON = "INVALID_JSON"
    INVALID_ENCODING = "INVALID_ENCODING"
    BAD_REQUEST = "BAD_REQUEST"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"


class DomainError(Exception):
    """A refusal the user can act on; never a crash. `field` names the offending input."""

    code: ErrorCode = ErrorCode.INVALID_INPUT

    def __init__(self, message: str, *, field: str | None = None, code: ErrorCode | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class NotFound(DomainError):
    code = ErrorCode.NOT_FOUND


class Forbidden(DomainError):
    code = ErrorCode.FORBIDDEN


class Unauthenticated(DomainError):
    code = ErrorCode.UNAUTHENTICATED


class AccountDisabled(Unauthenticated):
    """The account exists but is disabled: UNAUTHENTICATED over HTTP; a websocket of it
    closes 4403 (forbidden) rather than 4401, since signing in again will not help."""


class InvalidInput(DomainError):
    code = ErrorCode.INVALID_INPUT


class InsufficientStock(DomainError):
    code = ErrorCode.INSUFFICIENT_STOCK


class ExpiredLot(DomainError):
    code = ErrorCode.EXPIRED_LOT


class Duplicate(DomainError):
    code = ErrorCode.DUPLICATE


class RateLimited(DomainError):
    """Too many requests or sign-in attempts: retry after `retry_after` seconds (HTTP 429).

    `oauth_error` is the error the token endpoint answers with."""

    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, *, retry_after: float, oauth_error: str = "slow_down"):
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))
        self.oauth_error = oauth_error
