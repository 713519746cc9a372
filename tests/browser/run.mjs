// Runs the browser tests (tests/browser/*.spec.mjs) with node's test runner, one file at a time.
//   node tests/browser/run.mjs [name-filter]
// Needs: pwa/dist built (`npm run build` in pwa/), pwa/node_modules (playwright-core, axe-core),
// Debian's Chromium at /usr/bin/chromium (or APOTHECA_CHROMIUM), and the project's Python
// (.venv/bin/python, or APOTHECA_PYTHON) with zxing-cpp for the camera test's DataMatrix video.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const chromium = process.env.APOTHECA_CHROMIUM || "/usr/bin/chromium";
const problems = [];
if (!existsSync(chromium)) problems.push(`no Chromium at ${chromium} (as root: apt-get install -y chromium)`);
if (!existsSync(join(root, "pwa", "dist", "index.html"))) problems.push("pwa/dist is not built (cd pwa && npm ci && npm run build)");
if (!existsSync(join(root, "pwa", "node_modules", "playwright-core"))) problems.push("pwa/node_modules is missing (cd pwa && npm ci)");
if (problems.length) {
  for (const p of problems) console.error(`browser tests: ${p}`);
  process.exit(1);
}
const filter = process.argv[2] ?? "";
const files = readdirSync(here)
  .filter((f) => f.endsWith(".spec.mjs") && f.includes(filter))
  .sort()
  .map((f) => join(here, f));
const result = spawnSync(
  process.execPath,
  ["--test", "--test-concurrency=1", "--test-timeout=180000", "--test-reporter=spec", ...files],
  { stdio: "inherit", cwd: root },
);
process.exit(result.status ?? 1);
