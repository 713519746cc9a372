"""The PWA's files over a real server: pre-compressed variants, Cache-Control by kind, 304s."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path

import brotli
import httpx
import pytest

from server.core.static import accepted_encodings, cache_control
from tests.conftest import ROOT, LiveServer, start_server

SCRIPT = b"console.log('apotheca');\n" * 400


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "icons").mkdir()
    (root / "index.html").write_bytes(b"<!doctype html><title>Apotheca</title>" * 40)
    (root / "sw.js").write_bytes(SCRIPT)
    (root / "icons" / "icon-192.png").write_bytes(b"\x89PNG fake")
    asset = root / "assets" / "index-Ab12Cd34.js"
    asset.write_bytes(SCRIPT)
    asset.with_name(asset.name + ".br").write_bytes(brotli.compress(SCRIPT))
    asset.with_name(asset.name + ".gz").write_bytes(gzip.compress(SCRIPT))
    return root


@pytest.fixture
def pwa_server(database_url: str, dist: Path) -> Iterator[LiveServer]:
    server = start_server(database_url, env_extra={"APOTHECA_PWA_DIR": str(dist)})
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


def test_hashed_assets_come_pre_compressed_and_immutable(pwa_server: LiveServer) -> None:
    url = f"{pwa_server.url}/assets/index-Ab12Cd34.js"
    with httpx.Client(timeout=10) as http:
        br = http.get(url, headers={"Accept-Encoding": "gzip, br"})
        gz = http.get(url, headers={"Accept-Encoding": "gzip"})
        plain = http.get(url, headers={"Accept-Encoding": "identity"})
    assert br.status_code == gz.status_code == plain.status_code == 200
    assert br.headers["content-encoding"] == "br"
    assert gz.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    # httpx decodes both codings: every variant carries the same script.
    assert br.content == gz.content == plain.content == SCRIPT
    assert int(br.headers["content-length"]) < len(SCRIPT) // 5
    for response in (br, gz, plain):
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["vary"] == "Accept-Encoding"
        assert response.headers["content-type"].startswith("text/javascript")


def test_the_shell_and_service_worker_are_revalidated(pwa_server: LiveServer) -> None:
    with httpx.Client(timeout=10) as http:
        shell = http.get(f"{pwa_server.url}/")
        worker = http.get(f"{pwa_server.url}/sw.js")
        icon = http.get(f"{pwa_server.url}/icons/icon-192.png")
        again = http.get(
            f"{pwa_server.url}/sw.js", headers={"If-None-Match": worker.headers["etag"]}
        )
    assert shell.status_code == 200 and shell.headers["cache-control"] == "no-cache"
    assert worker.headers["cache-control"] == "no-cache"
    assert "content-encoding" not in worker.headers  # no variant was built for it here
    assert icon.headers["cache-control"] == "public, max-age=86400"
    assert again.status_code == 304
    assert again.headers["cache-control"] == "no-cache"


def test_a_revalidated_compressed_asset_answers_304(pwa_server: LiveServer) -> None:
    url = f"{pwa_server.url}/assets/index-Ab12Cd34.js"
    with httpx.Client(timeout=10) as http:
        first = http.get(url, headers={"Accept-Encoding": "br"})
        second = http.get(
            url, headers={"Accept-Encoding": "br", "If-None-Match": first.headers["etag"]}
        )
    assert second.status_code == 304


def test_accept_encoding_parsing() -> None:
    assert accepted_encodings("gzip, deflate, br;q=1.0") == {"gzip", "deflate", "br"}
    assert accepted_encodings("br;q=0, gzip") == {"gzip"}
    assert accepted_encodings("br;q=nonsense") == set()
    assert accepted_encodings("") == set()
    assert cache_control("assets/x-1.js") == "public, max-age=31536000, immutable"
    assert cache_control("index.html") == "no-cache"
    assert cache_control("manifest.webmanifest") == "no-cache"


def test_the_built_pwa_ships_compressed_variants() -> None:
    """`npm run build` (make test builds it first) leaves a .br and .gz beside each script."""
    assets = ROOT / "pwa" / "dist" / "assets"
    if not assets.is_dir():
        if os.environ.get("CI"):
            pytest.fail("pwa/dist was not built before the tests")
        pytest.skip("pwa/dist is not built (make pwa-build)")
    scripts = [p for p in assets.iterdir() if p.suffix == ".js"]
    assert scripts
    for script in scripts:
        if script.stat().st_size < 1024:
            continue
        packed = script.with_name(script.name + ".br").read_bytes()
        assert brotli.decompress(packed) == script.read_bytes()
