// Security headers and the Content-Security-Policy in a real browser: every PWA screen and our
// GraphiQL page run without a single CSP violation (console or securitypolicyviolation event),
// the headers are on every response, and GraphiQL loads only from our own origin and runs its
// first query (introspection) with a token it got through the refresh cookie.
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

/** Collect every CSP complaint of `page`: console messages and violation events. */
function watchViolations(page) {
  const violations = [];
  page.on("console", (message) => {
    if (/Content Security Policy|Refused to/i.test(message.text())) violations.push(message.text());
  });
  page.on("pageerror", (error) => {
    if (/Content Security Policy|Refused to/i.test(String(error))) violations.push(String(error));
  });
  page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (event) => {
      console.error(`Refused to load (CSP ${event.violatedDirective}): ${event.blockedURI}`);
    });
  });
  return violations;
}

const HEADERS = {
  "x-frame-options": "DENY",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
};

function assertSecurityHeaders(headers, what) {
  for (const [name, value] of Object.entries(HEADERS)) assert.equal(headers[name], value, `${name} on ${what}`);
  const csp = headers["content-security-policy"] ?? "";
  for (const directive of ["default-src 'self'", "frame-ancestors 'none'", "object-src 'none'"]) {
    assert.ok(csp.includes(directive), `${directive} in the CSP of ${what}: ${csp}`);
  }
  assert.ok(!csp.includes("'unsafe-inline'") && !csp.includes("'unsafe-eval'"), `no unsafe-* in ${csp}`);
}

test("the PWA's screens run under the CSP with no violation", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const violations = watchViolations(page);
  const first = await page.goto(fx.url);
  assertSecurityHeaders(first.headers(), "/");
  await signIn(page, fx.url, "pharmacist");
  for (const screen of ["stock", "alerts", "transfers", "shipments", "dashboard", "scan", "more"]) {
    await page.goto(`${fx.url}/#/${screen}`);
    await page.locator("main").waitFor();
    await page.waitForLoadState("networkidle");
  }
  const api = await page.request.post(`${fx.url}/graphql`, { data: { query: "{ __typename }" } });
  assertSecurityHeaders(api.headers(), "POST /graphql");
  assert.deepEqual(violations, []);
  await context.close();
});

test("GraphiQL is served from our origin only and queries with the cookie's token", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const violations = watchViolations(page);
  const requested = new Set();
  const graphqlPosts = [];
  page.on("request", (request) => {
    requested.add(new URL(request.url()).origin);
    if (request.method() === "POST" && request.url().endsWith("/graphql")) graphqlPosts.push(request);
  });

  // Not signed in: the shell asks for a sign-in and runs no query.
  const shell = await page.goto(`${fx.url}/graphql`);
  assertSecurityHeaders(shell.headers(), "GET /graphql (GraphiQL)");
  const html = await shell.text();
  const urls = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]);
  assert.ok(urls.length >= 5, `GraphiQL's assets: ${urls}`);
  for (const url of urls) assert.ok(url.startsWith("/") && !url.startsWith("//"), `same-origin only: ${url}`);
  await page.waitForFunction(() => document.documentElement.dataset.ready === "signin");
  assert.equal(graphqlPosts.length, 0, "no query before sign-in");

  // Signed in to the PWA (the refresh cookie is set): GraphiQL gets a token through it.
  await signIn(page, fx.url, "auditor");
  await page.goto(`${fx.url}/graphql`);
  await page.waitForFunction(() => document.documentElement.dataset.ready === "graphiql");
  await page.locator(".graphiql-container").waitFor();
  await page.waitForFunction(() => document.querySelector(".graphiql-doc-explorer-icon, [aria-label*='Documentation']") !== null);
  const introspection = graphqlPosts.find((r) => (r.postData() ?? "").includes("__schema"));
  assert.ok(introspection, "GraphiQL asked for the schema");
  assert.match(introspection.headers()["authorization"] ?? "", /^Bearer ey/);
  assert.equal((await introspection.response()).status(), 200);
  assert.deepEqual([...requested], [fx.url], "every request went to our own origin");
  assert.deepEqual(violations, []);
  await context.close();
});
