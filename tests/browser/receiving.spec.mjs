// Shipments and receiving, and stock counts, through the PWA at phone size.
// Receiving: a supplier's shipment to HOSP-CP (set up through the API); the pharmacist receives
// one line with a damaged pack (stock rises by the good packs only, DAMAGED shows), receives the
// other line offline (it lands exactly once back online, even when an answer is lost), then
// completes the receipt (the rest is SHORT). Counts: the nurse counts WARD-A, a second count at
// the same place is refused with the server's message, finalizing posts the variance as a COUNT
// movement and shows a lot that was dispensed after it was counted.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { PHONE, SCREENSHOTS, gql, launch, seriousViolations, signIn, startServer, stockOf, token } from "./lib.mjs";

let fx;
let browser;
const violations = [];
const checked = new Set(); // screens axe actually ran on: an empty run must not pass

before(async () => {
  fx = await startServer();
  browser = await launch({});
  mkdirSync(SCREENSHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  await fx?.stop();
});

const day = (offset) => new Date(Date.now() + offset * 86_400_000).toISOString().slice(0, 10);

/** Run a mutation and fail on its typed errors; returns the payload. */
async function must(tok, query, variables, field) {
  const data = await gql(fx.url, tok, query, variables);
  const payload = data[field];
  assert.deepEqual(payload.errors ?? [], [], `${field} refused`);
  return payload;
}

async function ids(tok) {
  const { organisations, locations, products } = await gql(
    fx.url,
    tok,
    `query($gtin: String) {
      organisations(first: 20) { edges { node { id name kind } } }
      locations(first: 50) { edges { node { id code } } }
      products(first: 1, gtin: $gtin) { edges { node { id } } }
    }`,
    { gtin: fx.product.gtin },
  );
  const location = Object.fromEntries(locations.edges.map(({ node }) => [node.code, node.id]));
  return {
    wholesaler: organisations.edges.find(({ node }) => node.kind === "WHOLESALER").node.id,
    location,
    product: products.edges[0].node.id,
  };
}

/** A wholesaler's PLANNED shipment to HOSP-CP of `batches` ([batch, packs]) of one order line. */
async function plannedShipment(batches) {
  const admin = await token(fx.url, "admin");
  const supplier = await token(fx.url, "supplier");
  const { wholesaler, location, product } = await ids(admin);
  const expiry = day(500);
  // The wholesaler needs the packs on its shelf to dispatch them (SHIP at WHS-DC).
  for (const [batch, quantity] of batches) {
    await must(
      admin,
      `mutation($input: ReceiveStockInput!) { receiveStock(input: $input) { errors { code message } } }`,
      { input: { location: location["WHS-DC"], quantity, product, batchNumber: batch, expiryDate: expiry, idempotencyKey: `seed-${batch}` } },
      "receiveStock",
    );
  }
  const total = batches.reduce((n, [, q]) => n + q, 0);
  const { purchaseOrder } = await must(
    admin,
    `mutation($input: CreatePurchaseOrderInput!) { createPurchaseOrder(input: $input) { errors { code message } purchaseOrder { id lines { id } } } }`,
    { input: { supplier: wholesaler, deliverTo: location["HOSP-CP"], lines: [{ product, quantity: total, unitPrice: "2.50" }], expectedDeliveryDate: day(3) } },
    "createPurchaseOrder",
  );
  await must(admin, `mutation($o: ID!) { submitPurchaseOrder(input: { id: $o }) { errors { code message } } }`, { o: purchaseOrder.id }, "submitPurchaseOrder");
  await must(supplier, `mutation($o: ID!) { acknowledgePurchaseOrder(input: { id: $o }) { errors { code message } } }`, { o: purchaseOrder.id }, "acknowledgePurchaseOrder");
  const { shipment } = await must(
    supplier,
    `mutation($input: CreateShipmentInput!) { createShipment(input: $input) { errors { code message } shipment { id number } } }`,
    {
      input: {
        purchaseOrder: purchaseOrder.id,
        carrier: "Swift Medical Logistics",
        lines: batches.map(([batchNumber, quantity]) => ({ purchaseOrderLine: purchaseOrder.lines[0].id, batchNumber, expiryDate: expiry, quantity })),
      },
    },
    "createShipment",
  );
  return { ...shipment, location, supplier };
}

/** Two batches (10 + 6 packs) to HOSP-CP, dispatched and delivered. */
async function deliveredShipment() {
  const shipment = await plannedShipment([
    ["RCV-A", 10],
    ["RCV-B", 6],
  ]);
  for (const status of ["DISPATCHED", "DELIVERED"]) {
    await must(
      shipment.supplier,
      `mutation($s: ID!, $status: ShipmentStatus!) { updateShipmentStatus(input: { id: $s, status: $status }) { errors { code message } } }`,
      { s: shipment.id, status },
      "updateShipmentStatus",
    );
  }
  return shipment;
}

async function movementsAt(locationId, kinds, batch) {
  const admin = await token(fx.url, "admin");
  const { movements } = await gql(
    fx.url,
    admin,
    `query($l: ID, $k: [MovementKind!]) { movements(first: 100, location: $l, kinds: $k) { edges { node { kind quantity reference lot { batchNumber } } } } }`,
    { l: locationId, k: kinds },
  );
  return movements.edges.map((e) => e.node).filter((m) => m.lot.batchNumber === batch);
}

async function snap(page, name) {
  await page.evaluate(() => document.fonts?.ready);
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), scale: "css" });
}

