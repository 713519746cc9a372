// Controlled drugs in the PWA (issue 15 item 2, issue 14's register): a controlled dispense
// needs a patient reference and a confirmation naming drug, strength and quantity; wasting one
// opens the witness dialog, where a second person signs with their own password; the
// pharmacist's Controlled register shows the running balance and the witness. axe finds no
// violations; 360 px and 1024 px screenshots of the new screens.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { AXE_PATH, PASSWORD, SCREENSHOTS, gql, launch, signIn, startServer, stockOf, token } from "./lib.mjs";

const TABLET = { width: 1024, height: 768 };
const BATCH = "CD-OXY-01";
let fx;
let browser;
let oxy;
let wardId;

/** Every axe violation, whatever its impact ("no violations" means none at all). */
async function violations(page) {
  await page.evaluate(readFileSync(AXE_PATH, "utf8"));
  return page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const outcome = await axe.run(document, { resultTypes: ["violations"] });
    return outcome.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
  });
}

async function shoot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: false });
}

before(async () => {
  fx = await startServer();
  browser = await launch();
  // 12 packs of oxycodone at WARD-A, received by the pharmacist.
  const pharmacist = await token(fx.url, "pharmacist");
  const { products } = await gql(fx.url, pharmacist, `{ products(first: 5, search: "Oxycodone") { edges { node { id name strength gtins controlled } } } }`);
  oxy = products.edges[0].node;
  assert.ok(oxy.controlled, "the demo's oxycodone is a controlled drug");
  const { locations } = await gql(fx.url, pharmacist, `{ locations(first: 5, search: "WARD-A") { edges { node { id code } } } }`);
  const ward = locations.edges.map((e) => e.node).find((l) => l.code === "WARD-A");
  wardId = ward.id;
  const expiry = new Date(Date.now() + 400 * 86_400_000).toISOString().slice(0, 10);
  const { receiveStock } = await gql(
    fx.url,
    pharmacist,
    `mutation($i: ReceiveStockInput!) { receiveStock(input: $i) { errors { code message } } }`,
    { i: { location: ward.id, quantity: 12, product: oxy.id, batchNumber: BATCH, expiryDate: expiry, idempotencyKey: "cd-spec-receive" } },
  );
  assert.deepEqual(receiveStock.errors, []);
});

after(async () => {
  await browser?.close();
  await fx?.stop();
});

async function lookUp(page) {
  await page.getByLabel("GTIN / EAN").fill(oxy.gtins[0]);
  await page.getByLabel("Batch").fill(BATCH);
  await page.getByRole("button", { name: "Look up pack" }).click();
  const result = page.getByTestId("scan-result");
  await result.getByRole("heading", { name: `${oxy.name} ${oxy.strength}` }).waitFor();
  return result;
}

test("a controlled dispense needs a patient reference and a confirmation naming drug, strength and quantity", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, fx.url, "nurse");
  const result = await lookUp(page);
  const dispense = result.getByRole("button", { name: "Dispense", exact: true });
  assert.ok(await dispense.isDisabled(), "no patient reference: Dispense is disabled");
  await result.getByTestId("patient-required").waitFor();
  assert.match(await result.getByText("(required: controlled drug)").textContent(), /required/);

  await page.getByLabel("Packs").fill("2");
  await page.getByLabel(/Patient reference/).fill("ENC-7781");
  await dispense.click();
  const confirm = result.getByTestId("controlled-confirm");
  await confirm.waitFor();
  await page.waitForFunction(() => {
    const box = document.querySelector('[data-testid="controlled-confirm"]')?.getBoundingClientRect();
    return box && box.top >= 0 && box.bottom <= innerHeight;
  });
  const text = await confirm.textContent();
  assert.match(text, new RegExp(`Dispense 2 × ${oxy.name} ${oxy.strength}`));
  assert.match(text, /ENC-7781/);
  assert.equal(await stockOf(fx.url, "WARD-A", BATCH), 12, "nothing is sent before the confirmation");
  assert.deepEqual(await violations(page), []);
  await shoot(page, "60-controlled-dispense-confirm-360");

  await confirm.getByRole("button", { name: "Confirm dispense" }).click();
  await result.locator('[data-testid="outcome"][data-status="done"]').waitFor({ timeout: 10_000 });
  assert.equal(await stockOf(fx.url, "WARD-A", BATCH), 10);
  await context.close();
});

