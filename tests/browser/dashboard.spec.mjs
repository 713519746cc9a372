// Dashboard: the charts render on a phone, the figures shown are the server's figures for the
// same query, the trend shows history and forecast, and axe finds nothing serious.
// The server is seeded with 10 weeks of demo history so there is consumption to forecast.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { SCREENSHOTS, gql, launch, seriousViolations, signIn, startServer, token } from "./lib.mjs";

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

const FIGURES = `{
  stockValue { packs value byLocation { value location { code } } }
  expiryExposure { buckets { bucket packs value } }
  topConsumption(weeks: 8, first: 10) { quantity product { id name } }
}`;
const FORECAST = `query($product: ID!) {
  consumptionForecast(product: $product) { method reason history { quantity } forecast { quantity low } }
}`;

test("a pharmacist's dashboard shows the server's figures, a forecast, and passes axe", async () => {
  const accessToken = await token(fx.url, "pharmacist");
  const server = await gql(fx.url, accessToken, FIGURES);
  assert.ok(Number(server.stockValue.value) > 0, "the seeded demo has stock");
  const busiest = server.topConsumption[0];
  assert.ok(busiest, "the seeded demo has consumption");
  const { consumptionForecast: expected } = await gql(fx.url, accessToken, FORECAST, { product: busiest.product.id });

  const page = await browser.context.newPage();
  await signIn(page, fx.url, "pharmacist");
  await page.goto(`${fx.url}/#/dashboard`);

  // Stock value: the exact figure behind the text, and the text itself.
  const total = page.getByTestId("stock-value-total");
  await total.waitFor();
  assert.equal(await total.getAttribute("data-value"), server.stockValue.value);
  const shown = Number((await total.textContent()).replace(/[^\d.]/g, ""));
  assert.equal(shown, Number(Number(server.stockValue.value).toFixed(2)));
  assert.equal(await page.getByTestId("stock-packs-total").getAttribute("data-value"), String(server.stockValue.packs));
  const locationRows = page.getByTestId("value-by-location").locator("tbody tr");
  assert.equal(await locationRows.count(), server.stockValue.byLocation.length);
  assert.ok((await page.getByTestId("value-by-atc").locator("tbody tr").count()) > 0);

  // Expiry buckets: packs per bucket and their total.
  for (const bucket of server.expiryExposure.buckets) {
    assert.equal(await page.getByTestId(`expiry-packs-${bucket.bucket}`).getAttribute("data-value"), String(bucket.packs), bucket.bucket);
    assert.equal(await page.getByTestId(`expiry-value-${bucket.bucket}`).getAttribute("data-value"), bucket.value, bucket.bucket);
  }
  const packs = server.expiryExposure.buckets.reduce((n, b) => n + b.packs, 0);
  assert.equal(await page.getByTestId("expiry-packs-total").getAttribute("data-value"), String(packs));
  assert.ok(packs > 0, "the demo plans a lot expiring within the month");

  // Consumption trend: the busiest product is picked, history and forecast are drawn.
  assert.equal(await page.locator("#dash-product").inputValue(), busiest.product.id);
  await page.getByTestId("trend-svg").waitFor();
  await page.getByTestId("history-line").waitFor();
  const rows = page.getByTestId("trend-table").locator("tbody tr");
  assert.equal(await rows.count(), expected.history.length + expected.forecast.length);
  if (expected.method) {
    assert.equal(await page.getByTestId("forecast-method").getAttribute("data-method"), expected.method);
    await page.getByTestId("forecast-line").waitFor();
    if (expected.forecast[0].low != null) await page.getByTestId("forecast-band").waitFor();
  } else {
    assert.equal(await page.getByTestId("forecast-reason").getAttribute("data-reason"), expected.reason);
  }
  // The numbers behind the chart can be shown on demand.
  await page.getByRole("button", { name: "Show numbers" }).click();
  await page.getByRole("button", { name: "Hide numbers" }).waitFor();

  // Picking another product redraws the trend for it.
  if (server.topConsumption.length > 1) {
    const other = server.topConsumption[1].product;
    const { consumptionForecast: second } = await gql(fx.url, accessToken, FORECAST, { product: other.id });
    await page.locator("#dash-product").selectOption(other.id);
    await page.waitForFunction(
      (n) => document.querySelectorAll('[data-testid="trend-table"] tbody tr').length === n,
      second.history.length + second.forecast.length,
    );
  }

  // Supplier performance section renders (bars or its empty state).
  await page.locator("#dash-suppliers").waitFor();

  // Readable on a phone: nothing wider than the screen.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  const wide = await page.evaluate(() =>
    [...document.querySelectorAll("main *")]
      .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
      .slice(0, 5)
      .map((e) => `${e.tagName}.${e.className} ${e.getAttribute("data-testid") ?? ""} ${Math.round(e.getBoundingClientRect().right)}`),
  );
  assert.ok(overflow <= 0, `page is ${overflow}px wider than the viewport: ${wide.join(", ")}`);
  await page.screenshot({ path: join(SCREENSHOTS, "dashboard-phone.png"), fullPage: true });

  const violations = await seriousViolations(page);
  assert.deepEqual(violations, [], JSON.stringify(violations, null, 2));
  await page.close();
});

