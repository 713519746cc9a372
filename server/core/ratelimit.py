"""Request rate limits and sign-in flood protection, kept in `limits` storage (limits.aio).

Storage: "memory://" (the default) counts inside one process, right for SQLite and one worker;
"redis://host:6379" (redis-py's asyncio client, `implementation="redispy"`) shares the counters
between every worker and host. Every key starts with `rate_limit_prefix`. If the shared storage
fails, requests are let through and the failure is logged: the limits protect the service, they
must not take it down.

Who the client is: the ASGI peer address (`scope["client"]`). X-Forwarded-For counts only when
the peer is one of `trusted_proxies` (IPs or CIDRs): create_app then installs uvicorn's
ProxyHeadersMiddleware, which takes the rightmost address not itself a trusted proxy. Without
that setting a client cannot pick its own IP by sending the header.

/graphql and /fhir are limited per IP and per principal (the `sub` of a valid bearer token),
in the same buckets (a /fhir refusal reads as an OperationOutcome), HTTP requests and websocket
connection attempts in separate buckets of the same size; a websocket counts
per principal at connection_init, where its token arrives. Defaults are 600/minute per
principal and 1200/minute per IP (a hospital's tablets often share one NAT address). Over the
limit: HTTP 429, Retry-After and a GraphQL-shaped body with extensions.code RATE_LIMITED; a
websocket handshake gets the same 429, a connection_init over its principal's limit is closed
with 4429. Refusals are held back up to `rate_limit_refusal_delay_seconds` (`RefusalHold`, the
same as for sign-in): a flood that ignores Retry-After is slowed to a few refusals a second per
connection, where each answered at once still costs the server a request's parsing.

Counting is a fixed window per key. On "memory://" the request counters are plain in-process
dictionaries (`LocalWindows`): a refusal costs a dict lookup, no await and no `limits` call.
`RateLimitMiddleware` is the outermost of our middleware, so a refused request is answered
with pre-built bytes before security headers are computed, before its body is read or parsed
and before routing; its bearer token's subject is cached (`SubjectCache`) instead of verifying
the JWT on every refused request. Refusals are not logged, only counted (`refused`, shown at
/metrics). Shared storage counts with `limits`' FixedWindowRateLimiter (one INCR per hit).

Sign-in (`LoginThrottle`) counts failed password grants per (account, IP), per IP and per
account. Reaching a threshold locks that key for `login_lock_seconds`, doubling with every
further failure up to `login_lock_max_seconds`; a locked key answers 429 before any password is
checked, held back up to `login_refusal_delay_seconds` (or half the lock left) so that a
client ignoring Retry-After cannot spin on refusals. Every attempt counts as a failure before
its password is hashed (a success takes it back), so concurrent guesses cannot all pass the
check at once. The per-(account, IP) key is the tight one (5 per 15 minutes): an attacker
flooding an account from one address locks only that pair, so the owner still signs in from
her own device. The per-account key is a much higher ceiling (100 per 15 minutes) against
attacks spread over many addresses — the one case that also stops the owner — and the per-IP
key (50 per 15 minutes) stops one address spraying many accounts. A success clears its
(account, IP) pair only, so the owner signing in does not hand an attacker elsewhere a fresh
allowance.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from limits import RateLimitItem, parse
from limits._storage_scheme import SCHEMES  # the registry storage_from_string consults
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from server.config import Settings
from server.core.errors import DomainError, ErrorCode, RateLimited

log = logging.getLogger("apotheca.ratelimit")

T = TypeVar("T")
MAX_KEY_PART = 200


def storage_uri(uri: str) -> str:
    """The async form of a storage URI ("memory://" → "async+memory://"), checked."""
    async_uri = uri if uri.startswith("async+") else f"async+{uri}"
    if urllib.parse.urlparse(async_uri).scheme not in SCHEMES:
        raise ValueError(f"rate_limit_storage: {uri!r} is not a storage `limits` knows")
    return async_uri


def open_storage(uri: str) -> Storage:
    """The async `limits` storage for a URI. Call it inside the running loop: the memory storage
    starts its expiry task where it is made."""
    uri = storage_uri(uri)
    options: dict[str, Any] = {}
    if urllib.parse.urlparse(uri).scheme.startswith("async+redis"):
        options["implementation"] = "redispy"  # redis-py (pinned), not coredis
    storage = storage_from_string(uri, wrap_exceptions=True, **options)
    assert isinstance(storage, Storage), f"{uri} is not an async storage"
    return storage


def parse_limit(value: str, name: str) -> RateLimitItem | None:
    """A `limits` string such as "300/minute"; "off" (or empty) is no limit."""
    if value.strip().lower() in ("", "off", "none"):
        return None
    try:
        return parse(value)
    except ValueError as error:
        raise ValueError(f"{name}: {value!r} is not a rate limit like '300/minute'") from error


def client_ip(scope: Scope) -> str:
    """The client's address: the peer, already rewritten from X-Forwarded-For by uvicorn's
    ProxyHeadersMiddleware when (and only when) the peer is a trusted proxy."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _part(value: str) -> str:
    return value[:MAX_KEY_PART]


