// Field-ready (issue 15): navigation by role that stays in view, refusals seen on Scan, the
// lookup that warns before the tap, a cleared form after "Scan next", one source for the
// balance, and the lot a GTIN-only dispense took. Each test failed on the build before the fix.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { SCREENSHOTS, gql, launch, seriousViolations, signIn, startServer, token } from "./lib.mjs";

const TABLET = { width: 1024, height: 768 };
const PHONE = { width: 360, height: 740 };

let fx;
let browser;

before(async () => {
  // Thirty days of demo history (shorter ones trip on receiving expired lots): every lot of the catalogue exists (a warehouse count of
  // hundreds of lots), and the demo network's work in flight.
  // Swiss francs: money must follow the organisation, not a default.
  fx = await startServer({ args: ["--history-days", "30", "--currency", "CHF"] });
  browser = await launch({ viewport: PHONE });
});

after(async () => {
  await browser?.close();
  await fx?.stop();
});

async function tabNames(page) {
  return (await page.getByRole("navigation", { name: "Screens" }).getByRole("link").allTextContents()).map((t) =>
    t.replace(/\d+$/, "").trim(),
  );
}

test("tabs by role: nurse, warehouse manager, pharmacist; the rest under More", async () => {
  const expected = {
    nurse: ["Scan", "Stock", "Alerts", "More"],
    warehouse: ["Stock", "Receive", "Transfers", "Counts", "More"],
    pharmacist: ["Scan", "Stock", "Orders", "Dashboard", "More"],
  };
  for (const [username, tabs] of Object.entries(expected)) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await signIn(page, fx.url, username);
    assert.deepEqual(await tabNames(page), tabs, `${username}'s tabs`);
    if (username === "warehouse") {
      // The first tab is the landing screen; "Receive" opens the shipments (receiving) screen.
      await page.getByRole("navigation", { name: "Screens" }).getByRole("link", { name: "Receive" }).click();
      await page.waitForURL(/#\/shipments/);
    }
    assert.deepEqual(await seriousViolations(page), []);
    await context.close();
  }
});

test("the navigation stays in view while the page scrolls, on a tablet and on a phone", async () => {
  for (const viewport of [TABLET, PHONE]) {
    const context = await browser.newContext({ viewport });
    const page = await context.newPage();
    await signIn(page, fx.url, "warehouse");
    // A long page: scroll far down, then the tabs must still be on screen.
    await page.evaluate(() => {
      document.querySelector("main").style.minHeight = "4000px";
      window.scrollTo(0, 3000);
    });
    await page.waitForFunction(() => window.scrollY > 2000);
    const box = await page.evaluate(() => {
      const r = document.querySelector('nav[aria-label="Screens"]').getBoundingClientRect();
      return { top: r.top, bottom: r.bottom, height: innerHeight };
    });
    assert.ok(box.top >= 0 && box.bottom <= box.height, `tabs in view at ${viewport.width}px: ${JSON.stringify(box)}`);
    await page.screenshot({ path: join(SCREENSHOTS, `70-nav-warehouse-${viewport.width}.png`), scale: "css" });
    await context.close();
  }
});

async function lookUp(page, { gtin, batch = "", expiry = "" }) {
  await page.getByLabel("GTIN / EAN").fill(gtin);
  await page.getByLabel("Batch").fill(batch);
  await page.getByLabel("Expiry").fill(expiry);
  await page.getByRole("button", { name: "Look up pack" }).click();
}

