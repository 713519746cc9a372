// The admin-side screens at phone size: Users (create with scope, field errors, password reset,
// deactivation), Supervision (a batch's gamma and its explanation), Audit (chain verification,
// paging, filters, event detail) and Suppliers (performance and detail). Every figure the UI
// shows is compared with what the server answers, and axe finds nothing serious on any screen.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { PHONE, gql, launch, seriousViolations, signIn, startServer, token } from "./lib.mjs";

let fx;
let browser;
let admin; // the admin's page, kept across the user tests
const NEW_USER = { username: `nurse.${Date.now().toString(36)}`, fullName: "Nina Newcomer", password: "first-password-1" };
const NEW_PASSWORD = "second-password-2";
const HOSPITAL = "St. Aurelia General Hospital";

before(async () => {
  fx = await startServer();
  browser = await launch({});
});

after(async () => {
  await browser?.close();
  await fx?.stop();
});

async function phonePage() {
  const context = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 1, serviceWorkers: "block" });
  return context.newPage();
}

async function as(username) {
  const accessToken = await token(fx.url, username);
  return (query, variables) => gql(fx.url, accessToken, query, variables);
}

async function assertAxeClean(page, screen) {
  await page.waitForLoadState("networkidle").catch(() => undefined);
  const violations = await seriousViolations(page);
  assert.deepEqual(violations, [], `${screen}: ${JSON.stringify(violations, null, 1)}`);
}

/** POST /auth/token with a password; the HTTP status (200 when signing in works). */
async function signInStatus(username, password) {
  const response = await fetch(`${fx.url}/auth/token`, {
    method: "POST",
    body: new URLSearchParams({ grant_type: "password", username, password }),
  });
  return response.status;
}

/** signIn() with a password other than the demo one. */
async function signInWith(page, username, password) {
  await page.goto(fx.url);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("navigation", { name: "Screens" }).waitFor();
}

async function fillNewUser(page, user) {
  const form = page.getByTestId("new-user-form");
  await form.getByLabel("Username").fill(user.username);
  await form.getByLabel("Full name").fill(user.fullName);
  await form.getByLabel("Initial password").fill(user.password);
  await form.getByRole("group", { name: "Roles" }).getByLabel("Nurse", { exact: true }).check();
  await form.getByLabel("Organisation").selectOption({ label: HOSPITAL });
  await form.getByRole("group", { name: /Locations in scope/ }).getByLabel(/^WARD-B/).check();
  return form;
}

test("admin creates a nurse in the UI; she signs in and sees only a nurse's screens", async () => {
  admin = await phonePage();
  await signIn(admin, fx.url, "admin");
  await admin.goto(`${fx.url}/#/users`);
  await admin.locator('li[data-user="admin"]').waitFor();
  await assertAxeClean(admin, "users");

  await admin.getByRole("button", { name: "New user" }).click();
  const form = await fillNewUser(admin, NEW_USER);
  await assertAxeClean(admin, "users: new user form");
  await form.getByRole("button", { name: "Create user" }).click();
  const item = admin.locator(`li[data-user="${NEW_USER.username}"]`);
  await item.waitFor();

  // What the server stored is what was entered.
  const { users } = await (await as("admin"))(
    `{ users(first: 100) { edges { node { username fullName active roles organisation { name } locations { code } } } } }`,
  );
  const stored = users.edges.map((e) => e.node).find((u) => u.username === NEW_USER.username);
  assert.deepEqual(stored, {
    username: NEW_USER.username,
    fullName: NEW_USER.fullName,
    active: true,
    roles: ["NURSE"],
    organisation: { name: HOSPITAL },
    locations: [{ code: "WARD-B" }],
  });
  assert.match(await item.innerText(), /WARD-B/);

  // The new nurse, in her own browser: a nurse's tabs, nothing administrative.
  const nurse = await phonePage();
  await signInWith(nurse, NEW_USER.username, NEW_USER.password);
  const tabs = await nurse.getByRole("navigation", { name: "Screens" }).getByRole("link").allInnerTexts();
  assert.deepEqual(tabs.map((t) => t.trim()), ["Scan", "Stock", "Alerts", "More"]);
  await nurse.goto(`${fx.url}/#/more`);
  const more = await nurse.getByRole("navigation", { name: "More screens" }).getByRole("link").allInnerTexts();
  assert.deepEqual(more.map((t) => t.trim()), ["Transfers", "Counts"]);
  // Her scope is the one location the admin ticked.
  await nurse.goto(`${fx.url}/#/stock`);
  const options = await nurse.getByLabel("Location").locator("option").allInnerTexts();
  assert.equal(options.length, 1);
  assert.match(options[0], /^WARD-B/);
  // And the users screen is not hers, even by address.
  await nurse.goto(`${fx.url}/#/users`);
  await nurse.getByRole("heading", { name: "More" }).waitFor();
  assert.equal(await nurse.getByRole("heading", { name: "Users" }).count(), 0);
  await nurse.context().close();
});

