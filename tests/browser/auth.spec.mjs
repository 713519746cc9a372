// Tokens and sign-out: an expired access token is refreshed with the refresh_token grant (and
// the request retried); signing out revokes the refresh token and deletes the device's copies
// (tokens, user, cached screens, outbox).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launch, signIn, startServer } from "./lib.mjs";

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

test("wrong password is refused with a message", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(fx.url);
  await page.getByLabel("Username").fill("nurse");
  await page.getByLabel("Password").fill("not-the-password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").filter({ hasText: "Wrong username or password" }).waitFor();
  await context.close();
});

test("an expired access token is refreshed; sign-out clears the device", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const grants = [];
  page.on("request", (r) => {
    if (r.url().endsWith("/auth/token")) grants.push(new URLSearchParams(r.postData() ?? "").get("grant_type"));
  });
  await signIn(page, fx.url, "nurse");
  await page.goto(`${fx.url}/#/stock`);
  await page.locator('[data-batch="BT-FRESH"]').waitFor();
  const refreshBefore = await page.evaluate(() => localStorage.getItem("apotheca.refresh"));

  // Pretend the access token ran out: the next request refreshes first.
  await page.evaluate(() => localStorage.setItem("apotheca.accessExpires", "0"));
  await page.goto(`${fx.url}/#/alerts`);
  await page.getByTestId("alert-list").waitFor();
  await page.waitForFunction(() => Number(localStorage.getItem("apotheca.accessExpires")) > Date.now());
  assert.deepEqual(grants, ["password", "refresh_token"], `token requests: ${grants}`);
  const refreshAfter = await page.evaluate(() => localStorage.getItem("apotheca.refresh"));
  assert.notEqual(refreshAfter, refreshBefore, "refresh tokens rotate");

  await page.goto(`${fx.url}/#/more`);
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByLabel("Username").waitFor();
  const left = await page.evaluate(async () => {
    const keys = Object.keys(localStorage).filter((k) => k.startsWith("apotheca.") && k !== "apotheca.location");
    const db = await new Promise((resolve, reject) => {
      const open = indexedDB.open("apotheca");
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
    const count = (store) =>
      new Promise((resolve) => {
        const req = db.transaction(store).objectStore(store).count();
        req.onsuccess = () => resolve(req.result);
      });
    return { keys, cache: await count("cache"), outbox: await count("outbox") };
  });
  assert.deepEqual(left, { keys: [], cache: 0, outbox: 0 }, `left on the device: ${JSON.stringify(left)}`);

  // The revoked refresh token no longer works.
  const response = await fetch(`${fx.url}/auth/token`, {
    method: "POST",
    body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: refreshAfter }),
  });
  assert.equal(response.status, 400);
  await context.close();
});