async function axe(page, screen) {
  for (const v of await seriousViolations(page)) violations.push({ screen, ...v });
  checked.add(screen);
}

async function waitFor(check, what, timeout = 15_000) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`timed out: ${what}`);
}

test("pharmacist receives a shipment: damaged pack, offline receipt once, completion records SHORT", async () => {
  const shipment = await deliveredShipment();
  assert.equal(await stockOf(fx.url, "HOSP-CP", "RCV-A"), 0);

  // Service workers blocked so that request routing (to lose one answer) sees every request.
  const context = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 1, serviceWorkers: "block" });
  const page = await context.newPage();
  await signIn(page, fx.url, "pharmacist");
  await page.goto(`${fx.url}/#/shipments`);
  const item = page.locator(`li[data-shipment="${shipment.number}"]`);
  await item.waitFor();
  assert.equal(await item.getAttribute("data-status"), "DELIVERED");
  await snap(page, "40-shipments-list");
  await axe(page, "shipments list");

  await item.getByRole("link").click();
  const header = page.getByTestId("shipment-header");
  await header.waitFor();

  // Line A: 7 good and 1 damaged.
  const lineA = page.locator('[data-testid="shipment-lines"] li[data-batch="RCV-A"]');
  await lineA.getByRole("button", { name: /^Receive/ }).click();
  await lineA.getByLabel("Good packs").fill("7");
  await lineA.getByLabel("Damaged packs").fill("1");
  await snap(page, "41-shipments-receive-line");
  await axe(page, "shipment receive form");
  await lineA.getByRole("button", { name: "Record receipt" }).click();
  const outbox = page.getByTestId("shipment-outbox");
  await outbox.locator('li[data-status="done"]').waitFor();
  await page.locator('[data-testid="discrepancies"] li[data-kind="DAMAGED"][data-quantity="1"]').waitFor();
  await page.locator('[data-testid="shipment-lines"] li[data-batch="RCV-A"][data-received="7"][data-outstanding="2"]').waitFor();
  assert.equal(await stockOf(fx.url, "HOSP-CP", "RCV-A"), 7, "stock rises by the good packs only");
  await page.getByTestId("discrepancies").scrollIntoViewIfNeeded();
  await snap(page, "42-shipments-damaged");

  // Line B offline: it waits on the device; nothing reaches the server.
  await context.setOffline(true);
  await page.getByRole("status").filter({ hasText: "Offline" }).waitFor();
  const lineB = page.locator('[data-testid="shipment-lines"] li[data-batch="RCV-B"]');
  await lineB.getByRole("button", { name: /^Receive/ }).click();
  assert.equal(await lineB.getByLabel("Good packs").inputValue(), "6");
  await lineB.getByRole("button", { name: "Record receipt" }).click();
  await outbox.locator('li[data-status="pending"]').waitFor();
  assert.ok(await page.getByRole("button", { name: "Complete receipt…" }).isDisabled(), "completing needs the server");
  await page.getByText("Offline: completing a receipt needs the server.").waitFor();
  await outbox.scrollIntoViewIfNeeded();
  await snap(page, "43-shipments-offline-pending");
  assert.equal(await stockOf(fx.url, "HOSP-CP", "RCV-B"), 0);

  // Back online; the first answer is lost after the server booked it: the same key is resent.
  let lost = false;
  await page.route("**/graphql", async (route) => {
    if (!lost && (route.request().postData() ?? "").includes("ReceiveShipmentLine")) {
      await route.fetch();
      await route.abort("failed");
      lost = true;
      return;
    }
    await route.continue();
  });
  await context.setOffline(false);
  await waitFor(() => lost, "the replayed receipt's answer was dropped");
  await page.unroute("**/graphql");
  await page.evaluate(() => window.dispatchEvent(new Event("online")));
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="shipment-outbox"] li[data-status="pending"]').length === 0);
  assert.equal(await outbox.locator('li[data-status="done"]').count(), 2);
  assert.equal(await outbox.locator('li[data-status="done"][data-replayed="true"]').count(), 1, "the resent receipt was a replay");
  assert.equal(await stockOf(fx.url, "HOSP-CP", "RCV-B"), 6, "the offline receipt landed exactly once");
  assert.equal((await movementsAt(shipment.location["HOSP-CP"], ["RECEIVE"], "RCV-B")).length, 1);
  await page.locator('[data-testid="shipment-lines"] li[data-batch="RCV-B"][data-received="6"][data-outstanding="0"]').waitFor();

  // Complete: the confirmation names what will be SHORT (2 of RCV-A), then it is recorded.
  await page.getByRole("button", { name: "Complete receipt…" }).click();
  const preview = page.getByTestId("short-preview");
  await preview.waitFor();
  assert.match(await preview.textContent(), /2 × .*RCV-A/);
  assert.doesNotMatch(await preview.textContent(), /RCV-B/);
  await page.getByTestId("complete-confirm").scrollIntoViewIfNeeded();
  await snap(page, "44-shipments-complete-confirm");
  await page.getByRole("button", { name: "Confirm: complete receipt" }).click();
  await page.locator('[data-testid="shipment-header"][data-status="RECEIVED"]').waitFor();
  await page.locator('[data-testid="discrepancies"] li[data-kind="SHORT"][data-quantity="2"]').waitFor();
  assert.match(await page.getByTestId("shipment-notice").textContent(), /short: 2 × batch RCV-A/);
  await page.getByTestId("discrepancies").scrollIntoViewIfNeeded();
  await snap(page, "44-shipments-received-short");
  await axe(page, "shipment detail");

  const admin = await token(fx.url, "admin");
  const { shipment: server } = await gql(
    fx.url,
    admin,
    `query($id: ID!) { shipment(id: $id) { status discrepancies { kind quantity lot { batchNumber } } } }`,
    { id: shipment.id },
  );
  assert.equal(server.status, "RECEIVED");
  const kinds = server.discrepancies.map((d) => `${d.kind} ${d.quantity} ${d.lot.batchNumber}`).sort();
  assert.deepEqual(kinds, ["DAMAGED 1 RCV-A", "SHORT 2 RCV-A"]);
  assert.equal(await stockOf(fx.url, "HOSP-CP", "RCV-A"), 7);
  await context.close();
});

