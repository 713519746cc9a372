"""Starlette app factory: /graphql, /auth/*, /healthz, /metrics and the built PWA at /."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from cross_web import HTTPException
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET

from server.config import Settings
from server.controlled.api import export_routes as controlled_exports
from server.core.cost import CostBudget
from server.core.errors import DomainError, ErrorCode, RateLimited, RequestCode, Unauthenticated
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
from server.core.ratelimit import (
    RateLimitMiddleware,
    SubjectCache,
    client_ip,
    graphql_refusal,
)
from server.core.security import CLIENT_SUBJECT_PREFIX, Principal
from server.core.sessions import CLOSE_TOO_MANY, SessionRefused, SessionRegistry
from server.core.static import PwaFiles
from server.fhir.api import fhir_routes
from server.fhir.api import rate_limited_outcome as fhir_rate_limited
from server.fhir.api import too_large as fhir_too_large
from server.finance.api.http import finance_routes
from server.network.oauth import OAuthEndpoints, presented_client_id, presents_client
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
        self.sessions = SessionRegistry(
            services.bus,
            max_connections=services.settings.max_connections_per_principal,
            max_subscriptions=services.settings.max_subscriptions_per_principal,
        )
        settings = services.settings
        self.cost_budget = CostBudget(
            settings.cost_budget_capacity,
            settings.cost_refill_per_second,
            settings.rate_limit_storage,
        )

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
            cost_budget=self.cost_budget,
        )
        if http and hasattr(request, "state"):
            request.state.apotheca_context = context
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            try:
                if scheme.lower() != "bearer" or not token:
                    raise Unauthenticated("use 'Authorization: Bearer <access token>'")
                async with context.read() as session:
                    context.principal = await self.services.network.authenticate(
                        token.strip(),
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
        except HTTPException as error:
            return http_refusal(error)
        finally:
            state = getattr(request, "state", None)
            await finish_request(getattr(state, "apotheca_context", None))

    # --- HTTP-level refusals: 400 in the GraphQL error shape (see http_refusal) ---------------

    def decode_json(self, data: str | bytes) -> object:
        """Request bodies are UTF-8 JSON (RFC 8259); json.loads would also guess UTF-16/32 and
        let encoded surrogates through."""
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as error:
                raise HTTPRefusal(
                    400,
                    f"the request body is not valid UTF-8 ({error.reason})",
                    RequestCode.INVALID_ENCODING,
                ) from None
        return super().decode_json(data)

    def parse_json(self, data: str | bytes) -> Any:
        try:
            return super().parse_json(data)
        except HTTPException as error:
            if isinstance(error, HTTPRefusal):
                raise
            raise HTTPRefusal(
                400, "the request body is not valid JSON", RequestCode.INVALID_JSON
            ) from None

    async def parse_http_body(self, request: Any) -> Any:
        """One operation per request: a JSON object. Lists (batching), numbers, strings and
        null are refused by name instead of failing inside the parser."""
        try:
            return await super().parse_http_body(request)
        except (AttributeError, TypeError):
            raise HTTPRefusal(
                400,
                "the request body must be a JSON object with a `query`",
                RequestCode.BAD_REQUEST,
            ) from None

    async def on_ws_connect(self, context: Context) -> Any:
        """graphql-transport-ws: the token comes in connection_init's payload. The connection
        is registered (server.core.sessions): it ends when the token expires or the sign-in,
        user or client is revoked, and counts against its principal's cap (4429 over it)."""
        params = getattr(context, "connection_params", None) or {}
        token = str(params.get("token") or params.get("Authorization") or "")
        token = token.removeprefix("Bearer ").strip()
        try:
            context.principal = await self.reauthenticate(token)
        except DomainError as error:
            raise ConnectionRejectionError(
                {"code": error.code.value, "message": error.message}
            ) from None
        try:
            await self.services.ratelimits.check_principal(context.principal.subject, "websocket")
        except RateLimited as error:  # closed like a connection over the cap (4429)
            raise SessionRefused(
                CLOSE_TOO_MANY, f"rate limited; retry in {error.retry_after} s"
            ) from None
        if context.ws_session is not None:
            self.sessions.admit(context.ws_session, context.principal, token)
        context.auth_error = None
        return {"user": context.principal.username}

    async def reauthenticate(self, token: str) -> Principal:
        """A websocket's principal, checked afresh (at connection_init and every operation)."""
        return await self.services.network.authenticate(token, request_id=uuid.uuid4().hex)

    async def process_result(self, request: Any, result: Any) -> Any:
        """Errors raised before execution (syntax, token limit) get a code like all others."""
        data = await super().process_result(request, result)
        for error in data.get("errors") or []:
            if not isinstance(error, dict):  # each is a formatted error (a dict)
                continue
            extensions = error.setdefault("extensions", {})
            extensions.setdefault("code", request_error_code(error.get("message", "")))
        return data


