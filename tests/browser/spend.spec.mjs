// Spend: a pharmacist sees spend against budget by department, ATC code and supplier for this
// month, with the server's figures, bars and currency formatting, sets a budget, and axe finds
// no violation. Seeded with 70 days of demo history (priced receipts, ward budgets).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { AXE_PATH, SCREENSHOTS, gql, launch, signIn, startServer, token } from "./lib.mjs";

let fx;
let browser;

before(async () => {
  fx = await startServer({ args: ["--history-days", "70"] });
  browser = await launch({});
});

after(async () => {
  await browser?.close();
  await fx?.stop();
});

const REPORT = `query($period: String!, $groupBy: SpendGrouping!) {
  spendReport(period: $period, groupBy: $groupBy) { currency spend forecast rows { spend budget location { code } } }
}`;

async function violations(page) {
  await page.evaluate(readFileSync(AXE_PATH, "utf8"));
  return page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const outcome = await axe.run(document, { resultTypes: ["violations"] });
    return outcome.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
  });
}

test("a pharmacist's Spend screen shows the server's spend and budgets, sets one, passes axe", async () => {
  const now = new Date();
  const month = `${now.getUTCFullYear()}-${String(now.getUTCMonth() + 1).padStart(2, "0")}`;
  const accessToken = await token(fx.url, "pharmacist");
  const { spendReport: server } = await gql(fx.url, accessToken, REPORT, { period: month, groupBy: "LOCATION" });
  assert.equal(server.currency, "EUR");
  assert.ok(server.rows.some((r) => r.budget !== null), "the demo seeds ward budgets");

  const page = await browser.context.newPage();
  await signIn(page, fx.url, "pharmacist");
  await page.goto(`${fx.url}/#/spend`);
  const total = page.getByTestId("spend-total");
  await total.waitFor();
  assert.equal(await total.getAttribute("data-value"), server.spend);
  const expected = new Intl.NumberFormat("en-US", { style: "currency", currency: "EUR" }).format(Number(server.spend));
  const shown = await page.evaluate(
    ([value]) => new Intl.NumberFormat(undefined, { style: "currency", currency: "EUR" }).format(Number(value)),
    [server.spend],
  );
  assert.ok((await total.textContent()).includes(shown), `${shown} (${expected}) in the total`);
  const rows = page.getByTestId("spend-rows").locator("li");
  assert.equal(await rows.count(), server.rows.length);
  assert.equal(await page.locator(".spend-bar").count(), server.rows.length);
  assert.ok((await page.locator(".spend-budget").count()) >= 1, "budget marks on the bars");

  // Tall viewports rather than full-page shots: the fixed tab bar stays where it belongs.
  await page.setViewportSize({ width: 360, height: 1400 });
  await page.screenshot({ path: join(SCREENSHOTS, "spend-360.png") });
  assert.deepEqual(await violations(page), []);

  // By ATC code and by supplier: the same total.
  for (const group of ["ATC", "SUPPLIER"]) {
    await page.selectOption("#spend-group", group);
    const { spendReport: other } = await gql(fx.url, accessToken, REPORT, { period: month, groupBy: group });
    await page.waitForFunction(
      ([n]) => document.querySelectorAll("[data-testid=spend-rows] li").length === n,
      [other.rows.length],
    );
    assert.equal(await total.getAttribute("data-value"), other.spend);
  }
  await page.selectOption("#spend-group", "LOCATION");
  await page.getByTestId("spend-rows").locator("li").first().waitFor();

  // Set a budget for the central pharmacy.
  const cp = await page.locator("#budget-location option", { hasText: "HOSP-CP" }).getAttribute("value");
  await page.selectOption("#budget-location", cp);
  await page.fill("#budget-amount", "1234.5");
  await page.getByRole("button", { name: "Save budget" }).click();
  await page.getByText(`Budget for HOSP-CP ${month} saved.`).waitFor();
  const { spendReport: updated } = await gql(fx.url, accessToken, REPORT, { period: month, groupBy: "LOCATION" });
  const row = updated.rows.find((r) => r.location.code === "HOSP-CP");
  assert.equal(Number(row.budget), 1234.5);

  await page.setViewportSize({ width: 1024, height: 1100 });
  await page.screenshot({ path: join(SCREENSHOTS, "spend-1024.png") });
  assert.deepEqual(await violations(page), []);
  await page.close();
});
