// Reorder on a phone: a pharmacist sees the central pharmacy's purchase suggestions (the server's,
// with the numbers behind them), ticks one and gets a DRAFT purchase order for exactly that; a
// budget cuts the suggestions; a ward shows the transfers the server suggests; nurses have no
// Reorder screen; axe finds nothing serious. The server is seeded with 10 weeks of demo history
// (consumption to reorder from) and the test adds the contracts.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { SCREENSHOTS, gql, launch, seriousViolations, signIn, startServer, token } from "./lib.mjs";

let fx;
let browser;
let pharmacist;
let hospCp;
let wardA;
let products;
let wardProduct;

const SUGGESTIONS = `query($location: ID!) {
  reorderSuggestions(location: $location) {
    kind suggestions { quantity why product { id name strength } supplier { id } }
  }
}`;

function isoDay(offset) {
  const d = new Date();
  d.setDate(d.getDate() + offset);
  return d.toISOString().slice(0, 10);
}

async function locationId(accessToken, code) {
  const { locations } = await gql(fx.url, accessToken, `query($code: String) { locations(first: 5, search: $code) { edges { node { id code } } } }`, { code });
  return locations.edges.map((e) => e.node).find((l) => l.code === code).id;
}

before(async () => {
  fx = await startServer({ args: ["--history-days", "70"] });
  browser = await launch({});
  const admin = await token(fx.url, "admin");
  pharmacist = await token(fx.url, "pharmacist");
  hospCp = await locationId(admin, "HOSP-CP");
  wardA = await locationId(admin, "WARD-A");
  // The hospital's three most used products, under a contract with the wholesaler from today.
  const { topConsumption } = await gql(fx.url, pharmacist, `{ topConsumption(weeks: 8, first: 3) { product { id name strength } } }`);
  products = topConsumption.map((c) => c.product);
  assert.equal(products.length, 3, "the seeded demo has consumption");
  const { suppliers } = await gql(fx.url, admin, `{ suppliers(first: 20) { edges { node { id name } } } }`);
  const wholesaler = suppliers.edges.map((e) => e.node).find((s) => /MedDistri/.test(s.name));
  const { me } = await gql(fx.url, pharmacist, `{ me { organisation { id } } }`);
  const { createContract } = await gql(
    fx.url,
    admin,
    `mutation($input: CreateContractInput!) { createContract(input: $input) { errors { code message } } }`,
    {
      input: {
        supplier: wholesaler.id,
        buyer: me.organisation.id,
        reference: "RO-2026",
        validFrom: isoDay(-30),
        validUntil: isoDay(300),
        lines: products.map((p, i) => ({ product: p.id, unitPrice: `${3 + i}.50`, leadTimeDays: 7, minimumOrderQuantity: 1 })),
      },
    },
  );
  assert.deepEqual(createContract.errors, []);
  // The pharmacy's own stock of them is written off, so what the wards use must be bought.
  for (const p of products) {
    const { stockLevels } = await gql(
      fx.url,
      pharmacist,
      `query($location: ID, $product: ID) { stockLevels(first: 50, location: $location, product: $product) { edges { node { quantity lot { id } } } } }`,
      { location: hospCp, product: p.id },
    );
    for (const { node } of stockLevels.edges) {
      const { disposeStock } = await gql(
        fx.url,
        pharmacist,
        `mutation($input: DisposeStockInput!) { disposeStock(input: $input) { errors { code message } } }`,
        { input: { location: hospCp, lot: node.lot.id, quantity: node.quantity, reason: "DAMAGED", idempotencyKey: `ro-${node.lot.id}` } },
      );
      assert.deepEqual(disposeStock.errors, []);
    }
  }
  // Ward A's own stock of one product it uses (not a contract one: the pharmacy still holds
  // it) is written off too, so the ward certainly needs a transfer of it from the pharmacy.
  const { topConsumption: wardUse } = await gql(
    fx.url,
    pharmacist,
    `query($location: ID) { topConsumption(location: $location, weeks: 8, first: 10) { product { id name strength } } }`,
    { location: wardA },
  );
  for (const { product } of wardUse.filter((c) => !products.some((p) => p.id === c.product.id))) {
    const central = await stockOf(hospCp, product.id);
    if (central.reduce((n, s) => n + s.quantity, 0) < 20) continue;
    for (const node of await stockOf(wardA, product.id)) await dispose(wardA, node);
    wardProduct = product;
    break;
  }
  assert.ok(wardProduct, "a product Ward A uses and the pharmacy stocks");
});