class HTTPRefusal(HTTPException):
    """An HTTP-level refusal with its own stable code."""

    def __init__(self, status_code: int, reason: str, code: RequestCode) -> None:
        super().__init__(status_code, reason)
        self.code = code


_HTTP_CODES = {
    400: RequestCode.BAD_REQUEST,
    404: RequestCode.NOT_FOUND,
    405: RequestCode.METHOD_NOT_ALLOWED,
}


def http_refusal(error: HTTPException) -> JSONResponse:
    """A request refused before execution (bad JSON, encoding or shape, batching, a mutation
    over GET) answers in the GraphQL error shape with a code, like every other error."""
    code = getattr(error, "code", None) or _HTTP_CODES.get(
        error.status_code, RequestCode.BAD_REQUEST
    )
    body = {"errors": [{"message": error.reason, "extensions": {"code": code}}]}
    return JSONResponse(body, status_code=error.status_code)


class BodySizeLimit:
    """Refuse request bodies over the limit before anyone parses them, chunked or not.

    The 413 reads as the path's clients expect: `shapes` maps a path prefix to its refusal
    (/fhir: an OperationOutcome); elsewhere it is a GraphQL-shaped error."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        shapes: dict[str, Callable[[int], Response]] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.shapes = shapes or {}

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
        path = scope["path"]
        for prefix, shape in self.shapes.items():
            if path == prefix or path.startswith(prefix + "/"):
                await shape(self.max_bytes)(scope, receive, send)
                return
        error = {
            "message": f"request body over {self.max_bytes} bytes",
            "extensions": {"code": RequestCode.REQUEST_TOO_LARGE.value},
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


def _oauth_error(
    error: str, description: str, status: int = 400, retry_after: int | None = None
) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


def auth_routes(services: Services) -> list[Route]:
    oauth = OAuthEndpoints(services.clients)

    async def token(request: Request) -> Response:
        """RFC 6749 token endpoint: people's password and refresh_token grants here; every
        other grant (client_credentials, unsupported ones) through authlib."""
        form = await request.form()
        grant = str(form.get("grant_type", ""))
        try:
            if grant == "password":
                username = str(form.get("username", "")).strip().lower()
                password = str(form.get("password", ""))
                pair = await services.ratelimits.login.guard(  # server.core.ratelimit
                    username,
                    client_ip(request.scope),
                    lambda: services.network.password_grant(username, password),
                )
            elif grant == "refresh_token":
                presented = str(form.get("refresh_token", "")) or read_refresh_cookie(request)
                pair = await services.network.refresh_grant(presented)
            else:  # client_credentials (and what authlib refuses), throttled like passwords
                account = CLIENT_SUBJECT_PREFIX + presented_client_id(request, form)
                address = client_ip(request.scope)
                await services.ratelimits.login.check(account, address)
                response = await oauth.token(request)
                if response.status_code == 401:
                    await services.ratelimits.login.record_failure(account, address)
                elif response.status_code == 200:
                    await services.ratelimits.login.record_success(account, address)
                return response
        except RateLimited as error:
            return _oauth_error(error.oauth_error, error.message, 429, error.retry_after)
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
        """RFC 7009: always 200, whether or not the token existed. A client (authenticated)
        revokes its access tokens through authlib; a person's app its refresh token (a browser
        app's from its cookie, which signing out clears)."""
        form = await request.form()
        if presents_client(request, form):
            return await oauth.revoke(request)
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
        Route("/auth/introspect", oauth.introspect, methods=["POST"]),
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
                for topic in sorted({"stock", "alert"} | services.bus.topics())
            ),
            "# TYPE apotheca_subscription_groups gauge",
            f"apotheca_subscription_groups {graphql.fanout.groups}",
            "# TYPE apotheca_subscription_executions_total counter",
            f"apotheca_subscription_executions_total {graphql.fanout.executions}",
            "# TYPE apotheca_subscription_dropped_total counter",
            f"apotheca_subscription_dropped_total {graphql.fanout.dropped}",
            "# TYPE apotheca_rate_limited_total counter",
            *(
                f'apotheca_rate_limited_total{{kind="{kind}"}} {count}'
                for kind, count in sorted(services.ratelimits.refused.items())
            ),
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
        *fhir_routes(services),
        # GET from a browser: GraphiQL; other methods: 405 in the GraphQL error shape.
        Route("/graphql", GraphiQLGate(graphql, settings.pwa_dir)),
        WebSocketRoute("/graphql", graphql),
        *controlled_exports(services),
        *finance_routes(services),  # GET /reports/patient-usage.csv
    ]
    routes.append(_pwa_route(settings.pwa_dir))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await services.start()
        await graphql.sessions.start()
        # What is built by now (schema, mappers, compiled statements: ~250k objects) lives as
        # long as the process. Frozen out of the cycle collector's sight, it is no longer
        # walked by each full collection, which large requests (a feed of 1,000 movements
        # promotes thousands of objects) set off every few calls, at ~0.16 s CPU each.
        gc.collect()
        gc.freeze()
        expiry = asyncio.create_task(_expiry_checks(services))
        forecasts = asyncio.create_task(_forecast_refreshes(services))
        if settings.webhook_worker:
            await services.webhooks.start()  # the outbox's delivery worker (server.webhooks)
        try:
            yield
        finally:
            await graphql.sessions.stop()
            for task in (expiry, forecasts):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await graphql.cost_budget.close()
            await services.close()

    app = Starlette(
        routes=routes,
        middleware=[
            # The proxy headers first: the limits count the client's address. Then the limits,
            # so a refusal is answered before anything else runs (server.core.ratelimit).
            *_proxy_headers(settings),
            Middleware(
                RateLimitMiddleware,
                limits=services.ratelimits,
                principal_of=_principal_of(services),
                paths={"/graphql": graphql_refusal, "/fhir/*": fhir_rate_limited},
            ),
            Middleware(SecurityHeaders),
            Middleware(
                BodySizeLimit, max_bytes=settings.max_body_bytes, shapes={"/fhir": fhir_too_large}
            ),
        ],
        lifespan=lifespan,
    )
    app.state.services = services
    return app


