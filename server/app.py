"""Starlette app factory: /graphql, /auth/*, /healthz, /metrics and the built PWA at /."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
)
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET

from server.config import Settings
from server.core.errors import DomainError, ErrorCode, Unauthenticated
from server.core.fanout import FanoutHub, SharedTransportWSHandler
from server.core.graphql import Context, finish_request, request_error_code
from server.core.http import (
    SecurityHeaders,
    clear_refresh_cookie,
    metrics_refusal,
    read_refresh_cookie,
    set_refresh_cookie,
    wants_refresh_cookie,
)
from server.core.security import Principal
from server.schema import build_schema
from server.services import Services

log = logging.getLogger("apotheca")


class ApothecaGraphQL(GraphQL[Context, None]):
    """Builds each request's context: the principal from the bearer token, fresh loaders.

    Websocket subscriptions are shared: subscribers of the same document, variables and scope
    class get one execution per event (server.core.fanout)."""

    graphql_transport_ws_handler_class = SharedTransportWSHandler

    def __init__(self, services: Services, **kwargs: Any) -> None:
        super().__init__(build_schema(services.settings), **kwargs)
        self.services = services
        self.fanout = FanoutHub(self.encode_json, queue_size=services.bus.queue_size)

    def shared_context(self, principal: Principal) -> Context:
        """The context a group of subscribers executes with (one of them opened it)."""
        return Context(services=self.services, principal=principal)

    async def get_context(self, request: Any, response: Any) -> Context:
        """An HTTP request's context holds one read session for the whole request (the
        principal is read in it too), closed by `run`; a websocket's reads as it goes."""
        http = getattr(request, "scope", {}).get("type", "http") == "http"
        context = Context(
            services=self.services,
            principal=None,
            request=request,
            response=response,
            shared_session=http,
        )
        if http and hasattr(request, "state"):
            request.state.apotheca_context = context
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            try:
                if scheme.lower() != "bearer" or not token:
                    raise Unauthenticated("use 'Authorization: Bearer <access token>'")
                user_id = self.services.tokens.decode_access_token(token.strip())
                async with context.read() as session:
                    context.principal = await self.services.network.load_principal(
                        user_id,
                        request_id=request.headers.get("x-request-id") or uuid.uuid4().hex,
                        session=session,
                    )
            except DomainError as error:
                context.auth_error = error
        return context

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        """Serve one request; whatever happens, its shared read session ends with it."""
        try:
            return await super().run(request, context, root_value)
        finally:
            state = getattr(request, "state", None)
            await finish_request(getattr(state, "apotheca_context", None))

    async def on_ws_connect(self, context: Context) -> Any:
        """graphql-transport-ws: the token comes in connection_init's payload."""
        params = getattr(context, "connection_params", None) or {}
        token = str(params.get("token") or params.get("Authorization") or "")
        token = token.removeprefix("Bearer ").strip()
        try:
            user_id = self.services.tokens.decode_access_token(token)
            context.principal = await self.services.network.load_principal(user_id)
        except DomainError as error:
            raise ConnectionRejectionError(
                {"code": error.code.value, "message": error.message}
            ) from None
        context.auth_error = None
        return {"user": context.principal.username}

    async def process_result(self, request: Any, result: Any) -> Any:
        """Errors raised before execution (syntax, token limit) get a code like all others."""
        data = await super().process_result(request, result)
        for error in data.get("errors") or []:
            extensions = error.setdefault("extensions", {})
            extensions.setdefault("code", request_error_code(error.get("message", "")))
        return data


