"""A real Apotheca server for the browser tests, on a fresh SQLite database.

Migrates a temporary database, seeds the demo network without history
(`seed_demo(history_days=-1)`), receives known stock at WARD-A, writes a fake-camera video
(.y4m) showing a GS1 DataMatrix of one of those packs, then runs `python -m server.cli serve`
with APOTHECA_PWA_DIR=pwa/dist on a free port. When the server is healthy it prints one JSON
line (the URL and the fixture: GTIN, batches, expiries, serial, the video's path) and keeps
running until it gets SIGTERM/SIGINT or its stdin closes; then it stops the server and removes
the temporary directory. SIGUSR1 restarts the server on the same port and database (to test
reconnection); it prints {"restarted": true} when the new one is healthy.

    .venv/bin/python tests/browser/serve.py [--pwa-dir pwa/dist] [--port N] [--history-days N]
        [--currency CODE]

--currency CODE sets every organisation's currency (ISO 4217).
--history-days N seeds N days of demo stock history (for the dashboard's trends) instead of none.

The DataMatrix is made with zxing-cpp (`pip install zxing-cpp`); without it, no video is
written and "video" is null.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select, update  # noqa: E402

from server.catalog.models import Product, ProductGtin  # noqa: E402
from server.config import Settings  # noqa: E402
from server.core.migrate import upgrade  # noqa: E402
from server.demo import seed_demo  # noqa: E402
from server.inventory.models import MovementKind  # noqa: E402
from server.inventory.service import MovementRequest, NewLot  # noqa: E402
from server.network.models import Location, Organisation, User  # noqa: E402
from server.services import Services  # noqa: E402

SECRET = "browser-test-secret-key-that-is-long-enough-for-hs256-0123456789"
WARD = "WARD-A"
# (batch, expires in days, packs) received at WARD-A for the first product.
STOCK = (("BT-FRESH", 400, 40), ("BT-NEAR", 30, 10))
# A second product, for the live test (its own balance, untouched by the other tests).
LIVE_STOCK = ("BT-LIVE", 300, 25)
CAMERA_SERIAL = "CAM0001"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gs1_date(value: date) -> str:
    return f"{value:%y%m%d}"


async def prepare(
    url: str, history_days: int = -1, currency: str | None = None
) -> dict[str, object]:
    await upgrade(url)
    services = Services.build(Settings(database_url=url, secret_key=SECRET))
    try:
        await seed_demo(services, history_days=history_days)
        if currency:
            # Every organisation keeps its amounts in this currency (the demo's are in EUR).
            async with services.db.write() as session:
                await session.execute(update(Organisation).values(currency=currency))
        async with services.db.read() as session:
            locations = {x.code: x.id for x in (await session.execute(select(Location))).scalars()}
            admin_id = (
                await session.execute(select(User.id).where(User.username == "admin"))
            ).scalar_one()
            products = (
                (await session.execute(select(Product).order_by(Product.id).limit(2)))
                .scalars()
                .all()
            )
            gtins = {}
            for product in products:
                gtins[product.id] = (
                    await session.execute(
                        select(ProductGtin.gtin)
                        .where(ProductGtin.product_id == product.id)
                        .order_by(ProductGtin.id)
                        .limit(1)
                    )
                ).scalar_one()
        admin = await services.network.load_principal(admin_id)
        today = date.today()
        main, second = products
        lots = []
        for batch, days, packs in STOCK:
            expiry = today + timedelta(days=days)
            await services.ledger.record(
                admin,
                [
                    MovementRequest(
                        MovementKind.RECEIVE,
                        locations[WARD],
                        packs,
                        new_lot=NewLot(main.id, batch, expiry),
                    )
                ],
                operation="browser-test.receive",
            )
            lots.append({"batch": batch, "expiry": expiry.isoformat(), "quantity": packs})
        batch, days, packs = LIVE_STOCK
        live_expiry = today + timedelta(days=days)
        await services.ledger.record(
            admin,
            [
                MovementRequest(
                    MovementKind.RECEIVE,
                    locations[WARD],
                    packs,
                    new_lot=NewLot(second.id, batch, live_expiry),
                )
            ],
            operation="browser-test.receive",
        )
        return {
            "location": WARD,
            "product": {"name": main.name, "strength": main.strength, "gtin": gtins[main.id]},
            "lots": lots,
            "liveProduct": {
                "name": second.name,
                "strength": second.strength,
                "gtin": gtins[second.id],
                "batch": batch,
                "expiry": live_expiry.isoformat(),
                "quantity": packs,
            },
        }
    finally:
        await services.close()


def write_y4m(path: Path, content: str, width: int = 640, height: int = 480) -> bool:
    """A short looping video of a GS1 DataMatrix on white, for Chromium's fake camera."""
    try:
        import zxingcpp
    except ImportError:
        return False
    barcode = zxingcpp.create_barcode(content, zxingcpp.DataMatrix, gs1=True)
    scale = max(1, min(width, height) * 5 // 8 // barcode.to_image(scale=1).shape[0])
    image = barcode.to_image(scale=scale)
    rows, cols = image.shape
    pixels = bytes(memoryview(image))
    luma = bytearray(b"\xff" * (width * height))
    top, left = (height - rows) // 2, (width - cols) // 2
    for y in range(rows):
        start = (top + y) * width + left
        luma[start : start + cols] = pixels[y * cols : (y + 1) * cols]
    chroma = b"\x80" * ((width // 2) * (height // 2))
    frame = b"FRAME\n" + bytes(luma) + chroma + chroma
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(10):
            out.write(frame)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pwa-dir", default=str(ROOT / "pwa" / "dist"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--history-days", type=int, default=-1)
    parser.add_argument("--currency", default=None, help="ISO 4217 code for every organisation")
    args = parser.parse_args()
    pwa_dir = Path(args.pwa_dir).resolve()
    if not (pwa_dir / "index.html").exists():
        print(f"no built PWA at {pwa_dir} (run `npm run build` in pwa/)", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="apotheca-browser-"))
    database_url = f"sqlite+aiosqlite:///{workdir / 'apotheca.db'}"
    fixture = asyncio.run(prepare(database_url, args.history_days, args.currency))
    product = fixture["product"]
    fresh = fixture["lots"][0]  # type: ignore[index]
    expiry = date.fromisoformat(fresh["expiry"])
    content = f"(01){product['gtin']}(17){gs1_date(expiry)}(10){fresh['batch']}(21){CAMERA_SERIAL}"  # type: ignore[index]
    video = workdir / "datamatrix.y4m"
    fixture["camera"] = {
        "content": content,
        "serial": CAMERA_SERIAL,
        "batch": fresh["batch"],
        "video": str(video) if write_y4m(video, content) else None,
    }

    port = args.port or free_port()
    env = {
        **os.environ,
        "APOTHECA_DATABASE_URL": database_url,
        "APOTHECA_SECRET_KEY": SECRET,
        "APOTHECA_PWA_DIR": str(pwa_dir),
        "APOTHECA_LOG_LEVEL": os.environ.get("APOTHECA_LOG_LEVEL", "warning"),
    }
    command = [
        sys.executable,
        "-m",
        "server.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()

    def shutdown(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    restart = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: restart.set())

    def wait_healthy() -> bool:
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None:
                print(f"server exited with {server.returncode}", file=sys.stderr)
                return False
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return True
            except OSError:
                pass
            if time.monotonic() > deadline:
                print("server did not become healthy in 30 s", file=sys.stderr)
                return False
            time.sleep(0.1)

    try:
        if not wait_healthy():
            return 1
        print(json.dumps({"url": url, "workdir": str(workdir), **fixture}), flush=True)

        def watch_stdin() -> None:
            # The test runner holds our stdin: when it goes away (even killed), so do we.
            with contextlib.suppress(Exception):
                sys.stdin.read()
            stop.set()

        if not sys.stdin.isatty():
            threading.Thread(target=watch_stdin, daemon=True).start()
        while not stop.is_set() and server.poll() is None:
            stop.wait(0.2)
            if restart.is_set():
                restart.clear()
                server.terminate()
                server.wait(timeout=10)
                server = subprocess.Popen(command, cwd=ROOT, env=env)
                if not wait_healthy():
                    return 1
                print(json.dumps({"restarted": True}), flush=True)
        return 0
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
