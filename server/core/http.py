"""HTTP hygiene every response shares: security headers and a request id.

The Content-Security-Policy allows what the PWA and our own GraphiQL page need and nothing
else: scripts, styles, workers and fonts from our origin only; WebAssembly compilation for the
zxing barcode reader ('wasm-unsafe-eval', not 'unsafe-eval'); fetch and the graphql-ws
websocket back to this host; the camera stream (mediastream:/blob:) for scanning; no framing
by anyone (frame-ancestors 'none' and X-Frame-Options DENY for older browsers).
"""

from __future__ import annotations

import hmac
import re

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.core.logs import request_id

_HOST = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


def content_security_policy(host: str | None) -> str:
    """The policy for a response to `host` (the websocket must connect back to it)."""
    sockets = f" ws://{host} wss://{host}" if host and _HOST.fullmatch(host) else ""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self' 'wasm-unsafe-eval'",
            "style-src 'self'",
            "img-src 'self' data: blob:",
            "font-src 'self' data:",
            f"connect-src 'self'{sockets}",
            "worker-src 'self' blob:",
            "media-src 'self' blob: mediastream:",
            "manifest-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


STATIC_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
}


class SecurityHeaders:
    """Adds the security headers to every HTTP response, and an X-Request-ID to every request
    and response: the caller's when it is a sane token, else a fresh one, so the log lines and
    audit events of one request share it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = MutableHeaders(scope=scope)
        rid = request_id(headers.get("x-request-id"))
        headers["x-request-id"] = rid
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        policy = content_security_policy(headers.get("host"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out.setdefault("Content-Security-Policy", policy)
                for name, value in STATIC_HEADERS.items():
                    out.setdefault(name, value)
                out["X-Request-ID"] = rid
            await send(message)

        await self.app(scope, receive, send_with_headers)


def metrics_refusal(request: Request, token: str) -> Response | None:
    """Why /metrics will not answer this request, or None when it may.

    No token configured: /metrics does not exist (404), so an exporter left unconfigured
    exposes nothing. Configured: only `Authorization: Bearer <token>` gets the figures."""
    if not token:
        return PlainTextResponse("Not Found", status_code=404)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return None
    return PlainTextResponse(
        "metrics token required", status_code=401, headers={"WWW-Authenticate": "Bearer"}
    )


# --- the PWA's refresh token in a cookie ------------------------------------------------------
# A browser app asks for cookie delivery with the REFRESH_COOKIE_HEADER: the refresh token then
# travels only in an httpOnly, Secure, SameSite=Strict cookie scoped to /auth, never in the
# JSON where scripts could read it. The header is also required to *use* the cookie: a
# cross-site form cannot set it, so no other site can spend the cookie (defence beside
# SameSite). Third-party clients send no header and get refresh_token in the JSON (RFC 6749).

REFRESH_COOKIE = "apotheca_refresh"
REFRESH_COOKIE_PATH = "/auth"
REFRESH_COOKIE_HEADER = "x-apotheca-refresh-cookie"


def wants_refresh_cookie(request: Request) -> bool:
    return request.headers.get(REFRESH_COOKIE_HEADER) == "1"


def read_refresh_cookie(request: Request) -> str:
    """The refresh token from the cookie, only for a request that asked for cookie delivery."""
    return request.cookies.get(REFRESH_COOKIE, "") if wants_refresh_cookie(request) else ""


def set_refresh_cookie(response: Response, token: str, max_age_seconds: int) -> None:
    response.set_cookie(
        REFRESH_COOKIE,
        token,
        max_age=max_age_seconds,
        path=REFRESH_COOKIE_PATH,
        secure=True,
        httponly=True,
        samesite="strict",
    )


def clear_refresh_cookie(response: Response) -> None:
    response.delete_cookie(
        REFRESH_COOKIE, path=REFRESH_COOKIE_PATH, secure=True, httponly=True, samesite="strict"
    )
