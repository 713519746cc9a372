// Transfers end to end in the browser: a nurse requests stock for her ward, the pharmacist sees
// it arrive live, approves, picks the first-expired-first-out suggestion and dispatches (stock
// leaves the central pharmacy), the nurse receives one pack short (stock arrives, SHORT shown).
// A dispatch queued offline waits on the device and lands exactly once; refusals show the
// server's message; list and detail are axe-clean at phone size.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { SCREENSHOTS, gql, launch, seriousViolations, signIn, startServer, stockOf, token } from "./lib.mjs";

let fx;
let browser;
let hospCp;
let wardA;
let product;
// Stock received at HOSP-CP for the tests: one lot near expiry (FEFO picks it first), one fresh.
const NEAR = { batch: "TR-NEAR", days: 40, packs: 6 };
const FRESH = { batch: "TR-FRESH", days: 500, packs: 40 };

function isoDay(offset) {
  const d = new Date();
  d.setDate(d.getDate() + offset);
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

async function locationId(accessToken, code) {
  const { locations } = await gql(fx.url, accessToken, `query($code: String) { locations(first: 5, search: $code) { edges { node { id code } } } }`, { code });
  return locations.edges.map((e) => e.node).find((l) => l.code === code).id;
}

before(async () => {
  fx = await startServer();
  browser = await launch({});
  const admin = await token(fx.url, "admin");
  hospCp = await locationId(admin, "HOSP-CP");
  wardA = await locationId(admin, "WARD-A");
  // A product the other fixtures leave alone (serve.py stocks the first two at WARD-A).
  const { products } = await gql(fx.url, admin, `{ products(first: 5) { edges { node { id name strength } } } }`);
  const taken = new Set([fx.product.name, fx.liveProduct.name]);
  product = products.edges.map((e) => e.node).find((p) => !taken.has(p.name));
  const pharmacist = await token(fx.url, "pharmacist");
  for (const lot of [NEAR, FRESH]) {
    const { receiveStock } = await gql(
      fx.url,
      pharmacist,
      `mutation($input: ReceiveStockInput!) { receiveStock(input: $input) { errors { code message } } }`,
      {
        input: {
          location: hospCp,
          quantity: lot.packs,
          idempotencyKey: `seed-${lot.batch}`,
          product: product.id,
          batchNumber: lot.batch,
          expiryDate: isoDay(lot.days),
        },
      },
    );
    assert.deepEqual(receiveStock.errors, []);
  }
});

after(async () => {
  await browser?.close();
  await fx?.stop();
});

const detail = (page, status) => page.locator(`[data-testid="transfer-detail"][data-status="${status}"]`);

async function shot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, name), scale: "css" });
}

/** Scroll so `selector` starts just below the sticky header. */
async function scrollTo(page, selector) {
  await page.evaluate((sel) => {
    const top = document.querySelector(sel).getBoundingClientRect().top + window.scrollY;
    window.scrollTo(0, Math.max(0, top - 56));
  }, selector);
}

/** TRANSFER_OUT movements written at HOSP-CP for transfer `number`. */
async function transferOuts(number) {
  const admin = await token(fx.url, "admin");
  const { movements } = await gql(
    fx.url,
    admin,
    `query($location: ID) { movements(first: 100, location: $location, kinds: [TRANSFER_OUT]) { edges { node { quantity reference } } } }`,
    { location: hospCp },
  );
  return movements.edges.map((e) => e.node).filter((m) => m.reference === number);
}

/** A transfer of `quantity` packs HOSP-CP → WARD-A, requested, approved and picked (FEFO) via the API. */
async function pickedTransfer(quantity) {
  const nurse = await token(fx.url, "nurse");
  const pharmacist = await token(fx.url, "pharmacist");
  const { requestTransfer } = await gql(
    fx.url,
    nurse,
    `mutation($s: ID!, $d: ID!, $l: [TransferLineInput!]!) { requestTransfer(input: { source: $s, destination: $d, lines: $l }) { transfer { id number } errors { message } } }`,
    { s: hospCp, d: wardA, l: [{ product: product.id, quantity }] },
  );
  assert.deepEqual(requestTransfer.errors, []);
  const { id, number } = requestTransfer.transfer;
  for (const step of ["approveTransfer", "pickTransfer"]) {
    const data = await gql(fx.url, pharmacist, `mutation($t: ID!) { ${step}(input: { id: $t }) { errors { message } } }`, { t: id });
    assert.deepEqual(data[step].errors, []);
  }
  return { id, number };
}