class LocalWindows:
    """Fixed-window counters of one process: a window opens at a key's first hit and lasts the
    limit's period. Ended windows are swept out once the table outgrows `sweep_at` keys."""

    def __init__(self, sweep_at: int = 10_000) -> None:
        self._windows: dict[tuple[str, str], list[float]] = {}  # key -> [ends at, hits]
        self.sweep_at = sweep_at

    def hit(self, item: RateLimitItem, kind: str, who: str) -> float | None:
        """Count one hit: None while within the limit, else the seconds until it resets."""
        now = time.monotonic()
        key = (kind, who)
        window = self._windows.get(key)
        if window is None or window[0] <= now:
            if len(self._windows) >= self.sweep_at:
                self._sweep(now)
            window = self._windows[key] = [now + item.get_expiry(), 0.0]
        window[1] += 1
        if window[1] <= item.amount:
            return None
        return window[0] - now

    def _sweep(self, now: float) -> None:
        self._windows = {k: w for k, w in self._windows.items() if w[0] > now}
        self.sweep_at = max(self.sweep_at, 2 * len(self._windows))


class RefusalHold:
    """Answers a refusal late: at most `delay` seconds, and at most half of the `wait` its
    Retry-After announces, so the wait is never spent holding. A client that ignores
    Retry-After and retries at once then sends a few requests a second per connection instead
    of thousands, costing neither our CPU nor the machine's. A held refusal costs only an open
    connection; past `max_held` of them at once, refusals answer at once."""

    def __init__(self, delay: float, max_held: int = 256) -> None:
        self.delay = max(0.0, delay)
        self.max_held = max_held
        self.held = 0

    async def __call__(self, wait: float) -> None:
        delay = min(self.delay, wait / 2)
        if delay <= 0 or self.held >= self.max_held:
            return
        self.held += 1
        try:
            await asyncio.sleep(delay)
        finally:
            self.held -= 1