test("wasting a controlled drug opens the witness dialog; a wrong password is refused, the witness's is kept", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, fx.url, "nurse");
  const result = await lookUp(page);
  await result.getByRole("button", { name: "Waste" }).click();
  await page.getByLabel("Waste reason").selectOption("DAMAGED");
  await result.getByRole("button", { name: "Confirm waste with witness" }).click();
  const dialog = page.getByRole("dialog", { name: "Witness needed" });
  await dialog.waitFor();
  assert.match(await dialog.textContent(), new RegExp(`Dispose of 1 × ${oxy.name} ${oxy.strength} \\(damaged\\)`));
  assert.deepEqual(await violations(page), []);
  await shoot(page, "61-witness-dialog-360");

  // The nurse cannot witness herself; a wrong password is refused inside the dialog.
  await dialog.getByLabel("Witness username").fill("nurse");
  await dialog.getByLabel("Witness password").fill(PASSWORD);
  await dialog.getByRole("button", { name: "Confirm as witness" }).click();
  await dialog.getByTestId("witness-error").getByText(/someone other than you/).waitFor();
  await dialog.getByLabel("Witness username").fill("pharmacist");
  await dialog.getByLabel("Witness password").fill("wrong-password");
  await dialog.getByRole("button", { name: "Confirm as witness" }).click();
  await dialog.getByTestId("witness-error").getByText(/could not be confirmed/).waitFor();
  assert.equal(await stockOf(fx.url, "WARD-A", BATCH), 10, "refused: nothing disposed of");

  await dialog.getByLabel("Witness password").fill(PASSWORD);
  await dialog.getByRole("button", { name: "Confirm as witness" }).click();
  await result.getByText(/Disposed of 1, witnessed by pharmacist/).waitFor({ timeout: 10_000 });
  assert.equal(await dialog.count(), 0, "the dialog closes once the witness is accepted");
  assert.equal(await stockOf(fx.url, "WARD-A", BATCH), 9);
  // The password was never written to the device.
  const stored = await page.evaluate(async () => {
    const names = (await indexedDB.databases()).map((d) => d.name);
    return JSON.stringify({ names, local: { ...localStorage } });
  });
  assert.ok(!stored.includes(PASSWORD), "no password in localStorage");
  await context.close();
});

test("the pharmacist's Controlled register: running balance, witness, exports; phone and tablet", async () => {
  for (const [viewport, suffix] of [
    [undefined, "360"],
    [TABLET, "1024"],
  ]) {
    const context = await browser.newContext(viewport ? { viewport } : {});
    const page = await context.newPage();
    await signIn(page, fx.url, "pharmacist");
    await page.goto(`${fx.url}/#/controlled`);
    await page.getByRole("heading", { name: "Controlled register" }).waitFor();
    await page.getByLabel("Controlled drug").selectOption(oxy.id);
    await page.getByLabel("Location").selectOption(wardId);
    const table = page.getByTestId("register");
    await table.waitFor();
    const balances = await table.getByTestId("balance").allTextContents();
    assert.deepEqual(balances.map(Number), [12, 10, 9], "receive 12, dispense 2, dispose 1");
    assert.equal(await page.getByTestId("closing").textContent(), "9");
    const witnesses = await table.getByTestId("witness").allTextContents();
    assert.equal(witnesses[2], "Paula Pharmacist");
    assert.deepEqual(await violations(page), []);
    await shoot(page, `62-controlled-register-${suffix}`);

    if (suffix === "1024") {
      const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download CSV" }).click()]);
      assert.match(download.suggestedFilename(), /^controlled-register-WARD-A-.*\.csv$/);
      const [pdf] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: /Download PDF/ }).click()]);
      const path = await pdf.path();
      assert.ok(readFileSync(path).subarray(0, 4).toString() === "%PDF");
      await page.getByText("Record a correction (needs a witness)").click();
      await page.getByLabel("Reason").fill("found behind the safe");
      await page.getByLabel(/Packs/).fill("1");
      await page.getByRole("button", { name: "Continue to witness" }).click();
      const dialog = page.getByRole("dialog", { name: "Witness needed" });
      await dialog.waitFor();
      await shoot(page, "63-witness-dialog-1024");
      await dialog.getByLabel("Witness username").fill("nurse");
      await dialog.getByLabel("Witness password").fill(PASSWORD);
      await dialog.getByRole("button", { name: "Confirm as witness" }).click();
      await page.getByText(/witnessed by nurse/).waitFor();
      await page.getByTestId("closing").getByText("10").waitFor();
    }
    await context.close();
  }
});
