"""Logging: one line per event, JSON by default, tracebacks only for real faults.

An expected refusal (a DomainError: FORBIDDEN, NOT_FOUND, bad input, conflicts, limits) or a
GraphQL validation error is one short line naming the request id, the principal, the
operation and the code; only an unexpected exception carries a `traceback` field. Strawberry
would otherwise log every error with its traceback (`StrawberryLogger`), so `LoggedSchema`
replaces `process_errors`, which sees each error before ApiErrors masks it.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import strawberry
from graphql.error import GraphQLError
from strawberry.relay.types import GlobalIDValueError
from strawberry.types import ExecutionContext

from server.core.errors import DomainError, ErrorCode
from server.core.graphql import request_error_code

log = logging.getLogger("apotheca.graphql")

LOG_FORMATS = ("json", "plain")
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id(value: str | None) -> str:
    """The caller's X-Request-ID when it is a sane token, else a fresh one (logs stay parsable)."""
    return value if value and _REQUEST_ID.fullmatch(value) else uuid.uuid4().hex


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: `extra={"fields": {...}}`, or uvicorn's access args."""
    fields = dict(getattr(record, "fields", None) or {})
    if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
        fields.update(zip(_ACCESS_FIELDS, record.args, strict=True))
    return fields


class JsonFormatter(logging.Formatter):
    """A record as one JSON object on one line; exc_info becomes the `traceback` field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class PlainFormatter(logging.Formatter):
    """For people at a terminal: the message, then the fields as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if record.name == "uvicorn.access":
            return line
        return " ".join([line, *(f"{k}={v}" for k, v in fields.items() if v is not None)])


def log_config(level: str = "info", fmt: str = "json") -> dict[str, Any]:
    """A logging.dictConfig for uvicorn (and our loggers): every line in the chosen format."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    formatter = f"server.core.logs.{'JsonFormatter' if fmt == 'json' else 'PlainFormatter'}"
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": level},
    }


def principal_label(principal: Any) -> str | None:
    """Who asked: `client:<id>` for an OAuth2 client, else `user:<id>:<username>`."""
    if principal is None:
        return None
    client_id = getattr(principal, "client_id", None)
    if client_id:
        return f"client:{client_id}"
    return f"user:{principal.user_id}:{principal.username}"


def _request_fields(execution_context: ExecutionContext | None) -> dict[str, Any]:
    context = getattr(execution_context, "context", None)
    principal = getattr(context, "principal", None)
    request = getattr(context, "request", None)
    headers = getattr(request, "headers", None)
    rid = getattr(principal, "request_id", None) or (
        headers.get("x-request-id") if headers is not None else None
    )
    return {
        "request_id": rid,
        "principal": principal_label(principal),
        "operation": getattr(execution_context, "operation_name", None),
    }


def log_graphql_error(error: GraphQLError, execution_context: ExecutionContext | None) -> None:
    """One line per error: INFO for expected refusals, ERROR with the traceback for faults."""
    fields = _request_fields(execution_context)
    fields["path"] = ".".join(str(p) for p in error.path) if error.path else None
    original = error.original_error
    if isinstance(original, DomainError):
        fields.update(code=original.code.value, field=original.field)
        log.info(original.message, extra={"fields": fields})
    elif isinstance(original, GlobalIDValueError):
        fields["code"] = ErrorCode.INVALID_ID.value
        log.info(error.message, extra={"fields": fields})
    elif original is None or isinstance(original, GraphQLError):
        # Syntax, validation and limits: the code ApiErrors / process_result will give it.
        fields["code"] = (error.extensions or {}).get("code") or request_error_code(error.message)
        log.info(error.message, extra={"fields": fields})
    else:
        fields["code"] = "INTERNAL_SERVER_ERROR"
        log.error(
            "unexpected %s: %s",
            type(original).__name__,
            original,
            exc_info=original,
            extra={"fields": fields},
        )


class LoggedSchema(strawberry.Schema):
    """strawberry.Schema whose errors are logged by `log_graphql_error`, not StrawberryLogger."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            log_graphql_error(error, execution_context)
