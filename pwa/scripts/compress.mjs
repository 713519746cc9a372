// Writes name.br and name.gz beside every compressible file in dist (after graphiql.mjs copied
// its page in), so the server (server/core/static.py) sends compressed bytes without compressing
// per request. A variant is kept only when it saves at least 5 % (tiny files stay as they are).
import { readFileSync, readdirSync, statSync, writeFileSync, unlinkSync } from "node:fs";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const DIST = fileURLToPath(new URL("../dist", import.meta.url));
const COMPRESSIBLE = /\.(js|mjs|css|html|wasm|webmanifest|svg|json|map|txt)$/;

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

let before = 0;
let afterBr = 0;
let count = 0;
for (const file of walk(DIST)) {
  if (file.endsWith(".br") || file.endsWith(".gz")) {
    unlinkSync(file); // a stale variant of an earlier build
    continue;
  }
}
for (const file of walk(DIST)) {
  if (!COMPRESSIBLE.test(file)) continue;
  const data = readFileSync(file);
  const variants = [
    [".br", brotliCompressSync(data, { params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: data.length } })],
    [".gz", gzipSync(data, { level: 9 })],
  ];
  before += data.length;
  let smallest = data.length;
  for (const [suffix, packed] of variants) {
    if (packed.length <= data.length * 0.95) {
      writeFileSync(file + suffix, packed);
      smallest = Math.min(smallest, packed.length);
    }
  }
  afterBr += smallest;
  count += 1;
}
const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
console.log(`Pre-compressed ${count} files in ${relative(process.cwd(), DIST) || "dist"}: ${kb(before)} → ${kb(afterBr)} (smallest variant)`);
