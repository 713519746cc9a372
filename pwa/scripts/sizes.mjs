// Prints the size of every built file (raw and gzipped) and checks the budget: the JavaScript
// the first page load needs (index.html's module script and its modulepreloads) must stay under
// 150 KB gzipped. Lazily loaded chunks (the barcode decoder) and the wasm are listed apart.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const DIST = fileURLToPath(new URL("../dist", import.meta.url));
const BUDGET = 150 * 1024;

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
const html = readFileSync(join(DIST, "index.html"), "utf8");
const initial = new Set(
  [...html.matchAll(/<(?:script[^>]+src|link[^>]+rel="modulepreload"[^>]+href)="\/?([^"]+\.js)"/g)].map((m) => m[1]),
);

let initialGzip = 0;
const rows = walk(DIST)
  .filter((file) => /\.(js|css|wasm|html|webmanifest)$/.test(file))
  .map((file) => {
    const data = readFileSync(file);
    const name = relative(DIST, file);
    const gz = gzipSync(data, { level: 9 }).length;
    const isInitial = initial.has(name);
    if (isInitial) initialGzip += gz;
    return { name, raw: data.length, gz, kind: isInitial ? "initial" : name.endsWith(".js") && name !== "sw.js" ? "lazy" : "" };
  })
  .sort((a, b) => b.gz - a.gz);

console.log("\nBuild sizes (gzip -9):");
for (const r of rows) console.log(`  ${r.name.padEnd(44)} ${kb(r.raw).padStart(10)} ${kb(r.gz).padStart(10) } gz  ${r.kind}`);
console.log(`\nInitial JS: ${kb(initialGzip)} gzipped (budget ${kb(BUDGET)})`);
if (initialGzip > BUDGET) {
  console.error("Initial JavaScript is over budget.");
  process.exit(1);
}