def _proxy_headers(settings: Settings) -> list[Middleware]:
    """X-Forwarded-For/-Proto believed only from `trusted_proxies` (server.core.ratelimit)."""
    if not settings.trusted_proxies.strip():
        return []
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    return [Middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)]


def _principal_of(services: Services) -> Any:
    """The rate-limit key of a bearer token: its principal, or None if it is not valid
    (remembered per token until it expires: server.core.ratelimit.SubjectCache)."""

    def claims_of(token: str) -> dict[str, Any] | None:
        try:
            return services.tokens.decode_claims(token)
        except DomainError:
            return None

    return SubjectCache(claims_of)


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
            overdue = await services.shipments.check_overdue_shipments()
            log.info("overdue shipments: %s (%s new alerts)", overdue.overdue, overdue.raised)
            # Low-stock thresholds follow the computed reorder points (manual minimums win).
            levels = await services.replenishment.refresh_reorder_points()
            log.info("reorder points refreshed: %s", levels)
        except Exception:
            log.exception("expiry check failed; retrying at the next interval")
        await asyncio.sleep(services.settings.expiry_check_seconds)


async def _forecast_refreshes(services: Services) -> None:
    """Periodic forecast refresh inside the server (also `apotheca forecast-refresh`): only
    series whose consumption history changed are refitted, in a worker thread, so requests
    only ever read stored forecasts. APOTHECA_FORECAST_REFRESH_SECONDS=0 turns it off."""
    from server.forecasting.series import Granularity

    settings = services.settings
    if settings.forecast_refresh_seconds <= 0:
        return
    names = [n.strip().upper() for n in settings.forecast_granularities.split(",") if n.strip()]
    granularities = [Granularity(n) for n in names]
    while True:
        try:
            for r in await services.forecasting.refresh(granularities, jobs=settings.forecast_jobs):
                log.info(
                    "%s forecasts: %s series, %s refitted, %s removed in %.1f s",
                    r.granularity.value.lower(),
                    r.series_total,
                    r.refitted,
                    r.removed,
                    r.seconds,
                )
        except Exception:
            log.exception("forecast refresh failed; retrying at the next interval")
        await asyncio.sleep(settings.forecast_refresh_seconds)


def _pwa_route(pwa_dir: Path) -> Any:
    if (pwa_dir / "index.html").exists():
        return Mount("/", PwaFiles(directory=pwa_dir, html=True), name="pwa")

    async def placeholder(_: Request) -> Response:
        return HTMLResponse(
            "<!doctype html><title>Apotheca</title><h1>Apotheca</h1>"
            "<p>The app has not been built yet. GraphiQL is at <a href=/graphql>/graphql</a>.</p>"
        )

    return Route("/", placeholder)