async function stockOf(location, product) {
  const { stockLevels } = await gql(
    fx.url,
    pharmacist,
    `query($location: ID, $product: ID) { stockLevels(first: 50, location: $location, product: $product) { edges { node { quantity lot { id } } } } }`,
    { location, product },
  );
  return stockLevels.edges.map((e) => e.node).filter((n) => n.quantity > 0);
}

async function dispose(location, node) {
  const { disposeStock } = await gql(
    fx.url,
    pharmacist,
    `mutation($input: DisposeStockInput!) { disposeStock(input: $input) { errors { code message } } }`,
    { input: { location, lot: node.lot.id, quantity: node.quantity, reason: "DAMAGED", idempotencyKey: `ro-w-${node.lot.id}` } },
  );
  assert.deepEqual(disposeStock.errors, []);
}

after(async () => {
  await browser?.close();
  await fx?.stop();
});

async function openReorder(page, code) {
  await page.goto(`${fx.url}/#/reorder`);
  await page.getByRole("heading", { name: "Reorder" }).waitFor();
  const picker = page.getByLabel("Location");
  // the picker appears once the user's locations have loaded
  await picker.locator("option").filter({ hasText: code }).first().waitFor({ state: "attached" });
  const label = (await picker.locator("option").allInnerTexts()).find((t) => t.startsWith(code));
  assert.ok(label, `${code} is among the pharmacist's locations`);
  await picker.selectOption({ label });
  await page.getByTestId("reorder-kind").waitFor();
}

test("a pharmacist ticks a suggestion and gets a draft purchase order for it", async () => {
  const { reorderSuggestions: server } = await gql(fx.url, pharmacist, SUGGESTIONS, { location: hospCp });
  assert.equal(server.kind, "PURCHASE");
  const ours = server.suggestions.filter((s) => products.some((p) => p.id === s.product.id));
  assert.ok(ours.length >= 1, "the contract products need ordering");
  const chosen = ours[0];

  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, fx.url, "pharmacist");
  await page.goto(`${fx.url}/#/more`);
  await page.getByRole("navigation", { name: "More screens" }).getByRole("link", { name: "Reorder" }).waitFor();
  await openReorder(page, "HOSP-CP");
  const items = page.getByTestId("reorder-item");
  await items.first().waitFor();
  assert.equal(await items.count(), server.suggestions.length, "the screen lists the server's suggestions");

  const name = `${chosen.product.name} ${chosen.product.strength}`;
  const item = items.filter({ hasText: name }).first();
  assert.match(await item.innerText(), new RegExp(`Suggested ${chosen.quantity} pack`));
  await item.getByText("Why", { exact: true }).click();
  const why = await item.getByTestId("reorder-why").innerText();
  assert.match(why, /Reorder point/);
  assert.match(why, new RegExp(String(Math.round(chosen.why.on_hand))));
  await page.screenshot({ path: join(SCREENSHOTS, "reorder.png"), fullPage: true });
  assert.deepEqual(await seriousViolations(page), []);

  // Nothing ticked: nothing to create. Tick the one, create.
  const create = page.getByTestId("reorder-create");
  assert.equal(await create.isDisabled(), true);
  await item.getByRole("checkbox").check();
  assert.match(await create.innerText(), /1 line/);
  await create.click();
  const created = page.getByTestId("reorder-created");
  await created.waitFor();
  assert.match(await created.innerText(), /Draft purchase orders created/);

  const { purchaseOrders } = await gql(
    fx.url,
    pharmacist,
    `query($to: ID) { purchaseOrders(first: 10, deliverTo: $to, status: DRAFT) { edges { node { number lines { quantity product { id } } } } } }`,
    { to: hospCp },
  );
  const orders = purchaseOrders.edges.map((e) => e.node);
  assert.equal(orders.length, 1);
  assert.deepEqual(
    orders[0].lines.map((l) => [l.product.id, l.quantity]),
    [[chosen.product.id, chosen.quantity]],
  );
  assert.match(await created.innerText(), new RegExp(orders[0].number));
  // The number links to the supplier's screen, which lists the new draft.
  const link = created.getByRole("link", { name: orders[0].number });
  assert.match(await link.getAttribute("href"), /^#\/suppliers\?id=/);
  await link.click();
  await page.locator(`[data-order="${orders[0].number}"][data-status="DRAFT"]`).waitFor();
  await openReorder(page, "HOSP-CP");
  // On order now: the product is no longer suggested.
  await page.waitForFunction(
    (n) => ![...document.querySelectorAll('[data-testid="reorder-item"]')].some((e) => e.textContent.includes(n)),
    name,
    { timeout: 15_000 },
  );
  await context.close();
});

