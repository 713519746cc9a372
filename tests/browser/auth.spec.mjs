// Tokens and sign-out: the refresh token lives only in an httpOnly cookie scoped to /auth and the
// access token only in memory, so a reload refreshes with the refresh_token grant through the
// cookie; signing out revokes the refresh token, clears the cookie and deletes the device's
// copies (user, cached screens, outbox).
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

/** Every storage entry (localStorage, sessionStorage, IndexedDB values) holding a JWT (an
 * access token) or one of `secrets` (the refresh token): runs in the page, on the app's origin. */
async function tokensInStorage(secrets) {
  const found = [];
  const looksLikeToken = (text) => /eyJ[\w-]+\.[\w-]+\.[\w-]+/.test(text) || secrets.some((t) => text.includes(t));
  for (const [name, store] of [["localStorage", localStorage], ["sessionStorage", sessionStorage]]) {
    for (const key of Object.keys(store)) if (looksLikeToken(key + store.getItem(key))) found.push(`${name}:${key}`);
  }
  for (const { name } of await indexedDB.databases()) {
    const db = await new Promise((resolve, reject) => {
      const open = indexedDB.open(name);
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
    for (const storeName of db.objectStoreNames) {
      const values = await new Promise((resolve) => {
        const req = db.transaction(storeName).objectStore(storeName).getAll();
        req.onsuccess = () => resolve(req.result);
      });
      if (looksLikeToken(JSON.stringify(values))) found.push(`indexedDB:${name}/${storeName}`);
    }
    db.close();
  }
  return found;
}

test("tokens stay out of storage: a reload refreshes through the httpOnly cookie; sign-out clears the device", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const grants = [];
  page.on("request", (r) => {
    if (r.url().endsWith("/auth/token")) grants.push(new URLSearchParams(r.postData() ?? "").get("grant_type"));
  });
  await signIn(page, fx.url, "nurse");
  await page.goto(`${fx.url}/#/stock`);
  await page.locator('[data-batch="BT-FRESH"]').waitFor();
  // The refresh token is an httpOnly, Secure, SameSite=Strict cookie scoped to /auth; no token
  // of any kind is in a script-readable store.
  const refreshCookie = async () => (await context.cookies(fx.url + "/auth/token")).find((c) => c.name === "apotheca_refresh");
  const first = await refreshCookie();
  assert.ok(first, "the refresh cookie is set");
  assert.deepEqual(
    { httpOnly: first.httpOnly, secure: first.secure, sameSite: first.sameSite, path: first.path },
    { httpOnly: true, secure: true, sameSite: "Strict", path: "/auth" },
  );
  assert.equal((await context.cookies(fx.url + "/graphql")).length, 0, "the cookie never reaches /graphql");
  assert.deepEqual(await page.evaluate(tokensInStorage, [first.value]), [], "no token in localStorage/sessionStorage/IndexedDB");

  // A reload forgets the in-memory access token: the app refreshes through the cookie.
  await page.reload();
  await page.goto(`${fx.url}/#/alerts`);
  await page.getByTestId("alert-list").waitFor();
  assert.deepEqual(grants, ["password", "refresh_token"], `token requests: ${grants}`);
  const rotated = await refreshCookie();
  assert.notEqual(rotated.value, first.value, "refresh tokens rotate");
  assert.deepEqual(await page.evaluate(tokensInStorage, [first.value, rotated.value]), [], "still no token in storage");

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
  // The screen changes at once; the revoke request that clears the cookie may land just after.
  const until = Date.now() + 5_000;
  while ((await refreshCookie()) && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
  assert.equal(await refreshCookie(), undefined, "sign-out clears the refresh cookie");

  // The revoked refresh token no longer works.
  const response = await fetch(`${fx.url}/auth/token`, {
    method: "POST",
    body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: rotated.value }),
  });
  assert.equal(response.status, 400);
  await context.close();
});