test("nurse requests, pharmacist approves live, picks FEFO and dispatches, nurse receives one short", async () => {
  const pharmacistContext = await browser.newContext();
  const pharmacist = await pharmacistContext.newPage();
  await signIn(pharmacist, fx.url, "pharmacist");
  await pharmacist.goto(`${fx.url}/#/transfers`);
  await pharmacist.getByRole("heading", { name: "Transfers", level: 1 }).waitFor();
  await pharmacist.getByTestId("live-status").filter({ hasText: "Live" }).waitFor();

  // The nurse asks for 8 packs: FEFO will take the 6 near-expiry ones and 2 fresh ones.
  const nurseContext = await browser.newContext();
  const nurse = await nurseContext.newPage();
  await signIn(nurse, fx.url, "nurse");
  await nurse.goto(`${fx.url}/#/transfers`);
  await nurse.getByRole("link", { name: "New request" }).click();
  await nurse.getByRole("heading", { name: "Request a transfer" }).waitFor();
  assert.equal(await nurse.getByLabel("To (my location)").inputValue(), wardA);
  // The ward's parent, the central pharmacy, is suggested as the source.
  await nurse.locator(`#tr-source option[value="${hospCp}"]`).waitFor({ state: "attached" });
  await nurse.waitForFunction((id) => document.querySelector("#tr-source")?.value === id, hospCp);
  await nurse.getByLabel("Add a product").fill(product.name);
  await nurse.getByRole("button", { name: new RegExp(`^Add ${product.name} ${product.strength}`) }).click();
  const quantity = nurse.getByLabel(new RegExp(`^${product.name} ${product.strength}`));
  // The server's typed field error is shown at the field it names (lines.0.quantity).
  await quantity.fill("0");
  await nurse.getByRole("button", { name: "Send request" }).click();
  await nurse.locator("#line-qty-error-0").filter({ hasText: "quantity must be between 1" }).waitFor();
  assert.equal(await quantity.getAttribute("aria-invalid"), "true");
  await quantity.fill("8");
  await nurse.getByLabel("Needed by").fill(isoDay(1));
  await nurse.getByLabel("Note").fill("Weekend cover");
  assert.deepEqual(await seriousViolations(nurse), []);
  await nurse.evaluate(() => window.scrollTo(0, 0));
  await shot(nurse, "30-transfers-request.png");
  await nurse.getByRole("button", { name: "Send request" }).click();
  await detail(nurse, "REQUESTED").waitFor();
  const number = await nurse.getByTestId("transfer-detail").getAttribute("data-number");
  assert.match(number, /^TR-\d{4}-\d+$/);

  // It appears in the pharmacist's open list without a reload.
  const row = pharmacist.locator(`[data-testid="transfer-list"] li[data-number="${number}"]`);
  await row.waitFor({ timeout: 5_000 });
  assert.match(await row.textContent(), /HOSP-CP → WARD-A/);
  assert.deepEqual(await seriousViolations(pharmacist), []);
  await shot(pharmacist, "31-transfers-list.png");
  await row.getByRole("link").click();
  await detail(pharmacist, "REQUESTED").waitFor();
  const approve = pharmacist.getByTestId("approve-panel");
  assert.equal(await approve.getByLabel(new RegExp(`^${product.name}`)).inputValue(), "8");
  await approve.getByRole("button", { name: "Approve" }).click();
  await detail(pharmacist, "APPROVED").waitFor();

  // The FEFO suggestion: the near-expiry lot first, flagged as such.
  const pick = pharmacist.getByTestId("pick-panel");
  const nearRow = pick.locator(`li[data-batch="${NEAR.batch}"]`);
  await nearRow.waitFor();
  assert.equal(await nearRow.getAttribute("data-suggested"), String(NEAR.packs));
  assert.equal(await nearRow.locator('[data-expiry="near"]').count(), 1);
  assert.equal(await pick.locator(`li[data-batch="${FRESH.batch}"]`).getAttribute("data-suggested"), "2");
  assert.deepEqual(await seriousViolations(pharmacist), []);
  await scrollTo(pharmacist, '[data-testid="pick-panel"]');
  await shot(pharmacist, "32-transfers-pick.png");
  await pick.getByRole("button", { name: "Pick as suggested" }).click();
  await detail(pharmacist, "PICKED").waitFor();

  const nearBefore = await stockOf(fx.url, "HOSP-CP", NEAR.batch);
  const freshBefore = await stockOf(fx.url, "HOSP-CP", FRESH.batch);
  await pharmacist.getByTestId("dispatch-panel").getByRole("button", { name: "Dispatch" }).click();
  await detail(pharmacist, "DISPATCHED").waitFor();
  assert.equal(await stockOf(fx.url, "HOSP-CP", NEAR.batch), nearBefore - 6);
  assert.equal(await stockOf(fx.url, "HOSP-CP", FRESH.batch), freshBefore - 2);
  await pharmacist.getByTestId("transfer-outbox").locator('li[data-status="done"][data-operation="dispatchTransfer"]').waitFor();

  // The nurse's open detail follows live; she receives 5 of the 6 near-expiry packs.
  await detail(nurse, "DISPATCHED").waitFor({ timeout: 5_000 });
  const wardNearBefore = await stockOf(fx.url, "WARD-A", NEAR.batch);
  const wardFreshBefore = await stockOf(fx.url, "WARD-A", FRESH.batch);
  const receive = nurse.getByTestId("receive-panel");
  const nearPick = receive.locator(`li[data-batch="${NEAR.batch}"]`);
  await nearPick.getByLabel("Received").fill("5");
  await nearPick.getByLabel("Note").fill("One pack missing from the box");
  await nearPick.getByTestId("receipt-difference").filter({ hasText: "1 short" }).waitFor();
  assert.deepEqual(await seriousViolations(nurse), []);
  await scrollTo(nurse, '[data-testid="receive-panel"]');
  await shot(nurse, "33-transfers-receive.png");
  await receive.getByRole("button", { name: "Receive into stock" }).click();
  await detail(nurse, "RECEIVED").waitFor();
  const short = nurse.locator('[data-testid="discrepancies"] li[data-kind="SHORT"]');
  await short.waitFor();
  assert.equal(await short.getAttribute("data-quantity"), "1");
  assert.match(await short.textContent(), /One pack missing/);
  assert.equal(await stockOf(fx.url, "WARD-A", NEAR.batch), wardNearBefore + 5);
  assert.equal(await stockOf(fx.url, "WARD-A", FRESH.batch), wardFreshBefore + 2);
  // History: every step, by whom.
  const history = nurse.getByTestId("history");
  for (const action of ["REQUEST", "APPROVE", "PICK", "DISPATCH", "RECEIVE"]) {
    assert.equal(await history.locator(`li[data-action="${action}"]`).count(), 1, action);
  }
  assert.deepEqual(await seriousViolations(nurse), []);
  await scrollTo(nurse, '[data-testid="discrepancies"]');
  await shot(nurse, "34-transfers-received-short.png");
  await pharmacistContext.close();
  await nurseContext.close();
});