test("a budget cuts the suggestions, and a ward shows the server's transfer suggestions", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, fx.url, "pharmacist");
  await openReorder(page, "HOSP-CP");
  const { reorderSuggestions: server } = await gql(fx.url, pharmacist, SUGGESTIONS, { location: hospCp });
  assert.ok(server.suggestions.length >= 1);
  await page.getByLabel(/^Budget/).fill("1");
  await page.getByRole("button", { name: "Fit to budget" }).click();
  const note = page.getByTestId("reorder-plan");
  await note.waitFor();
  assert.match(await note.innerText(), /The budget binds/);
  // Within a budget of 1 nothing costing more than that is left ticked.
  const create = page.getByTestId("reorder-create");
  const label = await create.innerText();
  const spend = Number((label.match(/, ([\d.,]+)\)/)?.[1] ?? "0").replace(/,/g, ""));
  assert.ok(spend <= 1, `the ticked lines cost ${spend}`);

  const { reorderSuggestions: ward } = await gql(fx.url, pharmacist, SUGGESTIONS, { location: wardA });
  assert.equal(ward.kind, "TRANSFER");
  // Ward A has none of wardProduct left: the server suggests topping it up from the pharmacy.
  const topUp = ward.suggestions.find((s) => s.product.id === wardProduct.id);
  assert.ok(topUp && topUp.quantity > 0, JSON.stringify(ward.suggestions.map((s) => s.product.name)));
  assert.equal(topUp.why.on_hand, 0);
  await openReorder(page, "WARD-A");
  assert.match(await page.getByTestId("reorder-kind").innerText(), /Topped up from HOSP-CP/);
  const items = page.getByTestId("reorder-item");
  await items.first().waitFor();
  assert.equal(await items.count(), ward.suggestions.length);
  assert.equal(await page.getByTestId("reorder-empty").count(), 0);
  const item = items.filter({ hasText: `${wardProduct.name} ${wardProduct.strength}` }).first();
  await item.getByRole("checkbox").check();
  await page.getByTestId("reorder-create").click();
  const created = page.getByTestId("reorder-created");
  await created.waitFor();
  assert.match(await created.innerText(), /Transfer requests sent/);
  const { transfers } = await gql(
    fx.url,
    pharmacist,
    `query($to: ID) { transfers(first: 20, location: $to, status: REQUESTED) { edges { node { id number destination { id } lines { requestedQuantity product { id } } } } } }`,
    { to: wardA },
  );
  const requested = transfers.edges.map((e) => e.node).filter((t) => t.destination.id === wardA && t.lines.some((l) => l.product.id === wardProduct.id));
  assert.equal(requested.length, 1);
  assert.deepEqual(requested[0].lines.map((l) => [l.product.id, l.requestedQuantity]), [[wardProduct.id, topUp.quantity]]);
  // The transfer's number links to its screen.
  await created.getByRole("link", { name: requested[0].number }).click();
  await page.locator(`[data-testid="transfer-detail"][data-number="${requested[0].number}"]`).waitFor();
  assert.deepEqual(await seriousViolations(page), []);
  await context.close();
});

test("a nurse has no Reorder screen, not even by address", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, fx.url, "nurse");
  await page.goto(`${fx.url}/#/more`);
  const more = await page.getByRole("navigation", { name: "More screens" }).getByRole("link").allInnerTexts();
  assert.ok(!more.map((t) => t.trim()).includes("Reorder"), more.join(", "));
  await page.goto(`${fx.url}/#/reorder`);
  await page.getByRole("heading", { name: "More" }).waitFor();
  assert.equal(await page.getByRole("heading", { name: "Reorder" }).count(), 0);
  await context.close();
});
