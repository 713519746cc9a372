// Scanning end to end: Chromium's fake camera plays a GS1 DataMatrix (made by serve.py with
// zxing-cpp), the app decodes it (BarcodeDetector polyfill, zxing wasm from our own origin),
// the nurse dispenses, and the server's stock drops by one. Also: typed entry, expiry states.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launch, signIn, startServer, stockOf } from "./lib.mjs";

let fx;
let browser;

before(async () => {
  fx = await startServer();
  assert.ok(fx.camera.video, "serve.py wrote no DataMatrix video: pip install zxing-cpp");
  browser = await launch({ camera: fx.camera.video });
  await browser.context.grantPermissions(["camera"], { origin: fx.url });
});

after(async () => {
  await browser?.close();
  await fx?.stop();
});

test("camera scan of a GS1 DataMatrix, then dispense: stock drops by one", async () => {
  const page = await browser.context.newPage();
  const wasmRequests = [];
  page.on("request", (r) => {
    if (r.url().endsWith(".wasm")) wasmRequests.push(r.url());
  });
  await signIn(page, fx.url, "nurse");
  assert.equal(wasmRequests.length, 0, "the decoder's wasm loads only when scanning starts");
  const before = await stockOf(fx.url, "WARD-A", fx.camera.batch);

  await page.getByRole("button", { name: "Scan with camera" }).click();
  const result = page.getByTestId("scan-result");
  await result.getByRole("heading", { name: `${fx.product.name} ${fx.product.strength}` }).waitFor({ timeout: 20_000 });
  assert.equal(await result.getByTestId("batch").textContent(), fx.camera.batch);
  assert.match(await result.textContent(), new RegExp(fx.camera.serial));
  assert.ok(wasmRequests.length >= 1 && wasmRequests.every((u) => u.startsWith(fx.url)), `wasm from our origin: ${wasmRequests}`);

  await page.getByLabel("Patient reference").fill("PAT-0042");
  await result.getByRole("button", { name: "Dispense" }).click();
  await result.locator('[data-testid="outcome"][data-status="done"]').waitFor({ timeout: 10_000 });

  const metrics = await page.evaluate(() => window.__apothecaScan);
  const timings = {
    engine: metrics.engine,
    cameraStartToDecodeMs: Math.round(metrics.detectedAt - metrics.cameraStartAt),
    decodeToPreviewMs: Math.round(metrics.previewAt - metrics.detectedAt),
    tapToConfirmedMs: Math.round(metrics.confirmedAt - metrics.actionAt),
    scanToConfirmedMs: Math.round(metrics.confirmedAt - metrics.detectedAt),
  };
  console.log(`scan timings: ${JSON.stringify(timings)}`);
  assert.equal(metrics.engine, "zxing-wasm-worker"); // decoded off the main thread
  assert.equal(await stockOf(fx.url, "WARD-A", fx.camera.batch), before - 1);
  await page.close();
});

test("typed GTIN and batch; near-expiry and expired packs are highlighted", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, fx.url, "nurse");
  const near = fx.lots.find((l) => l.batch === "BT-NEAR");
  await page.getByLabel("GTIN / EAN").fill(fx.product.gtin);
  await page.getByLabel("Batch").fill(near.batch);
  await page.getByRole("button", { name: "Look up pack" }).click();
  const result = page.getByTestId("scan-result");
  await result.locator('[data-expiry="near"]').waitFor();
  assert.equal(await result.getByTestId("on-hand").textContent(), String(near.quantity));

  await result.getByRole("button", { name: "Cancel" }).click();
  await page.getByLabel("GTIN / EAN").fill(fx.product.gtin);
  await page.getByLabel("Batch").fill("OLD-1");
  await page.getByLabel("Expiry").fill("2020-01-31");
  await page.getByRole("button", { name: "Look up pack" }).click();
  await result.locator('[data-expiry="expired"]').waitFor();
  assert.ok(await result.getByRole("button", { name: "Dispense" }).isDisabled(), "an expired pack cannot be dispensed");
  await context.close();
});

test("with two cameras the user can switch; no torch button where the camera has none", async () => {
  const twoCameras = await launch({ fakeCameras: 2 });
  try {
    await twoCameras.context.grantPermissions(["camera"], { origin: fx.url });
    const page = await twoCameras.context.newPage();
    await signIn(page, fx.url, "nurse");
    await page.getByRole("button", { name: "Scan with camera" }).click();
    await page.getByRole("button", { name: "Stop camera" }).waitFor();
    const label = () => page.evaluate(() => document.querySelector("video")?.srcObject?.getVideoTracks()[0]?.label ?? null);
    const first = await label();
    assert.match(first ?? "", /fake_device_\d/);
    // The fake cameras report no torch capability: offering one would be a lie.
    assert.equal(await page.getByRole("button", { name: /Torch/ }).count(), 0);
    await page.getByRole("button", { name: "Switch camera" }).click();
    await page.waitForFunction(
      (before) => {
        const track = document.querySelector("video")?.srcObject?.getVideoTracks()[0];
        return track && track.readyState === "live" && track.label !== before;
      },
      first,
      { timeout: 10_000 },
    );
    const second = await label();
    assert.notEqual(second, first);
    // And back to the first one.
    await page.getByRole("button", { name: "Switch camera" }).click();
    await page.waitForFunction((before) => document.querySelector("video")?.srcObject?.getVideoTracks()[0]?.label === before, first);
  } finally {
    await twoCameras.close();
  }
});