test("the supplier marks its shipment dispatched; the pharmacist's open shipment follows live", async () => {
  const shipment = await plannedShipment([["RCV-C", 4]]);
  const watcherContext = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 1, serviceWorkers: "block" });
  const watcher = await watcherContext.newPage();
  await signIn(watcher, fx.url, "pharmacist");
  await watcher.goto(`${fx.url}/#/shipments?id=${encodeURIComponent(shipment.id)}`);
  await watcher.locator('[data-testid="shipment-header"][data-status="PLANNED"]').waitFor();
  // Nothing to receive before dispatch.
  assert.equal(await watcher.getByRole("button", { name: /^Receive/ }).count(), 0);

  const context = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 1, serviceWorkers: "block" });
  const page = await context.newPage();
  await signIn(page, fx.url, "supplier");
  await page.goto(`${fx.url}/#/shipments`);
  await page.locator(`li[data-shipment="${shipment.number}"]`).getByRole("link").click();
  await page.locator('[data-testid="shipment-header"][data-status="PLANNED"]').waitFor();
  // The supplier reports progress; it cannot receive or complete.
  assert.equal(await page.getByRole("button", { name: "Complete receipt…" }).count(), 0);
  await page.getByLabel("Where is it?").fill("Left the distribution centre");
  await snap(page, "40-shipments-supplier");
  await axe(page, "shipment (supplier)");
  await page.getByRole("button", { name: "Mark dispatched" }).click();
  await page.locator('[data-testid="shipment-header"][data-status="DISPATCHED"]').waitFor();
  await page.getByRole("button", { name: "Mark in transit" }).waitFor();

  // Live on the receiver's side, no reload: the status changes and receiving opens.
  await watcher.locator('[data-testid="shipment-header"][data-status="DISPATCHED"]').waitFor({ timeout: 5_000 });
  await watcher.locator('li[data-batch="RCV-C"]').getByRole("button", { name: /^Receive/ }).waitFor();
  assert.equal(await stockOf(fx.url, "WHS-DC", "RCV-C"), 0, "dispatch wrote SHIP at the origin");

  // The pharmacist receives by scanning a pack (typed here): the server picks the line.
  const scanner = watcher.getByTestId("ship-scan-scanner");
  await scanner.getByText("Type GTIN and batch").click();
  await scanner.getByLabel("GTIN / EAN").fill(fx.product.gtin);
  await scanner.getByLabel("Batch").fill("RCV-C");
  await scanner.getByRole("button", { name: "Use this pack" }).click();
  const scanned = watcher.getByTestId("scanned-pack");
  await scanned.getByLabel("Good packs").fill("3");
  await scanned.getByRole("button", { name: "Receive scanned pack" }).click();
  await watcher.locator('[data-testid="shipment-outbox"] li[data-status="done"]').waitFor();
  await watcher.locator('li[data-batch="RCV-C"][data-received="3"][data-outstanding="1"]').waitFor();
  assert.equal(await stockOf(fx.url, "HOSP-CP", "RCV-C"), 3);
  await context.close();
  await watcherContext.close();
});

