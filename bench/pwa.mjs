// How fast is the PWA for a ward on a slow network and a cheap device?
//
// Debian's Chromium (playwright-core, never a downloaded browser) against a real server
// (tests/browser/serve.py on a fresh database), at 360x740, with the DevTools protocol's
// 4x CPU throttle and "slow 4G" (150 ms RTT, 1.6 Mbit/s down, 750 kbit/s up). Three figures,
// each the median of --runs fresh runs, printed against the goals of issue 15:
//
//   first visit interactive  empty profile: navigation to the sign-in form usable   ≤ 2.0 s
//   repeat visit             same profile, service worker in control: reload to the
//                            signed-in shell usable (Scan's "Look up pack")          ≤ 1.0 s
//   sign-in → scan ready     tap "Sign in" to Scan's "Look up pack" usable           ≤ 1.5 s
//
// plus the bytes on the wire of the first visit (encoded: what the network carried), and a
// ceiling measured in the same run under the same throttles: the smallest page this server can
// send (GET /healthz, one request, nothing to run), so each figure also reads as "x bare page".
//
//   node bench/pwa.mjs [--runs 3]
// Needs pwa/dist built, like the browser tests. Run it on a quiet machine: the CPU throttle
// multiplies whatever else is running.
import { join } from "node:path";
import { PASSWORD, launch, startServer, tempProfile } from "../tests/browser/lib.mjs";

const args = process.argv.slice(2);
const RUNS = Number(args[args.indexOf("--runs") + 1]) || 3;
const VIEWPORT = { width: 360, height: 740 };
const SLOW_4G = { offline: false, latency: 150, downloadThroughput: (1.6 * 1024 * 1024) / 8, uploadThroughput: (750 * 1024) / 8 };
const GOALS = { firstVisit: 2000, repeatVisit: 1000, signInToScan: 1500 };

async function throttle(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", SLOW_4G);
  await cdp.send("Emulation.setCPUThrottlingRate", { rate: 4 });
  let bytes = 0;
  cdp.on("Network.loadingFinished", (e) => (bytes += e.encodedDataLength));
  return { bytes: () => bytes, reset: () => (bytes = 0) };
}

async function once(url) {
  const profile = tempProfile();
  const browser = await launch({ persistentDir: profile.dir, viewport: VIEWPORT });
  try {
    const page = browser.context.pages()[0] ?? (await browser.context.newPage());
    const wire = await throttle(page);
    let t0 = Date.now();
    await page.goto(`${url}/healthz`, { waitUntil: "load" });
    const barePage = Date.now() - t0;
    wire.reset();
    t0 = Date.now();
    await page.goto(url);
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    const firstVisit = Date.now() - t0;
    const bytes = wire.bytes();

    await page.getByLabel("Username").fill("nurse");
    await page.getByLabel("Password").fill(PASSWORD);
    t0 = Date.now();
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("button", { name: "Look up pack" }).waitFor();
    const signInToScan = Date.now() - t0;

    // Let the service worker take control (precache done), then come back.
    await page.waitForFunction(async () => !!(await navigator.serviceWorker.getRegistration())?.active, null, { timeout: 120_000 });
    await page.reload();
    await page.getByRole("button", { name: "Look up pack" }).waitFor();
    t0 = Date.now();
    await page.reload();
    await page.getByRole("button", { name: "Look up pack" }).waitFor();
    const repeatVisit = Date.now() - t0;
    return { firstVisit, repeatVisit, signInToScan, bytes, barePage };
  } finally {
    await browser.close();
    profile.remove();
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const fx = await startServer();
try {
  const runs = [];
  for (let i = 0; i < RUNS; i++) {
    const run = await once(fx.url);
    console.log(`run ${i + 1}: ${JSON.stringify(run)}`);
    runs.push(run);
  }
  const row = (name, key) => {
    const value = median(runs.map((r) => r[key]));
    const goal = GOALS[key];
    const ratio = (value / bare).toFixed(1);
    return `${name.padEnd(26)} ${(value / 1000).toFixed(2).padStart(6)} s   goal ≤ ${(goal / 1000).toFixed(1)} s   ${value <= goal ? "met   " : "MISSED"}   ${ratio.padStart(5)}x bare page`;
  };
  const bare = median(runs.map((r) => r.barePage));
  console.log(`\nPWA under 4x CPU throttle and slow 4G, ${VIEWPORT.width}x${VIEWPORT.height}, median of ${RUNS}:`);
  console.log(`${"ceiling: bare page".padEnd(26)} ${(bare / 1000).toFixed(2).padStart(6)} s   (GET /healthz, same throttles)`);
  console.log(row("first visit interactive", "firstVisit"));
  console.log(row("repeat visit", "repeatVisit"));
  console.log(row("sign-in -> scan ready", "signInToScan"));
  console.log(`${"first visit bytes".padEnd(26)} ${(median(runs.map((r) => r.bytes)) / 1024).toFixed(1).padStart(6)} KB on the wire`);
  console.log(`load average ${(await import("node:os")).loadavg().map((x) => x.toFixed(2)).join(" ")}`);
  console.log(`(results are the wall clock of this machine; see ${join("bench", "pwa.mjs")} for what each figure measures)`);
} finally {
  await fx.stop();
}