test("a dispatch queued offline shows pending and lands exactly once when back online", async () => {
  const { id, number } = await pickedTransfer(3);
  // Service workers blocked so the page's requests are the network's (as in outbox.spec).
  const context = await browser.newContext({ serviceWorkers: "block" });
  const page = await context.newPage();
  await signIn(page, fx.url, "pharmacist");
  await page.goto(`${fx.url}/#/transfers?id=${encodeURIComponent(id)}`);
  await detail(page, "PICKED").waitFor();
  const nearBefore = await stockOf(fx.url, "HOSP-CP", NEAR.batch);
  const freshBefore = await stockOf(fx.url, "HOSP-CP", FRESH.batch);

  await context.setOffline(true);
  await page.getByRole("status").filter({ hasText: "Offline" }).waitFor();
  // Decisions that move no stock are not queued: their buttons say why they are disabled.
  const repick = page.getByTestId("pick-panel").getByRole("button", { name: "Re-pick as suggested" });
  assert.equal(await repick.isDisabled(), true);
  await page.getByTestId("pick-panel").getByText("Offline: picking needs a connection.").waitFor();
  await page.getByTestId("dispatch-panel").getByRole("button", { name: "Dispatch" }).click();
  const outbox = page.getByTestId("transfer-outbox");
  await outbox.locator('li[data-status="pending"][data-operation="dispatchTransfer"]').waitFor();
  assert.equal(await page.getByTestId("dispatch-panel").getByRole("button", { name: "Dispatch queued" }).isDisabled(), true);
  assert.equal((await page.getByTestId("pending-count").textContent()).trim(), "1 pending");
  await scrollTo(page, '[data-testid="transfer-outbox"]');
  await shot(page, "35-transfers-dispatch-offline.png");
  assert.equal((await transferOuts(number)).length, 0);
  assert.equal(await stockOf(fx.url, "HOSP-CP", NEAR.batch), nearBefore);

  await context.setOffline(false);
  // Every replay trigger at once: the outbox coalesces them and the key makes it land once.
  await page.evaluate(() => {
    window.dispatchEvent(new Event("online"));
    document.dispatchEvent(new Event("visibilitychange"));
  });
  await outbox.locator('li[data-status="done"][data-operation="dispatchTransfer"]').waitFor({ timeout: 15_000 });
  await detail(page, "DISPATCHED").waitFor();
  const outs = await transferOuts(number);
  const picked = await page.evaluate(
    () => document.querySelectorAll('[data-testid="transfer-detail"] li[data-batch]').length,
  );
  assert.ok(outs.length >= 1);
  assert.equal(outs.length, picked, "one TRANSFER_OUT per pick, once");
  assert.equal(outs.reduce((n, m) => n + Math.abs(m.quantity), 0), 3);
  const left = (await stockOf(fx.url, "HOSP-CP", NEAR.batch)) + (await stockOf(fx.url, "HOSP-CP", FRESH.batch));
  assert.equal(left, nearBefore + freshBefore - 3);
  await context.close();
});