class BodySizeLimit:
    """Refuse request bodies over the limit before anyone parses them, chunked or not."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        # Read the body here (bounded), then hand it on: a chunked body cannot slip past.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = {
            "message": f"request body over {self.max_bytes} bytes",
            "extensions": {"code": "REQUEST_TOO_LARGE"},
        }
        await JSONResponse({"errors": [error]}, status_code=413)(scope, receive, send)


class GraphiQLGate:
    """GET /graphql from a browser (Accept: text/html, no query) gets our GraphiQL page, built
    into pwa/dist/graphiql from npm (same origin, no CDN); everything else goes to GraphQL.

    The page is a static shell: it runs no query before it holds an access token, got through
    the refresh cookie (scoped to /auth, so it cannot reach /graphql itself) or a sign-in."""

    def __init__(self, graphql: ASGIApp, pwa_dir: Path) -> None:
        self.graphql = graphql
        self.page = pwa_dir / "graphiql" / "index.html"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        if (
            request.method == "GET"
            and "text/html" in request.headers.get("accept", "")
            and "query" not in request.query_params
        ):
            if self.page.exists():
                response: Response = FileResponse(self.page, headers={"Cache-Control": "no-cache"})
            else:
                response = HTMLResponse(
                    "<!doctype html><title>GraphiQL</title><p>GraphiQL is not built: run "
                    "<code>make pwa-build</code>.</p>",
                    status_code=404,
                )
            await response(scope, receive, send)
            return
        await self.graphql(scope, receive, send)


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


def auth_routes(services: Services) -> list[Route]:
    async def token(request: Request) -> Response:
        """RFC 6749 token endpoint: password and refresh_token grants (form-encoded)."""
        form = await request.form()
        grant = str(form.get("grant_type", ""))
        try:
            if grant == "password":
                pair = await services.network.password_grant(
                    str(form.get("username", "")).strip().lower(), str(form.get("password", ""))
                )
            elif grant == "refresh_token":
                presented = str(form.get("refresh_token", "")) or read_refresh_cookie(request)
                pair = await services.network.refresh_grant(presented)
            else:
                return _oauth_error(
                    "unsupported_grant_type", "grant_type must be password or refresh_token"
                )
        except DomainError as error:
            if error.code is ErrorCode.INVALID_CREDENTIALS:
                return _oauth_error("invalid_grant", error.message)
            return _oauth_error("invalid_request", error.message)
        body = {
            "access_token": pair.access_token,
            "token_type": "Bearer",
            "expires_in": pair.expires_in,
            "refresh_token": pair.refresh_token,
        }
        if not wants_refresh_cookie(request):
            return JSONResponse(body, headers={"Cache-Control": "no-store"})
        # A browser app: the refresh token goes into the httpOnly cookie only.
        del body["refresh_token"]
        response = JSONResponse(body, headers={"Cache-Control": "no-store"})
        set_refresh_cookie(
            response, pair.refresh_token, services.settings.refresh_token_days * 86400
        )
        return response

    async def revoke(request: Request) -> Response:
        """RFC 7009: always 200, whether or not the token existed; signs a browser app out."""
        form = await request.form()
        token = str(form.get("token", "")) or read_refresh_cookie(request)
        if token:
            await services.network.revoke(token)
        response = Response(status_code=200)
        if wants_refresh_cookie(request):
            clear_refresh_cookie(response)
        return response

    return [
        Route("/auth/token", token, methods=["POST"]),
        Route("/auth/revoke", revoke, methods=["POST"]),
    ]


def create_app(settings: Settings | None = None, services: Services | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    services = services or Services.build(settings)
    started = time.monotonic()
    sql_counts = _sql_counters(services) if os.environ.get("APOTHECA_SQL_COUNTERS") else None

    async def healthz(_: Request) -> Response:
        async with services.db.read() as session:
            await session.execute(text("SELECT 1"))
        return JSONResponse({"status": "ok", "database": services.db.dialect})

    async def metrics(request: Request) -> Response:
        if refusal := metrics_refusal(request, settings.metrics_token):
            return refusal
        lines = [
            "# TYPE apotheca_uptime_seconds gauge",
            f"apotheca_uptime_seconds {time.monotonic() - started:.0f}",
            "# TYPE apotheca_subscribers gauge",
            *(
                f'apotheca_subscribers{{topic="{topic}"}} {services.bus.subscriber_count(topic)}'
                for topic in ("stock", "alert")
            ),
            "# TYPE apotheca_subscription_groups gauge",
            f"apotheca_subscription_groups {graphql.fanout.groups}",
            "# TYPE apotheca_subscription_executions_total counter",
            f"apotheca_subscription_executions_total {graphql.fanout.executions}",
            "# TYPE apotheca_subscription_dropped_total counter",
            f"apotheca_subscription_dropped_total {graphql.fanout.dropped}",
        ]
        if sql_counts is not None:  # APOTHECA_SQL_COUNTERS=1 (benchmarks)
            for name, value in sql_counts.items():
                lines += [
                    f"# TYPE apotheca_sql_{name}_total counter",
                    f"apotheca_sql_{name}_total {value}",
                ]
        return PlainTextResponse("\n".join(lines) + "\n")

    graphql = ApothecaGraphQL(
        services,
        graphql_ide=None,  # our own GraphiQL page (GraphiQLGate), not Strawberry's CDN one
        subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
        max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
        connection_init_wait_timeout=timedelta(seconds=10),
    )
    routes: list[Any] = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        *auth_routes(services),
        Route("/graphql", GraphiQLGate(graphql, settings.pwa_dir), methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
    ]
    routes.append(_pwa_route(settings.pwa_dir))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await services.start()
        expiry = asyncio.create_task(_expiry_checks(services))
        try:
            yield
        finally:
            expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await expiry
            await services.close()

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes),
        ],
        lifespan=lifespan,
    )
    app.state.services = services
    return app


def _sql_counters(services: Services) -> dict[str, int]:
    """Count SQL statements and transactions (BEGIN) on every engine, for /metrics."""
    counts = {"statements": 0, "begins": 0}

    def statement(*_: Any) -> None:
        counts["statements"] += 1

    def begin(*_: Any) -> None:
        counts["begins"] += 1

    for engine in services.db.engines:
        event.listen(engine.sync_engine, "before_cursor_execute", statement)
        event.listen(engine.sync_engine, "begin", begin)
    return counts


async def _expiry_checks(services: Services) -> None:
    """Periodic checks inside the server: expiry alerts (also `apotheca check-expiry`) and
    overdue shipments."""
    while True:
        try:
            result = await services.alerts.check_expiry()
            log.info("expiry check: %s raised, %s resolved", result.raised, result.resolved)
            # Shipments outliving their transit window turn IN_TRANSIT into OUTFLOW_LEAK.
            await services.supervision_checks.check_all(in_transit_only=True)
            overdue = await services.procurement.check_overdue_shipments()
            log.info("overdue shipments: %s (%s new alerts)", overdue.overdue, overdue.raised)
        except Exception:
            log.exception("expiry check failed; retrying at the next interval")
        await asyncio.sleep(services.settings.expiry_check_seconds)


def _pwa_route(pwa_dir: Path) -> Any:
    if (pwa_dir / "index.html").exists():
        return Mount("/", StaticFiles(directory=pwa_dir, html=True), name="pwa")

    async def placeholder(_: Request) -> Response:
        return HTMLResponse(
            "<!doctype html><title>Apotheca</title><h1>Apotheca</h1>"
            "<p>The app has not been built yet. GraphiQL is at <a href=/graphql>/graphql</a>.</p>"
        )

    return Route("/", placeholder)