test("one location narrows the figures to it", async () => {
  const accessToken = await token(fx.url, "pharmacist");
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, fx.url, "pharmacist");
  await page.goto(`${fx.url}/#/dashboard`);
  await page.getByTestId("stock-value-total").waitFor();
  const option = page.locator("#dash-location option", { hasText: "WARD-A" });
  const wardA = await option.getAttribute("value");
  await page.locator("#dash-location").selectOption(wardA);
  const server = await gql(fx.url, accessToken, `query($l: ID) { stockValue(location: $l) { value } }`, { l: wardA });
  await page.waitForFunction(
    (value) => document.querySelector('[data-testid="stock-value-total"]')?.getAttribute("data-value") === value,
    server.stockValue.value,
  );
  assert.equal(await page.getByTestId("value-by-location").count(), 0, "no per-location chart for one location");
  await context.close();
});

const STORED = `query($product: ID!, $location: ID!) {
  forecast(product: $product, location: $location, granularity: WEEKLY) {
    model demandClass history { quantity } points { quantity low80 high80 }
  }
}`;

test("one location shows its stored forecast, the chosen model and the interval", async () => {
  const accessToken = await token(fx.url, "pharmacist");
  const context = await browser.newContext(); // signed out: the shared context already signed in
  const page = await context.newPage();
  await signIn(page, fx.url, "pharmacist");
  await page.goto(`${fx.url}/#/dashboard`);
  await page.getByTestId("stock-value-total").waitFor();
  const wardA = await page.locator("#dash-location option", { hasText: "WARD-A" }).getAttribute("value");
  const top = await gql(fx.url, accessToken, `query($l: ID) { topConsumption(location: $l, weeks: 8, first: 10) { product { id } } }`, { l: wardA });
  const product = top.topConsumption[0].product.id;
  // The server's background refresh stores forecasts shortly after it starts.
  let expected = null;
  for (let i = 0; i < 180 && !expected; i++) {
    expected = (await gql(fx.url, accessToken, STORED, { product, location: wardA })).forecast;
    if (!expected) await new Promise((r) => setTimeout(r, 500));
  }
  assert.ok(expected, "the background refresh stored a forecast for WARD-A's busiest product");

  await page.locator("#dash-location").selectOption(wardA);
  const model = page.getByTestId("forecast-model");
  await model.waitFor();
  assert.equal(await model.getAttribute("data-model"), expected.model);
  assert.equal(await model.getAttribute("data-class"), expected.demandClass);
  await page.getByTestId("forecast-score").waitFor();
  await page.getByTestId("forecast-line").waitFor();
  if (expected.points.some((p) => p.high80 > p.low80)) await page.getByTestId("forecast-band").waitFor();
  const rows = page.getByTestId("trend-table").locator("tbody tr");
  assert.equal(await rows.count(), Math.min(26, expected.history.length) + expected.points.length);
  const violations = await seriousViolations(page);
  assert.deepEqual(violations, [], JSON.stringify(violations, null, 2));
  await context.close();
});