test("refusals show the server's message: reject without a reason, a receipt after someone else's", async () => {
  // Reject with no reason: the server's typed error is shown at the reason field.
  const nurseToken = await token(fx.url, "nurse");
  const { requestTransfer } = await gql(
    fx.url,
    nurseToken,
    `mutation($s: ID!, $d: ID!, $l: [TransferLineInput!]!) { requestTransfer(input: { source: $s, destination: $d, lines: $l }) { transfer { id number } } }`,
    { s: hospCp, d: wardA, l: [{ product: product.id, quantity: 1 }] },
  );
  const context = await browser.newContext({ serviceWorkers: "block" });
  const page = await context.newPage();
  await signIn(page, fx.url, "pharmacist");
  await page.goto(`${fx.url}/#/transfers?id=${encodeURIComponent(requestTransfer.transfer.id)}`);
  await detail(page, "REQUESTED").waitFor();
  const reject = page.getByTestId("reject-panel");
  await reject.getByRole("button", { name: "Reject" }).click();
  await reject.locator("#reject-reason-error").filter({ hasText: "reason must not be empty" }).waitFor();
  assert.equal(await reject.getByLabel("Why not?").getAttribute("aria-invalid"), "true");
  assert.deepEqual(await seriousViolations(page), []);
  await reject.getByLabel("Why not?").fill("Ward A has enough until Monday");
  await reject.getByRole("button", { name: "Reject" }).click();
  await detail(page, "REJECTED").waitFor();
  await page.getByTestId("rejection-reason").filter({ hasText: "enough until Monday" }).waitFor();
  await context.close();

  // The nurse queues a receipt offline; meanwhile the pharmacist receives it: the server
  // refuses the nurse's replay, and the detail shows why.
  const { id } = await pickedTransfer(1);
  const pharmacistToken = await token(fx.url, "pharmacist");
  await gql(fx.url, pharmacistToken, `mutation($t: ID!) { dispatchTransfer(input: { id: $t }) { errors { message } } }`, { t: id });
  const nurseContext = await browser.newContext({ serviceWorkers: "block" });
  const nurse = await nurseContext.newPage();
  await signIn(nurse, fx.url, "nurse");
  await nurse.goto(`${fx.url}/#/transfers?id=${encodeURIComponent(id)}`);
  await detail(nurse, "DISPATCHED").waitFor();
  await nurseContext.setOffline(true);
  await nurse.getByRole("status").filter({ hasText: "Offline" }).waitFor();
  await nurse.getByTestId("receive-panel").getByRole("button", { name: "Receive into stock" }).click();
  await nurse.getByTestId("transfer-outbox").locator('li[data-status="pending"]').waitFor();
  const { receiveTransfer } = await gql(
    fx.url,
    pharmacistToken,
    `mutation($t: ID!) { receiveTransfer(input: { id: $t }) { errors { message } } }`,
    { t: id },
  );
  assert.deepEqual(receiveTransfer.errors, []);
  await nurseContext.setOffline(false);
  const refused = nurse.getByTestId("transfer-outbox").locator('li[data-status="refused"]');
  await refused.waitFor({ timeout: 15_000 });
  assert.match(await refused.getByTestId("refusal").textContent(), /RECEIVED/);
  await detail(nurse, "RECEIVED").waitFor();
  assert.deepEqual(await seriousViolations(nurse), []);
  await refused.getByRole("button", { name: "Dismiss" }).click();
  await refused.waitFor({ state: "detached" });
  await nurseContext.close();
});
