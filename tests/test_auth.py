"""Token endpoint (RFC 6749 form posts): password and refresh_token grants, rotation,
reuse detection, revocation, and what the API does with bad tokens."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from server.core.errors import Unauthenticated
from server.core.security import Role, TokenService, hash_password, verify_password
from tests.conftest import TEST_SECRET, Demo, gql


async def _password(client, username: str = "nurse", password: str = "apotheca-demo"):
    return await client.post(
        "/auth/token", data={"grant_type": "password", "username": username, "password": password}
    )


async def test_password_grant_gives_working_access_and_refresh_tokens(demo: Demo, client) -> None:
    response = await _password(client)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    tokens = response.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 15 * 60
    body = await gql(
        client, "{ me { username roles locations { code } } }", token=tokens["access_token"]
    )
    assert body["data"]["me"] == {
        "username": "nurse",
        "roles": ["NURSE"],
        "locations": [{"code": "WARD-A"}],
    }


async def test_wrong_password_and_unknown_user_look_the_same(demo: Demo, client) -> None:
    wrong = await _password(client, password="nope-nope")
    unknown = await _password(client, username="nobody")
    assert wrong.status_code == unknown.status_code == 400
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"] == "invalid_grant"


async def test_refresh_rotates_and_reuse_revokes_the_whole_sign_in(demo: Demo, client) -> None:
    first = (await _password(client)).json()
    second = await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    # The spent token presented again: refused, and the token it was rotated into dies too.
    reuse = await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    after_reuse = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": rotated["refresh_token"]},
    )
    assert after_reuse.status_code == 400


async def test_revoked_refresh_token_is_refused(demo: Demo, client) -> None:
    tokens = (await _password(client)).json()
    assert (
        await client.post("/auth/revoke", data={"token": tokens["refresh_token"]})
    ).status_code == 200
    refused = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert refused.status_code == 400


async def test_unsupported_grant(demo: Demo, client) -> None:
    # Grants other than a person's go through authlib, which wants https (or loopback).
    response = await client.post(
        "https://apotheca.test/auth/token", data={"grant_type": "authorization_code"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


async def test_expired_forged_and_malformed_tokens_are_unauthenticated(demo: Demo, client) -> None:
    expired = TokenService(TEST_SECRET, timedelta(seconds=-60), timedelta(days=1))
    forged = TokenService(
        "another-secret-entirely-0123456789-abcdefghijkl", timedelta(minutes=5), timedelta(days=1)
    )
    user_id = demo.users["admin"]
    for token in (
        expired.issue_access_token(user_id, frozenset({Role.ADMIN})),
        forged.issue_access_token(user_id, frozenset({Role.ADMIN})),
        "not-a-jwt",
    ):
        body = await gql(client, "{ me { username } }", token=token)
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert body["data"] is None


def test_a_token_verified_once_is_still_refused_once_expired_or_altered() -> None:
    """Verified tokens are remembered (server.core.security.TokenService._verified), but never
    past their expiry, and only the exact token string."""
    tokens = TokenService(TEST_SECRET, timedelta(seconds=1), timedelta(days=1))
    token = tokens.issue_access_token(7, frozenset({Role.ADMIN}))
    assert tokens.decode_access_token(token) == 7
    assert tokens.decode_access_token(token) == 7  # from the verified tokens
    header, payload, signature = token.split(".")
    altered = ".".join(
        (header, payload, signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB"))
    )
    with pytest.raises(Unauthenticated):
        tokens.decode_access_token(altered)
    time.sleep(2.05)  # exp is in whole seconds, at most one ahead
    with pytest.raises(Unauthenticated):
        tokens.decode_access_token(token)


def test_password_hashes_are_argon2_and_salted() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("$argon2id$")
    assert first != second
    assert verify_password(first, "correct horse")
    assert not verify_password(first, "wrong horse")
    assert not verify_password(None, "anything")


def test_new_hashes_take_one_lane_and_older_parameters_still_verify() -> None:
    """argon2-cffi's default (4 lanes) runs 4 threads per hash; ours take one. A hash made
    with other parameters keeps verifying: each hash carries its own."""
    from argon2 import PasswordHasher, extract_parameters

    from server.config import Settings

    assert extract_parameters(hash_password("correct horse")).parallelism == 1
    older = PasswordHasher(parallelism=4).hash("correct horse")
    assert extract_parameters(older).parallelism == 4
    assert verify_password(older, "correct horse")
    assert not verify_password(older, "wrong horse")
    assert Settings(secret_key="unused").password_hash_workers == 1


async def test_an_older_four_lane_hash_is_upgraded_at_the_next_sign_in(demo: Demo) -> None:
    """A password stored before hashes took one lane is rehashed when its owner next signs
    in with it (never on a wrong password); the new hash verifies and signs in again."""
    from argon2 import PasswordHasher, extract_parameters
    from sqlalchemy import update

    from server.core.errors import DomainError
    from server.network.models import User

    network = demo.services.network
    older = PasswordHasher(parallelism=4).hash("apotheca-demo")
    async with demo.services.db.write() as session:
        await session.execute(
            update(User).where(User.username == "nurse").values(password_hash=older)
        )

    async def stored() -> str:
        async with demo.services.db.read() as session:
            user = await session.get(User, demo.users["nurse"])
            return user.password_hash

    with pytest.raises(DomainError):
        await network.password_grant("nurse", "wrong")
    assert await stored() == older
    await network.password_grant("nurse", "apotheca-demo")
    upgraded = await stored()
    assert extract_parameters(upgraded).parallelism == 1
    assert verify_password(upgraded, "apotheca-demo")
    await network.password_grant("nurse", "apotheca-demo")
    assert await stored() == upgraded
