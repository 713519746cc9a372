"""`apotheca create-user` from the command line, as an operator would run it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT, TEST_SECRET, Demo, gql, token_for


def run_cli(database_url: str, *args: str, password: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "APOTHECA_DATABASE_URL": database_url,
        "APOTHECA_SECRET_KEY": TEST_SECRET,
        "APOTHECA_NEW_PASSWORD": password,
    }
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_create_user_then_sign_in(demo: Demo, database_url: str, client) -> None:
    result = run_cli(
        database_url,
        "create-user",
        "ward.c.nurse",
        "--role",
        "NURSE",
        "--organisation",
        "St. Aurelia General Hospital",
        "--location",
        "ward-c",
        password="long-enough-pw",
    )
    assert result.returncode == 0, result.stderr
    token = await token_for(client, "ward.c.nurse", "long-enough-pw")
    me = (await gql(client, "{ me { roles locations { code } } }", token=token))["data"]["me"]
    assert me == {"roles": ["NURSE"], "locations": [{"code": "WARD-C"}]}


async def test_create_user_refusals_are_explained(demo: Demo, database_url: str) -> None:
    short = run_cli(database_url, "create-user", "x.y", "--role", "ADMIN", password="short")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    taken = run_cli(
        database_url,
        "create-user",
        "nurse",
        "--role",
        "NURSE",
        "--location",
        "WARD-A",
        password="long-enough-pw",
    )
    assert taken.returncode == 1 and "already taken" in taken.stderr
    unknown = run_cli(
        database_url,
        "create-user",
        "z.z",
        "--role",
        "NURSE",
        "--location",
        "NOWHERE",
        password="long-enough-pw",
    )
    assert unknown.returncode == 1 and "NOWHERE" in unknown.stderr