test("a duplicate username is shown as the server's field error next to Username", async () => {
  await admin.getByRole("button", { name: "New user" }).click();
  const form = await fillNewUser(admin, { ...NEW_USER, fullName: "Someone Else" });
  await form.getByRole("button", { name: "Create user" }).click();
  const fieldError = form.locator('[data-field-error="new-user-username"]');
  await fieldError.waitFor();
  // The same input straight to the server: the UI shows exactly its typed error for `username`.
  const { createUser } = await (await as("admin"))(
    `mutation($input: CreateUserInput!) { createUser(input: $input) { user { id } errors { code field message } } }`,
    { input: { username: NEW_USER.username, fullName: "Someone Else", password: NEW_USER.password, roles: ["NURSE"] } },
  );
  assert.equal(createUser.user, null);
  const expected = createUser.errors.find((e) => e.field === "username");
  assert.equal(expected.code, "DUPLICATE");
  assert.equal((await fieldError.innerText()).trim(), expected.message);
  assert.equal(await form.getByLabel("Username").getAttribute("aria-invalid"), "true");
  await assertAxeClean(admin, "users: field error");
  await form.getByRole("button", { name: "Cancel" }).click();
});

test("admin resets the password, then deactivates: the user can no longer sign in", async () => {
  const item = admin.locator(`li[data-user="${NEW_USER.username}"]`);
  await item.getByRole("button", { name: `Reset password of ${NEW_USER.username}` }).click();
  await item.getByLabel("New password").fill(NEW_PASSWORD);
  await item.getByRole("button", { name: "Set password" }).click();
  await item.getByRole("status").filter({ hasText: "Password changed" }).waitFor();
  assert.equal(await signInStatus(NEW_USER.username, NEW_USER.password), 400);
  assert.equal(await signInStatus(NEW_USER.username, NEW_PASSWORD), 200);

  await item.getByRole("button", { name: `Deactivate ${NEW_USER.username}` }).click();
  await assertAxeClean(admin, "users: confirm deactivation");
  await item.getByRole("button", { name: "Yes, deactivate" }).click();
  await admin.locator(`li[data-user="${NEW_USER.username}"][data-active="false"]`).waitFor();
  assert.notEqual(await signInStatus(NEW_USER.username, NEW_PASSWORD), 200);

  // Through the sign-in form too: an error, no screens.
  const page = await phonePage();
  await page.goto(fx.url);
  await page.getByLabel("Username").fill(NEW_USER.username);
  await page.getByLabel("Password").fill(NEW_PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").waitFor();
  assert.equal(await page.getByRole("navigation", { name: "Screens" }).count(), 0);
  await page.context().close();
});

test("regulator opens a batch: the gamma, status and parts are the server's", async () => {
  const page = await phonePage();
  await signIn(page, fx.url, "regulator");
  await page.goto(`${fx.url}/#/supervision`);
  const call = await as("regulator");
  const { supervisionReport } = await call(`{ supervisionReport(first: 50) { edges { node { approvalNumber batchNumber status gamma } } } }`);
  const listed = supervisionReport.edges.map((e) => e.node);
  assert.ok(listed.length > 0, "the fixture has batches that need attention");
  const list = page.getByTestId("supervision-list");
  await list.locator("li").first().waitFor();
  assert.equal(await list.locator("li").count(), listed.length);
  await assertAxeClean(page, "supervision");

  const batch = listed[0];
  await list.locator(`li[data-approval="${batch.approvalNumber}"][data-batch="${batch.batchNumber}"] a`).click();
  const gamma = page.getByTestId("gamma");
  await gamma.waitFor();
  const { supervision } = await call(
    `query($a: String!, $b: String!) { supervision(approvalNumber: $a, batchNumber: $b) {
       gamma status totalInput totalOutput systemInventory explanation { quantity } constituents { inventory organisation { name } } } }`,
    { a: batch.approvalNumber, b: batch.batchNumber },
  );
  assert.equal(Number(await gamma.getAttribute("data-value")), supervision.gamma);
  assert.match(await gamma.innerText(), new RegExp(`= ${supervision.gamma}$`));
  assert.equal(await page.getByTestId("batch-status").getAttribute("data-status"), supervision.status);
  for (const key of ["totalInput", "totalOutput", "systemInventory"]) {
    assert.equal(Number(await page.locator(`[data-metric="${key}"]`).getAttribute("data-value")), supervision[key], key);
  }
  // The status is written out, not only coloured.
  assert.ok((await page.getByTestId("batch-status").innerText()).length > 10);
  const parts = page.getByTestId("explanation").locator("li");
  assert.equal(await parts.count(), supervision.explanation.length);
  if (supervision.explanation.length) {
    const sum = supervision.explanation.reduce((n, p) => n + p.quantity, 0);
    assert.equal(Number(await page.getByTestId("parts-sum").getAttribute("data-value")), sum);
  }
  const constituents = page.getByTestId("constituents").locator("li[data-organisation]");
  assert.deepEqual(
    await constituents.evaluateAll((els) => els.map((el) => [el.dataset.organisation, Number(el.dataset.inventory)])),
    supervision.constituents.map((c) => [c.organisation.name, c.inventory]),
  );
  await assertAxeClean(page, "supervision: batch");
  await page.context().close();
});

test("auditor verifies the chain, pages the trail and opens a user change", async () => {
  const page = await phonePage();
  await signIn(page, fx.url, "auditor");
  await page.goto(`${fx.url}/#/audit`);
  const list = page.getByTestId("audit-list");
  await list.locator("li").first().waitFor();
  const call = await as("auditor");

  await page.getByRole("button", { name: "Verify chain" }).click();
  const integrity = page.locator('[data-testid="integrity"][data-ok]');
  await integrity.waitFor();
  const { auditIntegrity } = await call(`{ auditIntegrity { ok eventsChecked } }`);
  assert.equal(auditIntegrity.ok, true);
  assert.equal(await integrity.getAttribute("data-ok"), "true");
  assert.equal(Number(await integrity.getAttribute("data-checked")), auditIntegrity.eventsChecked);
  assert.match(await integrity.innerText(), /OK/);

  // Newest first, 50 a page; "Load more" follows the cursor.
  const { auditTrail } = await call(`{ auditTrail(first: 100) { edges { node { seq } } } }`);
  const seqs = auditTrail.edges.map((e) => e.node.seq);
  assert.ok(seqs.length > 50, "enough events for a second page");
  const shown = () => list.locator("li").evaluateAll((els) => els.map((el) => Number(el.dataset.seq)));
  assert.deepEqual(await shown(), seqs.slice(0, 50));
  await page.getByRole("button", { name: "Load more" }).click();
  await list.locator("li").nth(50).waitFor();
  assert.deepEqual((await shown()).slice(0, 100), seqs.slice(0, 100));
  await assertAxeClean(page, "audit");

  // Filter by action: the same events as the server's filtered trail.
  await page.locator("summary", { hasText: "Filters" }).click();
  await page.getByLabel("Action").fill("user.update");
  await page.getByRole("button", { name: "Apply filters" }).click();
  const { auditTrail: updates } = await call(
    `{ auditTrail(first: 50, action: "user.update") { edges { node { seq before after } } } }`,
  );
  const expected = updates.edges.map((e) => e.node);
  assert.ok(expected.length >= 1);
  await page.waitForFunction((n) => {
    const items = document.querySelectorAll('[data-testid="audit-list"] li');
    return items.length === n && [...items].every((li) => li.dataset.action === "user.update");
  }, expected.length);
  assert.deepEqual(await shown(), expected.map((e) => e.seq));

  // The newest one (the deactivation) opens to the fields that changed.
  const first = list.locator("li").first();
  await first.locator("summary").first().click();
  const rows = first.getByTestId("changes").locator("tbody tr");
  const changed = Object.keys({ ...expected[0].before, ...expected[0].after })
    .filter((k) => JSON.stringify(expected[0].before?.[k]) !== JSON.stringify(expected[0].after?.[k]))
    .sort();
  assert.ok(changed.includes("active"));
  assert.deepEqual(await rows.evaluateAll((els) => els.map((el) => el.dataset.field)), changed);
  await assertAxeClean(page, "audit: event detail");
  await page.context().close();
});

/** Give MedDistri a contact, a contract and one received order, through the API. */
async function seedSupplierHistory() {
  const pharmacist = await as("pharmacist");
  const supplierUser = await as("supplier");
  const adminCall = await as("admin");
  const E = "errors { code field message }";
  const ok = (payload) => {
    const [value] = Object.values(payload);
    assert.deepEqual(value.errors, [], JSON.stringify(value.errors));
    return value;
  };
  const { suppliers } = await pharmacist(`{ suppliers(first: 20) { edges { node { id name } } } }`);
  const supplier = suppliers.edges.map((e) => e.node).find((s) => s.name === "MedDistri Wholesale");
  const { products } = await pharmacist(`{ products(first: 1, search: "Paracetamol") { edges { node { id } } } }`);
  const product = products.edges[0].node.id;
  const { locations } = await adminCall(`{ locations(first: 100) { edges { node { id code } } } }`);
  const at = Object.fromEntries(locations.edges.map((e) => [e.node.code, e.node.id]));
  const today = new Date().toISOString().slice(0, 10);
  const expiry = `${new Date().getFullYear() + 2}-06-30`;
  const contract = `CT-UI-${Date.now().toString(36)}`;
  ok(await pharmacist(`mutation($i: CreateContractInput!) { createContract(input: $i) { ${E} } }`, {
    i: { supplier: supplier.id, reference: contract, validFrom: today, validUntil: expiry, lines: [{ product, unitPrice: "2.00", leadTimeDays: 3 }] },
  }));
  ok(await pharmacist(`mutation($i: SupplierContactInput!) { addSupplierContact(input: $i) { ${E} } }`, {
    i: { supplier: supplier.id, name: "Mia Orders", role: "Order desk", email: "orders@meddistri.example", phone: "+41 61 555 01 02" },
  }));
  const order = ok(await pharmacist(`mutation($i: CreatePurchaseOrderInput!) { createPurchaseOrder(input: $i) { purchaseOrder { id number lines { id } } ${E} } }`, {
    i: { supplier: supplier.id, deliverTo: at["HOSP-CP"], lines: [{ product, quantity: 10, unitPrice: "2.20" }] },
  })).purchaseOrder;
  ok(await pharmacist(`mutation($o: ID!) { submitPurchaseOrder(input: { id: $o }) { ${E} } }`, { o: order.id }));
  ok(await supplierUser(`mutation($o: ID!) { acknowledgePurchaseOrder(input: { id: $o }) { ${E} } }`, { o: order.id }));
  ok(await adminCall(`mutation($i: ReceiveStockInput!) { receiveStock(input: $i) { ${E} } }`, {
    i: { location: at["WHS-DC"], quantity: 20, idempotencyKey: `seed-${contract}`, product, batchNumber: "BT-SUP", expiryDate: expiry },
  }));
  const shipment = ok(await supplierUser(`mutation($i: CreateShipmentInput!) { createShipment(input: $i) { shipment { id lines { id } } ${E} } }`, {
    i: { purchaseOrder: order.id, lines: [{ purchaseOrderLine: order.lines[0].id, batchNumber: "BT-SUP", expiryDate: expiry, quantity: 8 }] },
  })).shipment;
  for (const status of ["DISPATCHED", "DELIVERED"]) {
    ok(await supplierUser(`mutation($s: ID!, $st: ShipmentStatus!) { updateShipmentStatus(input: { id: $s, status: $st }) { ${E} } }`, { s: shipment.id, st: status }));
  }
  ok(await pharmacist(`mutation($s: ID!, $l: ID, $k: String) { receiveShipmentLine(input: { id: $s, line: $l, quantity: 8, idempotencyKey: $k }) { ${E} } }`, {
    s: shipment.id, l: shipment.lines[0].id, k: `rcv-${contract}`,
  }));
  ok(await pharmacist(`mutation($s: ID!) { completeShipmentReceipt(input: { id: $s }) { ${E} } }`, { s: shipment.id }));
  return { supplier, contract, order: order.number };
}

test("suppliers: the list and the detail show the server's performance figures", async () => {
  const seeded = await seedSupplierHistory();
  const page = await phonePage();
  await signIn(page, fx.url, "pharmacist");
  await page.goto(`${fx.url}/#/suppliers`);
  const item = page.locator(`li[data-supplier="${seeded.supplier.name}"]`);
  await item.waitFor();
  await assertAxeClean(page, "suppliers");
  await item.getByRole("link").click();
  await page.getByRole("heading", { name: seeded.supplier.name }).waitFor();
  await page.getByTestId("performance").locator("[data-metric]").first().waitFor();

  const { supplierPerformance: perf } = await (await as("pharmacist"))(
    `query($s: ID!) { supplierPerformance(supplier: $s) {
       shipmentsReceived onTimeDeliveryRate fillRate averageLeadTimeDays leadTimeP90Days discrepancyRate priceVariancePercent } }`,
    { s: seeded.supplier.id },
  );
  assert.equal(perf.shipmentsReceived, 1);
  assert.ok(perf.fillRate > 0 && perf.priceVariancePercent !== null, JSON.stringify(perf));
  for (const key of ["onTimeDeliveryRate", "fillRate", "averageLeadTimeDays", "leadTimeP90Days", "discrepancyRate", "priceVariancePercent"]) {
    const shown = await page.getByTestId("performance").locator(`[data-metric="${key}"]`).getAttribute("data-value");
    assert.equal(shown === "" ? null : Number(shown), perf[key], key);
  }
  const fill = await page.locator('[data-metric="fillRate"]').innerText();
  assert.match(fill, new RegExp(`^${Math.round(perf.fillRate * 100)} %`));
  await page.locator(`[data-contract="${seeded.contract}"]`).filter({ hasText: "Valid today" }).waitFor();
  const { purchaseOrders } = await (await as("pharmacist"))(
    `query($s: ID) { purchaseOrders(first: 20, supplier: $s) { edges { node { number status } } } }`,
    { s: seeded.supplier.id },
  );
  const orders = purchaseOrders.edges.map((e) => e.node);
  assert.deepEqual(
    await page.getByTestId("orders").locator("li").evaluateAll((els) => els.map((el) => ({ number: el.dataset.order, status: el.dataset.status }))),
    orders,
  );
  assert.ok(orders.some((o) => o.number === seeded.order));
  await page.getByRole("link", { name: "orders@meddistri.example" }).waitFor();
  await assertAxeClean(page, "suppliers: detail");
  await page.context().close();
});