test("a refused queued dispense is shown on Scan, above the fold, with what to do", async () => {
  const context = await browser.newContext({ viewport: PHONE });
  const page = await context.newPage();
  await signIn(page, fx.url, "nurse");
  await page.getByLabel("Location").waitFor();
  const near = fx.lots.find((l) => l.batch === "BT-NEAR");
  await context.setOffline(true);
  // Offline, more packs than the lot holds: queued, then refused when sent.
  await lookUp(page, { gtin: fx.product.gtin, batch: near.batch });
  const result = page.getByTestId("scan-result");
  await page.getByLabel("Packs").fill(String(near.quantity + 50));
  await result.getByRole("button", { name: "Dispense" }).click();
  await result.locator('[data-testid="outcome"][data-status="pending"]').waitFor();
  await result.getByRole("button", { name: "Scan next" }).click();
  await context.setOffline(false);
  await page.evaluate(() => window.dispatchEvent(new Event("online")));
  const banner = page.getByTestId("refused-banner");
  await banner.waitFor({ timeout: 15_000 });
  assert.match(page.url(), /#\/(scan)?$|\/$/, "still on Scan");
  const text = await banner.textContent();
  assert.match(text, /refused/);
  assert.match(text, /Not enough stock here/);
  assert.match(text, /scan the pack again|ask for a transfer/, "says what to do");
  assert.doesNotMatch(text, /INSUFFICIENT_STOCK/, "no raw code");
  const box = await banner.boundingBox();
  assert.ok(box && box.y >= 0 && box.y + box.height <= PHONE.height, `banner above the fold: ${JSON.stringify(box)}`);
  assert.deepEqual(await seriousViolations(page), []);
  await page.screenshot({ path: join(SCREENSHOTS, "71-refused-on-scan-360.png"), scale: "css" });
  await banner.getByRole("button", { name: "Dismiss" }).click();
  await banner.waitFor({ state: "detached" });
  await context.close();
});

test("lookup warns before the tap: unknown batch, expiry unknown, expired lot; offline too", async () => {
  const context = await browser.newContext({ viewport: PHONE });
  const page = await context.newPage();
  await signIn(page, fx.url, "nurse");
  const result = page.getByTestId("scan-result");

  await lookUp(page, { gtin: fx.product.gtin, batch: "NO-SUCH-LOT" });
  await result.getByTestId("batch-unknown").waitFor();
  assert.equal(await result.getByTestId("on-hand").textContent(), "Batch not known here");
  assert.ok(await result.getByRole("button", { name: "Dispense" }).isDisabled(), "Dispense disabled for an unknown batch");
  assert.match(await result.textContent(), /Expiry unknown/);
  assert.doesNotMatch(await result.textContent(), /No expiry/);
  assert.deepEqual(await seriousViolations(page), []);
  await page.screenshot({ path: join(SCREENSHOTS, "72-batch-unknown-360.png"), scale: "css" });
  await result.getByRole("button", { name: "Cancel" }).click();

  // A known batch typed without expiry: the recorded expiry, not "No expiry".
  const fresh = fx.lots.find((l) => l.batch === "BT-FRESH");
  await lookUp(page, { gtin: fx.product.gtin, batch: fresh.batch });
  await result.locator('[data-expiry="ok"]').waitFor();
  assert.equal(await result.getByTestId("on-hand").textContent(), String(fresh.quantity));
  await result.getByRole("button", { name: "Cancel" }).click();

  // Offline (after the stock screen filled the device's cache): the cached lot's expiry.
  await page.getByRole("navigation", { name: "Screens" }).getByRole("link", { name: "Stock" }).click();
  await page.getByText(fresh.batch).first().waitFor();
  await page.getByRole("navigation", { name: "Screens" }).getByRole("link", { name: "Scan" }).click();
  await context.setOffline(true);
  await lookUp(page, { gtin: fx.product.gtin, batch: fresh.batch });
  await result.getByText(/Offline/).first().waitFor();
  assert.equal(await result.locator("[data-expiry]").getAttribute("data-expiry"), "ok", "offline: the cached lot's expiry");
  assert.doesNotMatch(await result.textContent(), /No expiry|Expiry unknown/);
  await result.getByRole("button", { name: "Cancel" }).click();
  await lookUp(page, { gtin: fx.product.gtin });
  await result.getByText(/Offline/).first().waitFor();
  assert.match(await result.textContent(), /Expiry unknown/);
  assert.doesNotMatch(await result.textContent(), /No expiry/);
  await result.getByRole("button", { name: "Cancel" }).click();
  await context.setOffline(false);

  // An expired lot typed with its printed date: warned, Dispense disabled.
  await lookUp(page, { gtin: fx.product.gtin, batch: "OLD-2", expiry: "2021-03-31" });
  await result.getByTestId("expired-warning").waitFor();
  assert.ok(await result.getByRole("button", { name: "Dispense" }).isDisabled());
  await context.close();
});

test("after Scan next the typed form is empty; On hand and Balance now agree; GTIN-only names its lot", async () => {
  const context = await browser.newContext({ viewport: PHONE });
  const page = await context.newPage();
  await signIn(page, fx.url, "nurse");
  const result = page.getByTestId("scan-result");
  const fresh = fx.lots.find((l) => l.batch === "BT-FRESH");

  await lookUp(page, { gtin: fx.product.gtin, batch: fresh.batch, expiry: fresh.expiry });
  await result.getByTestId("on-hand").waitFor();
  await page.getByLabel("Packs").fill("2");
  await result.getByRole("button", { name: "Dispense" }).click();
  await result.locator('[data-testid="outcome"][data-status="done"]').waitFor({ timeout: 10_000 });
  const outcome = await result.getByTestId("outcome").textContent();
  const balance = outcome.match(/Balance now ([\d,.\s]+)/)?.[1]?.trim().replace(/\.$/, "");
  assert.ok(balance, outcome);
  assert.match(await result.getByTestId("on-hand").textContent(), new RegExp(`^${balance}\\b`), "On hand here = Balance now");
  await result.getByRole("button", { name: "Scan next" }).click();
  const manual = await page.evaluate(() =>
    ["m-gtin", "m-batch", "m-expiry", "m-serial"].map((id) => document.getElementById(id)?.value ?? null),
  );
  assert.deepEqual(manual, ["", "", "", ""], "the typed form is cleared after Scan next");

  // GTIN only: the server takes the earliest-expiring lot, and the answer names it.
  await lookUp(page, { gtin: fx.product.gtin });
  await result.getByTestId("on-hand").waitFor();
  await result.getByRole("button", { name: "Dispense" }).click();
  await result.locator('[data-testid="outcome"][data-status="done"]').waitFor({ timeout: 10_000 });
  const gtinOnly = await result.getByTestId("outcome").textContent();
  const taken = gtinOnly.match(/from batch ([\w-]+)/)?.[1];
  assert.ok(taken, `the dispense names its lot: ${gtinOnly}`);
  const after = gtinOnly.match(/Balance now ([\d,.\s]+)/)?.[1]?.trim().replace(/\.$/, "");
  assert.equal(await result.getByTestId("on-hand").textContent(), `${after} (batch ${taken})`);
  assert.equal(await page.getByLabel("Packs").count(), 0);
  await page.screenshot({ path: join(SCREENSHOTS, "73-gtin-only-lot-360.png"), scale: "css" });
  await context.close();
});

test("counts are blind, can show uncounted lots only, and are paged", async () => {
  const context = await browser.newContext({ viewport: TABLET, serviceWorkers: "block" });
  const page = await context.newPage();
  await signIn(page, fx.url, "warehouse");
  await page.goto(`${fx.url}/#/counts`);
  await page.getByRole("heading", { name: "Start a count" }).waitFor();
  await page.getByRole("button", { name: "Start count" }).click();
  await page.locator('[data-testid="count-header"][data-status="OPEN"]').waitFor();
  const sheet = page.getByTestId("count-sheet");
  await sheet.locator("li").first().waitFor();

  // Blind: no system quantity on the sheet, not even while typing.
  assert.equal(await sheet.getByTestId("system").count(), 0, "system quantities hidden before counting");
  assert.equal(await sheet.locator("li[data-system]").count(), 0);
  assert.ok((await sheet.getByTestId("system-hidden").count()) > 0);
  const first = sheet.locator("li").first();
  const batch = await first.getAttribute("data-batch");
  await first.getByLabel("Counted").fill("3");
  assert.equal(await first.locator("[data-variance]").count(), 0, "no live variance while typing");

  // Paged: a warehouse holds more lots than fit on one page.
  const pager = page.getByTestId("count-pager");
  const status = await pager.getByRole("status").textContent();
  const total = Number(status.match(/of (\d+)/)[1]);
  assert.ok(total > 25, `paged: ${status}`);
  assert.equal(await sheet.locator("li").count(), 25);
  await page.screenshot({ path: join(SCREENSHOTS, "74-count-blind-1024.png"), scale: "css" });
  assert.deepEqual(await seriousViolations(page), []);

  // Recorded: now the system side and the variance show.
  await first.getByRole("button", { name: /^Save/ }).click();
  const saved = sheet.locator(`li[data-batch="${batch}"]`);
  await saved.getByText("Recorded").waitFor();
  await saved.getByTestId("system").waitFor();
  await saved.locator("[data-variance]").waitFor();

  // Uncounted only: the counted lot goes, the total drops by one.
  await page.getByLabel("Uncounted only").check();
  await page.waitForFunction(
    ([b, n]) =>
      !document.querySelector(`[data-testid="count-sheet"] li[data-batch="${b}"]`) &&
      document.querySelector('[data-testid="count-pager"] [role="status"]')?.textContent?.includes(`of ${n}`),
    [batch, total - 1],
  );
  await pager.getByRole("button", { name: "Next" }).click();
  await page.waitForFunction(() => document.querySelector('[data-testid="count-pager"] [role="status"]')?.textContent?.startsWith("Showing 26"));
  await context.close();
});

test("purchase orders: the pharmacist creates one from scratch and submits it; the supplier acknowledges and ships", async () => {
  const context = await browser.newContext({ viewport: PHONE });
  const page = await context.newPage();
  await signIn(page, fx.url, "pharmacist");
  await page.getByRole("navigation", { name: "Screens" }).getByRole("link", { name: "Orders" }).click();
  const list = page.getByTestId("orders");
  await list.locator("li").first().waitFor(); // the demo network's orders
  assert.match(await page.getByTestId("orders-total").textContent(), /of \d+ orders/);
  await page.screenshot({ path: join(SCREENSHOTS, "75-orders-360.png"), scale: "css" });
  assert.deepEqual(await seriousViolations(page), []);

  await page.getByRole("link", { name: "New order" }).click();
  await page.getByLabel("Product 1").waitFor();
  const option = await page.getByLabel("Product 1").locator("option").nth(1).getAttribute("value");
  await page.getByLabel("Product 1").selectOption(option);
  await page.getByLabel("Packs").fill("12");
  await page.getByLabel("Supplier").selectOption({ label: "MedDistri Wholesale" });
  await page.getByLabel("Deliver to").selectOption({ label: "HOSP-WH — Hospital warehouse" });
  assert.deepEqual(await seriousViolations(page), []);
  await page.getByRole("button", { name: "Create draft order" }).click();
  const header = page.getByTestId("order-header");
  await Promise.race([
    header.waitFor(),
    page
      .getByTestId("order-error")
      .waitFor()
      .then(async () => assert.fail(`refused: ${await page.getByTestId("order-error").textContent()}`)),
  ]);
  assert.equal(await header.getAttribute("data-status"), "DRAFT");
  const number = (await page.getByRole("heading", { level: 1 }).textContent()).replace("Order ", "");
  assert.match(number, /^PO-/);
  assert.match(await page.getByTestId("order-total").textContent(), /CHF/, "money in the organisation's currency");
  assert.doesNotMatch(await page.getByTestId("order-total").textContent(), /€|EUR/);
  await page.getByRole("button", { name: /^Submit to/ }).click();
  await page.locator('[data-testid="order-header"][data-status="SUBMITTED"]').waitFor();
  await page.screenshot({ path: join(SCREENSHOTS, "76-order-submitted-360.png"), scale: "css" });
  await context.close();

  const supplierContext = await browser.newContext({ viewport: TABLET });
  const supplier = await supplierContext.newPage();
  await signIn(supplier, fx.url, "supplier");
  await supplier.getByRole("navigation", { name: "Screens" }).getByRole("link", { name: "Orders" }).click();
  await supplier.locator(`[data-testid="orders"] li[data-number="${number}"] a`).click();
  await supplier.getByRole("button", { name: "Acknowledge order" }).click();
  await supplier.locator('[data-testid="order-header"][data-status="ACKNOWLEDGED"]').waitFor();
  const form = supplier.getByTestId("new-shipment");
  await form.getByLabel("Batch").fill("SUP-4711");
  assert.deepEqual(await seriousViolations(supplier), []);
  await supplier.screenshot({ path: join(SCREENSHOTS, "77-supplier-shipment-1024.png"), scale: "css" });
  await form.getByRole("button", { name: "Create shipment" }).click();
  await supplier.getByTestId("order-notice").filter({ hasText: /Shipment .* planned/ }).waitFor();
  await supplierContext.close();
});

test("layout: selects show their whole option, expiry tags stay on one line, the supplier table fits its card, open alerts are a real total", async () => {
  const context = await browser.newContext({ viewport: PHONE });
  const page = await context.newPage();
  await signIn(page, fx.url, "pharmacist");

  // Open alerts: the server's totalCount, not a 100-row cap.
  const accessToken = await token(fx.url, "pharmacist");
  const { alerts } = await gql(fx.url, accessToken, `{ alerts(first: 1, status: [OPEN]) { totalCount } }`);
  await page.goto(`${fx.url}/#/dashboard`);
  const total = page.getByTestId("open-alerts-total");
  await total.filter({ hasText: /\d/ }).waitFor();
  assert.equal((await total.textContent()).replace(/[^\d]/g, ""), String(alerts.totalCount));
  assert.doesNotMatch(await total.textContent(), /\+/);

  // Stock at 360 px: the location select shows all of its option; expiry tags on one line.
  await page.goto(`${fx.url}/#/stock`);
  await page.locator("[data-expiry]").first().waitFor();
  const cut = await page.evaluate(() => {
    const problems = [];
    for (const select of document.querySelectorAll("main select")) {
      const text = select.options[select.selectedIndex]?.text ?? "";
      const probe = document.createElement("span");
      probe.style.cssText = `position:absolute;visibility:hidden;white-space:nowrap;font:${getComputedStyle(select).font}`;
      probe.textContent = text;
      document.body.append(probe);
      const room = select.clientWidth - 48; // padding and the arrow
      if (probe.offsetWidth > room) problems.push(`${select.id}: "${text}" ${probe.offsetWidth} > ${room}`);
      probe.remove();
    }
    for (const tag of document.querySelectorAll("[data-expiry]")) {
      const line = parseFloat(getComputedStyle(tag).lineHeight) || 24;
      if (tag.getBoundingClientRect().height > line * 1.6) problems.push(`tag wraps: ${tag.textContent}`);
    }
    return problems;
  });
  assert.deepEqual(cut, []);

  // The supplier's contract table scrolls inside its card; the page itself never scrolls sideways.
  await page.goto(`${fx.url}/#/suppliers`);
  await page.locator('[data-supplier="MedDistri Wholesale"] a').click();
  const table = page.getByTestId("contract-table").first();
  await table.waitFor();
  const fit = await page.evaluate(() => ({
    page: document.documentElement.scrollWidth,
    viewport: window.innerWidth,
    cards: [...document.querySelectorAll("main .card")].filter((c) => c.scrollWidth > c.clientWidth + 1).length,
  }));
  assert.ok(fit.page <= fit.viewport, `page ${fit.page} px wide in a ${fit.viewport} px viewport`);
  assert.equal(fit.cards, 0, "no card overflows");
  assert.deepEqual(await seriousViolations(page), []);
  await page.screenshot({ path: join(SCREENSHOTS, "78-supplier-contract-360.png"), scale: "css" });
  await context.close();
});