class RateLimits:
    """The per-IP and per-principal request limits and the sign-in throttle of one process."""

    def __init__(self, settings: Settings) -> None:
        self.uri = storage_uri(settings.rate_limit_storage)
        self.prefix = settings.rate_limit_prefix
        self.per_principal = parse_limit(settings.rate_limit_principal, "rate_limit_principal")
        self.per_ip = parse_limit(settings.rate_limit_ip, "rate_limit_ip")
        self.login = LoginThrottle(self, settings)
        self.hold = RefusalHold(settings.rate_limit_refusal_delay_seconds)
        # memory:// counts requests in this process's own dictionaries (no await per request)
        self.local = LocalWindows() if self.uri.startswith("async+memory://") else None
        self.refused: Counter[str] = Counter()  # refusals by kind ("http/ip"...), for /metrics
        self._storage: Storage | None = None
        self._window: FixedWindowRateLimiter | None = None

    @property
    def storage(self) -> Storage:
        """Opened at first use, inside the serving loop."""
        if self._storage is None:
            self._storage = open_storage(self.uri)
        return self._storage

    @property
    def window(self) -> FixedWindowRateLimiter:
        if self._window is None:
            self._window = FixedWindowRateLimiter(self.storage)
        return self._window

    async def check_ip(self, ip: str, kind: str = "http") -> None:
        """`kind` "http" or "websocket": requests and connection attempts count separately."""
        await self._hit(self.per_ip, f"{kind}/ip", ip)

    async def check_principal(self, principal: str, kind: str = "http") -> None:
        await self._hit(self.per_principal, f"{kind}/principal", principal)

    def hit_local(self, item: RateLimitItem | None, kind: str, who: str) -> None:
        """The in-process count of `_hit` (memory storage only): no await, no allocation
        beyond a new window."""
        assert self.local is not None
        if item is None:
            return
        wait = self.local.hit(item, kind, who)
        if wait is not None:
            self.refused[kind] += 1
            raise RateLimited(
                f"rate limit of {item} per {kind.replace('/', ' ')} exceeded", retry_after=wait
            )

    async def _hit(self, item: RateLimitItem | None, kind: str, who: str) -> None:
        if item is None:
            return
        if self.local is not None:
            self.hit_local(item, kind, _part(who))
            return
        key = (self.prefix, "rate", kind, _part(who))
        try:
            if await self.window.hit(item, *key):
                return
            stats = await self.window.get_window_stats(item, *key)
        except StorageError:
            log.warning("rate limit storage failed; letting the request through", exc_info=True)
            return
        self.refused[kind] += 1
        raise RateLimited(
            f"rate limit of {item} per {kind.replace('/', ' ')} exceeded",
            retry_after=stats.reset_time - time.time(),
        )


