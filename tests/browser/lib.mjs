// Helpers for the browser tests: a real server (serve.py), Debian's Chromium driven by
// playwright-core (never a downloaded browser), and a tiny GraphQL client to check the server.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const PWA = join(ROOT, "pwa");
// playwright-core and axe-core are the PWA's devDependencies: resolve them from pwa/.
const requireFromPwa = createRequire(join(PWA, "package.json"));
export const { chromium } = requireFromPwa("playwright-core");
export const AXE_PATH = requireFromPwa.resolve("axe-core/axe.min.js");

export const CHROMIUM = process.env.APOTHECA_CHROMIUM || "/usr/bin/chromium";
export const PASSWORD = "apotheca-demo";
export const PHONE = { width: 360, height: 640 };
// Screenshots go to pwa/docs/screenshots with APOTHECA_SCREENSHOTS=1 (to refresh the committed
// ones), else to a temporary folder, so a test run leaves the work tree clean.
export const SCREENSHOTS = process.env.APOTHECA_SCREENSHOTS
  ? join(PWA, "docs", "screenshots")
  : join(tmpdir(), "apotheca-screenshots");

const BASE_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-dev-shm-usage",
];

function python() {
  if (process.env.APOTHECA_PYTHON) return process.env.APOTHECA_PYTHON;
  const venv = join(ROOT, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

/** Start serve.py (with extra `args`, e.g. ["--history-days", "70"]); resolves with its
 * fixture (url, GTIN, batches...) and a stop(). */
export function startServer({ args = [] } = {}) {
  return new Promise((resolvePromise, reject) => {
    // APOTHECA_TEST_PWA_DIR: serve another build (e.g. the previous one, to see a new test fail).
    const dist = process.env.APOTHECA_TEST_PWA_DIR ? ["--pwa-dir", process.env.APOTHECA_TEST_PWA_DIR] : [];
    const child = spawn(python(), [join(ROOT, "tests", "browser", "serve.py"), ...dist, ...args], {
      cwd: ROOT,
      stdio: ["pipe", "pipe", "inherit"],
    });
    const lines = createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error("serve.py did not start in 90 s")), 90_000);
    child.once("exit", (code) => reject(new Error(`serve.py exited with ${code}`)));
    lines.once("line", (line) => {
      clearTimeout(timer);
      const fixture = JSON.parse(line);
      // Restart the server (same port and database); resolves when it is healthy again.
      fixture.restart = () =>
        new Promise((done) => {
          lines.once("line", () => done());
          child.kill("SIGUSR1");
        });
      fixture.stop = () =>
        new Promise((done) => {
          if (child.exitCode !== null) return done();
          child.once("exit", () => done());
          child.kill("SIGTERM");
        });
      resolvePromise(fixture);
    });
  });
}

/**
 * Chromium with a fresh profile. `camera`: a .y4m file for the fake camera; `fakeCameras`: that
 * many generated test-pattern cameras instead (to test switching between cameras).
 */
export async function launch({ camera, fakeCameras, persistentDir, viewport = PHONE } = {}) {
  const args = [...BASE_ARGS];
  if (fakeCameras) {
    args.push("--use-fake-ui-for-media-stream", `--use-fake-device-for-media-stream=device-count=${fakeCameras}`);
  } else if (camera) {
    args.push(
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      `--use-file-for-fake-video-capture=${camera}`,
    );
  }
  const options = {
    executablePath: CHROMIUM,
    headless: true,
    args,
  };
  if (persistentDir) {
    const context = await chromium.launchPersistentContext(persistentDir, {
      ...options,
      viewport,
      deviceScaleFactor: 2,
      isMobile: false,
      hasTouch: true,
    });
    return { context, close: () => context.close() };
  }
  const browser = await chromium.launch(options);
  const newContext = (extra = {}) => browser.newContext({ viewport, deviceScaleFactor: 2, hasTouch: true, ...extra });
  const context = await newContext();
  return { browser, context, newContext, close: () => browser.close() };
}

export function tempProfile() {
  const dir = mkdtempSync(join(tmpdir(), "apotheca-chromium-"));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Open the app and sign in through the form. */
export async function signIn(page, url, username) {
  await page.goto(url);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("navigation", { name: "Screens" }).waitFor();
}

/** Wait until the page's service worker controls it (precache done). */
export async function waitForServiceWorker(page) {
  await page.waitForFunction(
    async () => {
      const registration = await navigator.serviceWorker.getRegistration();
      return !!(registration?.active && navigator.serviceWorker.controller);
    },
    null,
    { timeout: 30_000 },
  );
}

// --- talking to the server directly ---------------------------------------------------------

export async function token(url, username) {
  const response = await fetch(`${url}/auth/token`, {
    method: "POST",
    body: new URLSearchParams({ grant_type: "password", username, password: PASSWORD }),
  });
  if (!response.ok) throw new Error(`token: ${response.status} ${await response.text()}`);
  return (await response.json()).access_token;
}

export async function gql(url, accessToken, query, variables = {}) {
  const response = await fetch(`${url}/graphql`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${accessToken}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

/** Packs of `batch` at the location with `code`, as the server holds them now. */
export async function stockOf(url, code, batch, username = "admin") {
  const accessToken = await token(url, username);
  const { locations } = await gql(url, accessToken, `query($code: String) { locations(first: 5, search: $code) { edges { node { id code } } } }`, { code });
  const location = locations.edges.map((e) => e.node).find((l) => l.code === code);
  const { stockLevels } = await gql(
    url,
    accessToken,
    `query($location: ID) { stockLevels(first: 100, location: $location, includeEmpty: true) { edges { node { quantity lot { batchNumber } } } } }`,
    { location: location.id },
  );
  return stockLevels.edges.map((e) => e.node).find((n) => n.lot.batchNumber === batch)?.quantity ?? 0;
}

/** DISPENSE movements recorded at a location (to prove "exactly once"). */
export async function dispenseCount(url, code, batch) {
  const accessToken = await token(url, "admin");
  const { locations } = await gql(url, accessToken, `query($code: String) { locations(first: 5, search: $code) { edges { node { id code } } } }`, { code });
  const location = locations.edges.map((e) => e.node).find((l) => l.code === code);
  const { movements } = await gql(
    url,
    accessToken,
    `query($location: ID) { movements(first: 100, location: $location, kinds: [DISPENSE]) { edges { node { quantity lot { batchNumber } } } } }`,
    { location: location.id },
  );
  return movements.edges.map((e) => e.node).filter((m) => m.lot.batchNumber === batch).length;
}

/** axe-core on the current page: violations of impact serious or critical. */
export async function seriousViolations(page) {
  // Evaluated through the DevTools protocol, not a <script> tag: the app's CSP allows no inline
  // script, and the test must not weaken it.
  await page.evaluate(readFileSync(AXE_PATH, "utf8"));
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const outcome = await axe.run(document, { resultTypes: ["violations"] });
    return outcome.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
  });
  return result.filter((v) => v.impact === "serious" || v.impact === "critical");
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
