// The offline outbox: with the context offline, scans queue as pending in IndexedDB; back
// online they are replayed in order and each lands exactly once — even when a response is lost
// and the same idempotency key is sent again — and a scan the server refuses is shown, not
// dropped.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { SCREENSHOTS, dispenseCount, launch, signIn, startServer, stockOf } from "./lib.mjs";

let fx;
let browser;

before(async () => {
  fx = await startServer();
  browser = await launch({});
});

after(async () => {
  await browser?.close();
  await fx?.stop();
});

async function typedScan(page, { gtin, batch, serial }) {
  await page.getByLabel("GTIN / EAN").fill(gtin);
  await page.getByLabel("Batch").fill(batch);
  await page.getByLabel("Serial").fill(serial);
  await page.getByRole("button", { name: "Look up pack" }).click();
  const result = page.getByTestId("scan-result");
  await result.getByRole("button", { name: "Dispense" }).click();
  await result.getByTestId("outcome").waitFor();
  const status = await result.getByTestId("outcome").getAttribute("data-status");
  await result.getByRole("button", { name: "Scan next" }).click();
  return status;
}

test("offline scans queue, replay once each when back online; a refusal is shown", async () => {
  // Service workers blocked: Playwright's request routing (used to lose a response) then sees
  // every request. The outbox does not depend on the service worker.
  const context = await browser.newContext({ serviceWorkers: "block" });
  const page = await context.newPage();
  await signIn(page, fx.url, "nurse");
  const batch = "BT-FRESH";
  const stockBefore = await stockOf(fx.url, "WARD-A", batch);
  const dispensesBefore = await dispenseCount(fx.url, "WARD-A", batch);

  await context.setOffline(true);
  await page.getByRole("status").filter({ hasText: "Offline" }).waitFor();
  const serials = ["OFF-1", "OFF-2", "OFF-3", "OFF-1"]; // the last one repeats a serial
  for (const serial of serials) {
    assert.equal(await typedScan(page, { gtin: fx.product.gtin, batch, serial }), "pending");
  }
  const outbox = page.getByTestId("outbox");
  assert.equal(await outbox.locator('li[data-status="pending"]').count(), 4);
  assert.equal((await page.getByTestId("pending-count").textContent()).trim(), "4 pending");
  await outbox.scrollIntoViewIfNeeded();
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, "16-offline-pending.png"), scale: "css" });
  // Nothing reached the server.
  assert.equal(await stockOf(fx.url, "WARD-A", batch), stockBefore);

  // Back online, but the first response is lost after the server recorded it: the app must
  // keep it pending and send the same key again.
  let intercepted = false;
  let lost = false;
  await page.route("**/graphql", async (route) => {
    const body = route.request().postData() ?? "";
    if (!intercepted && body.includes("RecordScan")) {
      intercepted = true;
      await route.fetch(); // the server records it...
      await route.abort("failed"); // ...and the answer never arrives
      lost = true;
      return;
    }
    await route.continue();
  });
  await context.setOffline(false);
  await expectEventually(() => lost, "the first replay's response was dropped");
  await page.unroute("**/graphql");
  // The lost one is still pending (it is resent with the same key below).
  assert.ok((await outbox.locator('li[data-status="pending"]').count()) >= 1);

  // Every trigger at once: they coalesce and take turns, nothing is sent twice.
  await page.evaluate(() => {
    window.dispatchEvent(new Event("online"));
    window.dispatchEvent(new Event("online"));
    document.dispatchEvent(new Event("visibilitychange"));
  });
  await outbox.locator('li[data-status="refused"]').waitFor({ timeout: 15_000 });
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="outbox"] li[data-status="pending"]').length === 0);
  assert.equal(await outbox.locator('li[data-status="done"]').count(), 3);
  // The server said it had already recorded the one whose answer was lost.
  assert.equal(await outbox.locator('li[data-status="done"][data-replayed="true"]').count(), 1);
  const refused = outbox.locator('li[data-status="refused"]');
  assert.match(await refused.getByTestId("refusal").getAttribute("data-codes"), /SERIAL_ALREADY_DECOMMISSIONED/);
  assert.match(await refused.textContent(), /already used/, "the code in words, not raw");
  await outbox.scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(SCREENSHOTS, "17-replayed-one-refused.png"), scale: "css" });

  // Exactly once each: three packs left, three DISPENSE movements, whatever was resent.
  assert.equal(await stockOf(fx.url, "WARD-A", batch), stockBefore - 3);
  assert.equal(await dispenseCount(fx.url, "WARD-A", batch), dispensesBefore + 3);

  // A reload replays nothing more; the refusal is still there until dismissed.
  await page.reload();
  await page.getByTestId("outbox").waitFor();
  assert.equal(await page.getByTestId("outbox").locator('li[data-status="refused"]').count(), 1);
  await page.getByTestId("outbox").getByRole("button", { name: "Dismiss" }).click();
  await page.getByTestId("outbox").locator('li[data-status="refused"]').waitFor({ state: "detached" });
  assert.equal(await stockOf(fx.url, "WARD-A", batch), stockBefore - 3);
  await context.close();
});

async function expectEventually(check, what, timeout = 10_000) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`timed out: ${what}`);
}

test("a scan queued by the previous app version (IndexedDB v1) is kept and sent once", async () => {
  const context = await browser.newContext({ serviceWorkers: "block" });
  const page = await context.newPage();
  await signIn(page, fx.url, "nurse");
  const batch = "BT-FRESH";
  const stockBefore = await stockOf(fx.url, "WARD-A", batch);
  // Rebuild the device's database as version 1 left it: one pending scan, in the old shape.
  await page.evaluate(
    async ({ gtin, batch }) => {
      const done = (request) => new Promise((resolve, reject) => {
        request.onsuccess = () => resolve(request.result);
        request.onerror = () => reject(request.error);
      });
      await done(indexedDB.deleteDatabase("apotheca")); // the app closes its connection when asked
      const open = indexedDB.open("apotheca", 1);
      open.onupgradeneeded = () => {
        const outbox = open.result.createObjectStore("outbox", { keyPath: "seq", autoIncrement: true });
        outbox.createIndex("byStatus", "status");
        open.result.createObjectStore("cache", { keyPath: "key" });
      };
      const database = await done(open);
      const key = `pwa-v1-${Date.now()}`;
      const tx = database.transaction("outbox", "readwrite");
      tx.objectStore("outbox").add({
        key,
        username: "nurse",
        createdAt: Date.now(),
        status: "pending",
        input: {
          barcode: `(01)${gtin}(10)${batch}`,
          location: localStorage.getItem("apotheca.location"),
          action: "DISPENSE",
          quantity: 2,
          idempotencyKey: key,
        },
        label: { batch },
        attempts: 0,
      });
      await new Promise((resolve) => (tx.oncomplete = resolve));
      database.close();
    },
    { gtin: fx.product.gtin, batch },
  );
  await page.goto(`${fx.url}/#/scan`);
  await page.reload(); // a fresh start: the app opens version 2 and upgrades the entry
  await page.getByTestId("outbox").locator('li[data-status="done"]').waitFor({ timeout: 15_000 });
  assert.equal(await stockOf(fx.url, "WARD-A", batch), stockBefore - 2);
  await page.reload();
  await page.getByTestId("outbox").locator('li[data-status="done"]').waitFor();
  assert.equal(await stockOf(fx.url, "WARD-A", batch), stockBefore - 2, "sent once, not again on reload");
  await context.close();
});