test("nurse counts WARD-A blind: variance once recorded, a refused second count, finalize posts COUNT", async () => {
  const nurse = await token(fx.url, "nurse");
  const { location } = await ids(await token(fx.url, "admin"));
  const fresh = await stockOf(fx.url, "WARD-A", "BT-FRESH");
  const near = await stockOf(fx.url, "WARD-A", "BT-NEAR");
  assert.ok(fresh > 2 && near > 1);

  const context = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 1, serviceWorkers: "block" });
  const page = await context.newPage();
  await signIn(page, fx.url, "nurse");
  await page.goto(`${fx.url}/#/counts`);
  await page.getByRole("heading", { name: "Start a count" }).waitFor();
  await page.getByLabel("Reason").fill("Monthly stock-take");
  await snap(page, "45-counts-start");
  await axe(page, "counts list");
  await page.getByRole("button", { name: "Start count" }).click();
  await page.locator('[data-testid="count-header"][data-status="OPEN"]').waitFor();
  const countUrl = page.url();

  // The sheet lists the lots here; blind, what the system holds shows once a count is recorded.
  const rowFresh = page.locator('[data-testid="count-sheet"] li[data-batch="BT-FRESH"]');
  await rowFresh.waitFor();
  assert.equal(await rowFresh.getAttribute("data-system"), null, "blind until counted");
  await rowFresh.getByLabel("Counted").fill(String(fresh - 2));
  assert.equal(await rowFresh.locator("[data-variance]").count(), 0, "no variance while typing");
  await rowFresh.getByRole("button", { name: /^Save/ }).click();
  await rowFresh.getByText("Recorded").waitFor();
  await rowFresh.locator('[data-variance="-2"]').waitFor();
  assert.equal(await rowFresh.getAttribute("data-system"), String(fresh));

  // Find a lot by its pack (typed GTIN and batch), count it: no variance.
  const scanner = page.getByTestId("count-scan-scanner");
  await scanner.getByText("Type GTIN and batch").click();
  await scanner.getByLabel("GTIN / EAN").fill(fx.product.gtin);
  await scanner.getByLabel("Batch").fill("BT-NEAR");
  await scanner.getByRole("button", { name: "Find this lot" }).click();
  await page.getByTestId("count-scan-note").filter({ hasText: "Found batch BT-NEAR" }).waitFor();
  const rowNear = page.locator('[data-testid="count-sheet"] li[data-batch="BT-NEAR"]');
  await waitFor(() => rowNear.getByLabel("Counted").evaluate((el) => el === document.activeElement), "the scanned lot's input has focus");
  await page.keyboard.type(String(near));
  await page.keyboard.press("Enter");
  await rowNear.getByText("Recorded").waitFor();
  await rowNear.locator('[data-variance="0"]').waitFor();
  await rowFresh.scrollIntoViewIfNeeded();
  await snap(page, "46-counts-sheet");
  await axe(page, "count sheet");

  // A second count at the same location is refused, and the server says why.
  await page.goto(`${fx.url}/#/counts`);
  await page.getByRole("button", { name: "Start count" }).click();
  const refused = page.getByTestId("start-error");
  await refused.waitFor();
  assert.match(await refused.textContent(), /already open at WARD-A/);
  await snap(page, "45-counts-refused");

  // Someone dispenses from BT-NEAR after it was counted: finalizing keeps that movement.
  await must(
    nurse,
    `mutation($input: DispenseStockInput!) { dispenseStock(input: $input) { errors { code message } } }`,
    { input: { location: location["WARD-A"], quantity: 1, idempotencyKey: `after-count-${Date.now()}`, lot: await lotId("BT-NEAR") } },
    "dispenseStock",
  );

  await page.goto(countUrl);
  await page.getByRole("button", { name: "Finalize count…" }).click();
  const previewRows = page.locator('[data-testid="variance-preview"] li');
  await previewRows.first().waitFor();
  assert.equal(await previewRows.count(), 1);
  assert.match(await previewRows.first().textContent(), /BT-FRESH.*−2/);
  await page.getByTestId("finalize-confirm").scrollIntoViewIfNeeded();
  await snap(page, "47-counts-finalize-confirm");
  await page.getByRole("button", { name: "Confirm: finalize" }).click();
  await page.locator('[data-testid="count-header"][data-status="FINALIZED"]').waitFor();
  const outcome = page.getByTestId("count-outcome");
  await outcome.locator(`li[data-batch="BT-FRESH"][data-final="${fresh - 2}"]`).waitFor();
  await outcome.locator(`li[data-batch="BT-NEAR"][data-moved-after="true"][data-final="${near - 1}"]`).waitFor();
  assert.match(await outcome.locator('li[data-batch="BT-FRESH"]').getByTestId("adjustment").textContent(), /COUNT −2/);
  await snap(page, "48-counts-result");
  await axe(page, "count result");

  assert.equal(await stockOf(fx.url, "WARD-A", "BT-FRESH"), fresh - 2, "the balance is what was counted");
  assert.equal(await stockOf(fx.url, "WARD-A", "BT-NEAR"), near - 1, "the dispense after counting is kept");
  const counts = await movementsAt(location["WARD-A"], ["COUNT"], "BT-FRESH");
  assert.equal(counts.length, 1);
  assert.equal(counts[0].quantity, -2);
  assert.equal((await movementsAt(location["WARD-A"], ["COUNT"], "BT-NEAR")).length, 0);
  await context.close();
});

async function lotId(batch) {
  const admin = await token(fx.url, "admin");
  const { lots } = await gql(fx.url, admin, `query($b: String) { lots(first: 5, batchNumber: $b) { edges { node { id batchNumber } } } }`, { b: batch });
  return lots.edges[0].node.id;
}

test("no serious or critical axe violations on the shipments and counts screens", () => {
  const expected = ["shipments list", "shipment receive form", "shipment detail", "shipment (supplier)", "counts list", "count sheet", "count result"];
  assert.deepEqual([...checked].sort(), [...expected].sort(), "every screen was checked (an earlier test stopped short?)");
  assert.deepEqual(violations, []);
});