class LoginThrottle:
    """Growing lockouts after failed password grants (see the module docstring)."""

    def __init__(self, limits: RateLimits, settings: Settings) -> None:
        self.limits = limits
        self.prefix = settings.rate_limit_prefix
        self.base = max(1, settings.login_lock_seconds)
        self.cap = max(self.base, settings.login_lock_max_seconds)
        self.hold = RefusalHold(settings.login_refusal_delay_seconds)
        self.rules = {
            "account_ip": parse_limit(
                settings.login_failures_account_ip, "login_failures_account_ip"
            ),
            "ip": parse_limit(settings.login_failures_ip, "login_failures_ip"),
            "account": parse_limit(settings.login_failures_account, "login_failures_account"),
        }

    @property
    def storage(self) -> Storage:
        return self.limits.storage

    def _rules(self, username: str, ip: str) -> list[tuple[str, str, RateLimitItem]]:
        """(rule, storage key, limit) of every rule in force for this attempt."""
        who = {"account_ip": f"{_part(username)}|{ip}", "ip": ip, "account": _part(username)}
        return [
            (rule, f"{self.prefix}/login/{rule}/{who[rule]}", item)
            for rule, item in self.rules.items()
            if item is not None
        ]

    def _keys(self, username: str, ip: str) -> list[tuple[str, RateLimitItem]]:
        return [(key, item) for _, key, item in self._rules(username, ip)]

    async def guard(self, username: str, ip: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run a password `attempt` unless locked. It counts as a failure before it runs, so
        concurrent guesses cannot all slip past the check while the first ones are hashed;
        a success takes its count back (and clears its (account, IP) pair)."""
        await self.check(username, ip)
        await self.record_failure(username, ip)
        try:
            result = await attempt()
        except DomainError as error:
            if error.code is not ErrorCode.INVALID_CREDENTIALS:
                await self.record_success(username, ip, counted=True)
            raise
        except BaseException:
            await self.record_success(username, ip, counted=True)
            raise
        await self.record_success(username, ip, counted=True)
        return result

    async def check(self, username: str, ip: str) -> None:
        """Raise RateLimited while any of the attempt's keys is locked."""
        wait = 0.0
        try:
            for key, _ in self._keys(username, ip):
                if await self.storage.get(f"{key}/lock"):
                    wait = max(wait, await self.storage.get_expiry(f"{key}/lock") - time.time())
        except StorageError:
            log.warning("rate limit storage failed; not throttling sign-in", exc_info=True)
            return
        if wait > 0:
            await self.hold(wait)
            raise RateLimited(
                "too many failed sign-ins; wait before trying again", retry_after=wait
            )

    async def record_failure(self, username: str, ip: str) -> None:
        """Count the failure; at and past a threshold lock the key, twice as long each time."""
        try:
            for key, item in self._keys(username, ip):
                # The count outlives its window by the longest lock, so a lock's end does not
                # also wipe the count (which would hand out a fresh allowance).
                failures = await self.storage.incr(f"{key}/count", item.get_expiry() + self.cap)
                if failures >= item.amount:
                    delay = min(self.cap, self.base * 2 ** min(failures - item.amount, 30))
                    await self.storage.clear(f"{key}/lock")
                    await self.storage.incr(f"{key}/lock", delay)
        except StorageError:
            log.warning("rate limit storage failed; sign-in failure not counted", exc_info=True)

    async def record_success(self, username: str, ip: str, *, counted: bool = False) -> None:
        """The right password clears its (account, IP) pair; the wider counts run their course.
        `counted`: the attempt was counted as a failure beforehand (`guard`); that count is
        taken back, and so is a lock it alone set."""
        try:
            for rule, key, item in self._rules(username, ip):
                if rule == "account_ip":
                    await self.storage.clear(f"{key}/count")
                    await self.storage.clear(f"{key}/lock")
                elif counted:
                    left = await self.storage.incr(f"{key}/count", item.get_expiry() + self.cap, -1)
                    if left < item.amount:
                        await self.storage.clear(f"{key}/lock")
        except StorageError:
            log.warning("rate limit storage failed; sign-in success not recorded", exc_info=True)


def _refusal_body(error: RateLimited) -> dict[str, Any]:
    return {
        "errors": [
            {
                "message": f"{error.message}; retry in {error.retry_after} s",
                "extensions": {"code": error.code.value, "retryAfter": error.retry_after},
            }
        ]
    }


def graphql_rate_limited(error: RateLimited) -> JSONResponse:
    """429 with Retry-After and a GraphQL-shaped body."""
    return JSONResponse(
        _refusal_body(error),
        status_code=429,
        headers={"Retry-After": str(error.retry_after)},
    )


# How one path's refusals read: (message, retry_after) -> (body bytes, content type).
RefusalRender = Callable[[str, int], tuple[bytes, bytes]]


@functools.lru_cache(maxsize=256)
def graphql_refusal(message: str, retry_after: int) -> tuple[bytes, bytes]:
    """The GraphQL-shaped 429 body (extensions.code RATE_LIMITED), cached."""
    body = _refusal_body(RateLimited(message, retry_after=retry_after))
    return json.dumps(body, separators=(",", ":")).encode(), b"application/json"


@functools.lru_cache(maxsize=64)
def _refusal_headers(host: bytes, content_type: bytes) -> list[tuple[bytes, bytes]]:
    """The headers every HTTP refusal shares for one Host: content type and the security
    headers SecurityHeaders would add (the refusal is answered before it runs)."""
    from server.core.http import STATIC_HEADERS, content_security_policy  # imports cost, us

    policy = content_security_policy(host.decode("latin-1") or None)
    return [
        (b"content-type", content_type),
        (b"content-security-policy", policy.encode("latin-1")),
        *((name.lower().encode(), value.encode()) for name, value in STATIC_HEADERS.items()),
    ]


async def send_http_refusal(
    scope: Scope, send: Send, error: RateLimited, render: RefusalRender = graphql_refusal
) -> None:
    """The 429 as two ASGI messages from cached bytes; the request body is never read."""
    from server.core.logs import request_id  # (logs imports GraphQL, which imports us)

    host = b""
    given = None
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host = value
        elif name == b"x-request-id":
            given = value.decode("latin-1")
    body, content_type = render(error.message, error.retry_after)
    headers = [
        *_refusal_headers(host, content_type),
        (b"retry-after", str(error.retry_after).encode()),
        (b"x-request-id", request_id(given).encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class SubjectCache:
    """A bearer token's rate-limit subject, remembered until the token expires, so refusing a
    flood does not verify the same JWT again for every request. Only valid tokens are kept
    (an invalid one costs its verification each time: it counts per IP only)."""

    def __init__(self, decode: Callable[[str], dict[str, Any] | None], size: int = 4096) -> None:
        self.decode = decode
        self.size = size
        self._subjects: dict[str, tuple[str, float]] = {}  # token -> (sub, exp)

    def __call__(self, token: str) -> str | None:
        known = self._subjects.get(token)
        if known is not None and known[1] > time.time():
            return known[0]
        claims = self.decode(token)
        if claims is None:
            return None
        if len(self._subjects) >= self.size:
            self._subjects.clear()  # cheap and bounded; the next hits refill it
        subject = str(claims["sub"])
        self._subjects[token] = (subject, float(claims["exp"]))
        return subject


class RateLimitMiddleware:
    """Per-IP and per-principal limits on some paths (/graphql, /fhir), for HTTP and websocket
    scopes; every path counts in the same buckets, so a client's GraphQL and FHIR requests
    share its allowance.

    `paths` maps a path to how its refusals read; a path ending in "/*" covers itself and all
    under it. `principal_of(token)` names a bearer token's principal, or None when it is not
    valid (the request then counts per IP only, and the app answers its auth error). Installed
    outermost: see the module docstring for what a refusal does not cost."""

    def __init__(
        self,
        app: ASGIApp,
        limits: RateLimits,
        principal_of: Callable[[str], str | None],
        paths: dict[str, RefusalRender] | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.principal_of = principal_of
        paths = paths if paths is not None else {"/graphql": graphql_refusal}
        self.exact = {p: r for p, r in paths.items() if not p.endswith("/*")}
        self.prefixes = [(p[:-2], r) for p, r in paths.items() if p.endswith("/*")]

    def render_for(self, path: str) -> RefusalRender | None:
        """How a refusal on `path` reads, or None when the limits do not cover it."""
        render = self.exact.get(path)
        if render is not None:
            return render
        for prefix, render in self.prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                return render
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        render = self.render_for(scope["path"]) if kind in ("http", "websocket") else None
        if render is None:
            await self.app(scope, receive, send)
            return
        limits = self.limits
        try:
            if limits.local is not None:  # memory storage: no await at all
                limits.hit_local(limits.per_ip, f"{kind}/ip", client_ip(scope))
                wanted = kind == "http" and limits.per_principal is not None
                if wanted and (principal := self._principal(scope)):
                    limits.hit_local(limits.per_principal, "http/principal", _part(principal))
            else:
                await limits.check_ip(client_ip(scope), kind)
                if kind == "http" and (principal := self._principal(scope)):
                    await limits.check_principal(principal)
        except RateLimited as error:
            await limits.hold(error.retry_after)
            if kind == "http":
                await send_http_refusal(scope, send, error, render)
                return
            websocket = WebSocket(scope, receive, send)
            if "websocket.http.response" in scope.get("extensions", {}):
                await websocket.send_denial_response(graphql_rate_limited(error))
            else:
                await websocket.close(code=4429, reason="rate limited")
            return
        await self.app(scope, receive, send)

    def _principal(self, scope: Scope) -> str | None:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and token.strip():
                    return self.principal_of(token.strip())
        return None
