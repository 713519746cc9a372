"""OAuth2 for machine clients with authlib, adapted to Starlette: the token endpoint's
client_credentials grant (RFC 6749 §4.4; client_secret_basic or client_secret_post), RFC 7662
introspection and RFC 7009 revocation. authlib parses the requests, authenticates the client,
checks grant, scope and token parameters and words every error; this module only plugs in our
storage (server.network.clients) and the JWTs of `TokenService`.

authlib's server is synchronous and our storage is async, so each request runs authlib in a
worker thread (anyio.to_thread) whose storage hooks hop back onto the event loop
(anyio.from_thread) for their database reads and writes.

authlib refuses client credentials sent over plain HTTP except to a loopback address
(insecure_transport); behind a TLS-terminating proxy, uvicorn's proxy headers make the scheme
https.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from authlib.oauth2 import rfc6749, rfc7009, rfc7662
from authlib.oauth2.rfc6749 import (
    InvalidScopeError,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
    scope_to_list,
)
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from server.core.security import CLIENT_SUBJECT_PREFIX, ISSUER, SCOPE_PERMISSIONS
from server.network.clients import (
    CLIENT_AUTH_METHODS,
    ClientCredentials,
    IssuedToken,
    OAuthClientService,
)


class FormPayload(OAuth2Payload):  # type: ignore[misc]
    """A form-encoded body as authlib reads it (repeated parameters kept in `datalist`)."""

    def __init__(self, form: FormData) -> None:
        self._data = {key: str(value) for key, value in form.items()}
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in form.multi_items():
            self._datalist[key].append(str(value))

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class StarletteOAuth2Request(OAuth2Request):  # type: ignore[misc]
    """A Starlette request with its form already read (authlib reads it synchronously)."""

    def __init__(self, request: Request, form: FormData) -> None:
        super().__init__(request.method, str(request.url), headers=request.headers)
        self.payload = FormPayload(form)
        self._args = dict(request.query_params)

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data  # type: ignore[no-any-return]

    @property
    def args(self) -> dict[str, str]:
        return self._args


class ClientCredentialsGrant(rfc6749.grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = list(CLIENT_AUTH_METHODS)

    def validate_requested_scope(self) -> None:
        """Known scopes (authlib's check), and none beyond what this client holds."""
        super().validate_requested_scope()
        requested = set(scope_to_list(self.request.payload.scope) or [])
        beyond = sorted(requested - self.request.client.scopes)
        if beyond:
            raise InvalidScopeError(f"this client does not hold {' '.join(beyond)}")


class _ClientTokens:
    """What introspection and revocation share: client authentication and token lookup."""

    CLIENT_AUTH_METHODS = list(CLIENT_AUTH_METHODS)
    server: AuthorizationServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> IssuedToken | None:
        return self.server.call(self.server.clients.issued_token, token_string)


class RevocationEndpoint(_ClientTokens, rfc7009.RevocationEndpoint):  # type: ignore[misc]
    def revoke_token(self, token: IssuedToken, request: OAuth2Request) -> None:
        self.server.call(self.server.clients.revoke_token, token)


class IntrospectionEndpoint(_ClientTokens, rfc7662.IntrospectionEndpoint):  # type: ignore[misc]
    def check_permission(
        self, token: IssuedToken, client: ClientCredentials, request: OAuth2Request
    ) -> bool:
        """A client introspects its own tokens; any other token is simply not active to it."""
        return bool(token.check_client(client))

    def introspect_token(self, token: IssuedToken) -> dict[str, Any]:
        return {
            "active": True,
            "client_id": token.client_id,
            "scope": token.scope,
            "token_type": "Bearer",
            "sub": CLIENT_SUBJECT_PREFIX + token.client_id,
            "iss": ISSUER,
            "jti": token.jti,
            "iat": int(token.issued_at.timestamp()),
            "exp": int(token.expires_at.timestamp()),
        }


class AuthorizationServer(rfc6749.AuthorizationServer):  # type: ignore[misc]
    """authlib's server with our storage; runs inside a worker thread (see `OAuthEndpoints`)."""

    def __init__(self, clients: OAuthClientService) -> None:
        super().__init__(scopes_supported=sorted(SCOPE_PERMISSIONS))
        self.clients = clients
        self.register_token_generator(ClientCredentialsGrant.GRANT_TYPE, self._bearer_token)
        self.register_grant(ClientCredentialsGrant)
        self.register_endpoint(RevocationEndpoint)
        self.register_endpoint(IntrospectionEndpoint)

    @staticmethod
    def call(function: Callable[..., Any], *args: Any) -> Any:
        """Run an async storage call on the event loop from authlib's thread."""
        return anyio.from_thread.run(function, *args)

    def query_client(self, client_id: str) -> ClientCredentials | None:
        return self.call(self.clients.credentials, client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.call(self.clients.record_token, request.client, token["access_token"])

    def _bearer_token(
        self,
        grant_type: str,
        client: ClientCredentials,
        user: Any = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = False,
    ) -> dict[str, Any]:
        granted = client.get_allowed_scope(scope)
        return {
            "token_type": "Bearer",
            "access_token": self.clients.issue_token(client, granted),
            "expires_in": int(self.clients.tokens.access_ttl.total_seconds()),
            "scope": granted,
        }

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request  # built (with its form read) before authlib's thread starts

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No signals: revocation's consequences happen in the storage calls."""


class OAuthEndpoints:
    """The Starlette handlers: POST /auth/token (client_credentials and every grant that is not
    a person's), /auth/introspect, and /auth/revoke when the caller authenticates as a client."""

    def __init__(self, clients: OAuthClientService) -> None:
        self.server = AuthorizationServer(clients)

    async def token(self, request: Request) -> Response:
        return await self._respond(request, self.server.create_token_response)

    async def introspect(self, request: Request) -> Response:
        return await self._respond(
            request, lambda r: self.server.create_endpoint_response("introspection", r)
        )

    async def revoke(self, request: Request) -> Response:
        return await self._respond(
            request, lambda r: self.server.create_endpoint_response("revocation", r)
        )

    async def _respond(
        self, request: Request, respond: Callable[[OAuth2Request], tuple[int, Any, list[Any]]]
    ) -> Response:
        form = await request.form()
        try:
            oauth_request = StarletteOAuth2Request(request, form)
        except OAuth2Error as error:  # insecure_transport
            status, body, headers = self.server.handle_error_response(None, error)
        else:
            status, body, headers = await anyio.to_thread.run_sync(respond, oauth_request)
        return Response(json.dumps(body), status_code=status, headers=dict(headers))


def presented_client_id(request: Request, form: FormData) -> str:
    """The client id a token request names (HTTP Basic, else the form), for the sign-in
    throttle: wrong secrets lock (client, address) as wrong passwords lock (account, address)."""
    client_id, _ = extract_basic_authorization(request.headers)
    return str(client_id or form.get("client_id") or "")[:200]


def presents_client(request: Request, form: FormData) -> bool:
    """Whether a caller authenticates as a client (HTTP Basic, or client_id in the form)."""
    return request.headers.get("authorization", "").lower().startswith("basic ") or (
        "client_id" in form
    )
