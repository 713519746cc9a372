// Installability and the offline shell: Chrome reports no installability errors for the
// manifest and service worker, and a reload with the network gone still renders the app —
// signed in, with the stock the device saw last.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { launch, signIn, startServer, tempProfile, waitForServiceWorker } from "./lib.mjs";

let fx;
let profile;
let browser;

before(async () => {
  fx = await startServer();
  profile = tempProfile();
  browser = await launch({ persistentDir: profile.dir });
});

after(async () => {
  await browser?.close();
  await fx?.stop();
  profile?.remove();
});

test("installable: manifest, icons and service worker pass Chrome's checks", async () => {
  const page = browser.context.pages()[0] ?? (await browser.context.newPage());
  await page.goto(fx.url);
  await waitForServiceWorker(page);
  const cdp = await browser.context.newCDPSession(page);
  const { installabilityErrors } = await cdp.send("Page.getInstallabilityErrors");
  assert.deepEqual(installabilityErrors, []);
  const manifest = await cdp.send("Page.getAppManifest");
  assert.deepEqual(manifest.errors, []);
  const parsed = JSON.parse(manifest.data);
  assert.equal(parsed.display, "standalone");
  const sizes = parsed.icons.map((i) => `${i.sizes}/${i.purpose}`);
  for (const wanted of ["192x192/any", "512x512/any", "512x512/maskable"]) assert.ok(sizes.includes(wanted), `${wanted} in ${sizes}`);
  for (const icon of parsed.icons) {
    const response = await page.request.get(new URL(icon.src, fx.url).href);
    assert.equal(response.headers()["content-type"], "image/png");
  }
});

test("offline reload renders the shell, the signed-in user and the cached stock", async () => {
  const page = browser.context.pages()[0];
  await signIn(page, fx.url, "nurse");
  await page.goto(`${fx.url}/#/stock`);
  await page.locator('[data-batch="BT-FRESH"]').waitFor();
  await waitForServiceWorker(page);

  await browser.context.setOffline(true);
  await page.reload();
  await page.getByRole("heading", { name: "Stock" }).waitFor();
  await page.getByRole("status").filter({ hasText: "Offline" }).waitFor();
  await page.locator('[data-batch="BT-FRESH"]').waitFor();
  // Another screen of the app, never loaded while online, still opens from the precache.
  await page.goto(`${fx.url}/#/scan`);
  await page.getByRole("heading", { name: "Scan" }).waitFor();
  await browser.context.setOffline(false);
});
