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


def test_serve_over_https_announces_where_to_go_and_whom_to_sign_in_as(
    demo: Demo, database_url: str, tmp_path
) -> None:
    """`make run HTTPS=1`'s server: TLS with a made certificate, then the address and users."""
    import ssl
    import time

    import httpx

    from tests.conftest import free_port

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    names = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    subprocess.run(
        [*openssl, *names, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    port = free_port()
    env = {
        **os.environ,
        "APOTHECA_DATABASE_URL": database_url,
        "APOTHECA_SECRET_KEY": TEST_SECRET,
        "APOTHECA_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--announce"]
    command += ["--log-format", "plain", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        assert process.stderr is not None
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.startswith("Stop with"):
                break
        text = "\n".join(lines)
        assert f"Apotheca is ready: https://127.0.0.1:{port}/" in text, text
        assert "nurse" in text and "(nurse)" in text
        context = ssl.create_default_context(cafile=str(cert))
        health = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=context, timeout=10)
        assert health.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_serve_refuses_a_certificate_without_its_key(database_url: str) -> None:
    result = run_cli(database_url, "serve", "--ssl-certfile", "x.pem", password="unused-pw")
    assert result.returncode == 2
    assert "go together" in result.stderr
