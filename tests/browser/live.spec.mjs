// Live: a dispense by one user shows in another user's stock screen within a second
// (stockChanged over graphql-transport-ws).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { gql, launch, signIn, startServer, token } from "./lib.mjs";

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

test("a dispense in one context shows in the other's stock screen within a second", async () => {
  const live = fx.liveProduct;
  const watcherContext = await browser.newContext();
  const watcher = await watcherContext.newPage();
  await signIn(watcher, fx.url, "pharmacist");
  await watcher.goto(`${fx.url}/#/stock`);
  const wardA = await watcher.locator("#stock-location option", { hasText: "WARD-A" }).getAttribute("value");
  await watcher.locator("#stock-location").selectOption(wardA);
  await watcher.locator(`[data-batch="${live.batch}"][data-quantity="${live.quantity}"]`).waitFor();
  await watcher.getByTestId("live-status").filter({ hasText: "Live" }).waitFor();

  const nurseContext = await browser.newContext();
  const nurse = await nurseContext.newPage();
  await signIn(nurse, fx.url, "nurse");
  await nurse.getByLabel("GTIN / EAN").fill(live.gtin);
  await nurse.getByLabel("Batch").fill(live.batch);
  await nurse.getByRole("button", { name: "Look up pack" }).click();
  const result = nurse.getByTestId("scan-result");
  await result.getByRole("button", { name: "Dispense" }).waitFor();

  // The watcher page notes (browser clock) when the new quantity appears in its DOM.
  const selector = `[data-batch="${live.batch}"][data-quantity="${live.quantity - 1}"]`;
  const seen = watcher.evaluate(
    (sel) =>
      new Promise((resolve) => {
        const observer = new MutationObserver(() => {
          if (document.querySelector(sel)) {
            observer.disconnect();
            resolve(performance.timeOrigin + performance.now());
          }
        });
        observer.observe(document.body, { subtree: true, childList: true, attributes: true });
      }),
    selector,
  );
  await result.getByRole("button", { name: "Dispense" }).click();
  await result.locator('[data-testid="outcome"][data-status="done"]').waitFor();
  const seenAt = await Promise.race([seen, new Promise((r) => setTimeout(() => r(null), 5_000))]);
  assert.ok(seenAt, "the watcher never showed the new quantity");
  const { actionAt, confirmedAt } = await nurse.evaluate(() => ({
    actionAt: performance.timeOrigin + window.__apothecaScan.actionAt,
    confirmedAt: performance.timeOrigin + window.__apothecaScan.confirmedAt,
  }));
  const fromTap = Math.round(seenAt - actionAt);
  console.log(`live: tap→confirmed ${Math.round(confirmedAt - actionAt)} ms, tap→shown in the other context ${fromTap} ms`);
  assert.ok(fromTap < 1000, `shown ${fromTap} ms after the tap`);
  await watcherContext.close();
  await nurseContext.close();
});

test("after the server restarts, the socket reconnects and the stock screen refetches", async () => {
  const live = fx.liveProduct;
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, fx.url, "nurse");
  await page.goto(`${fx.url}/#/stock`);
  await page.locator(`[data-batch="${live.batch}"]`).waitFor();
  await page.getByTestId("live-status").filter({ hasText: "Live" }).waitFor();
  const shown = Number(await page.locator(`[data-batch="${live.batch}"]`).getAttribute("data-quantity"));

  let stockQueries = 0;
  page.on("request", (r) => {
    if (r.url().endsWith("/graphql") && (r.postData() ?? "").includes("query StockLevels")) stockQueries++;
  });
  await fx.restart();
  // A change made while this client is not (yet) subscribed: only a refetch can show it.
  const accessToken = await token(fx.url, "admin");
  const { locations } = await gql(fx.url, accessToken, `{ locations(first: 5, search: "WARD-A") { edges { node { id code } } } }`);
  const ward = locations.edges.map((e) => e.node).find((l) => l.code === "WARD-A");
  const { parseBarcode } = await gql(fx.url, accessToken, `query($b: String!) { parseBarcode(barcode: $b) { lot { id } } }`, {
    b: `(01)${live.gtin}(10)${live.batch}`,
  });
  const { dispenseStock } = await gql(
    fx.url,
    accessToken,
    `mutation($input: DispenseStockInput!) { dispenseStock(input: $input) { errors { message } } }`,
    { input: { location: ward.id, lot: parseBarcode.lot.id, quantity: 2, idempotencyKey: `restart-${Date.now()}` } },
  );
  assert.deepEqual(dispenseStock.errors, []);

  await page.locator(`[data-batch="${live.batch}"][data-quantity="${shown - 2}"]`).waitFor({ timeout: 20_000 });
  await page.getByTestId("live-status").filter({ hasText: "Live" }).waitFor({ timeout: 20_000 });
  assert.ok(stockQueries >= 1, "the stock screen refetched after the reconnect");
  await context.close();
});

test("a new alert appears live on the alerts screen (alertRaised)", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, fx.url, "pharmacist");
  await page.goto(`${fx.url}/#/alerts`);
  await page.getByTestId("alert-list").waitFor();
  await page.waitForTimeout(500); // let the subscription start
  const before = await page.getByTestId("alert-list").locator("li").count();

  // The same serialised pack decommissioned twice raises SERIAL_DECOMMISSIONED_TWICE.
  const accessToken = await token(fx.url, "nurse");
  const { locations } = await gql(fx.url, accessToken, `{ locations(first: 5, search: "WARD-A") { edges { node { id code } } } }`);
  const ward = locations.edges.map((e) => e.node).find((l) => l.code === "WARD-A");
  const barcode = `(01)${fx.product.gtin}(10)BT-FRESH(21)TWICE-1`;
  for (const key of ["twice-a", "twice-b"]) {
    await gql(
      fx.url,
      accessToken,
      `mutation($input: RecordScanInput!) { recordScan(input: $input) { errors { code } } }`,
      { input: { barcode, location: ward.id, action: "DISPENSE", idempotencyKey: key } },
    );
  }
  await page.getByTestId("alert-list").locator("li", { hasText: "TWICE-1" }).or(page.getByTestId("alert-list").locator("li", { hasText: "Serial used twice" })).first().waitFor({ timeout: 5_000 });
  assert.ok((await page.getByTestId("alert-list").locator("li").count()) > before);
  await context.close();
});
