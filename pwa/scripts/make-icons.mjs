// Draws the app icons as PNG files without any image library: a white pharmacy cross on a
// dark teal tile, antialiased by 4x4 supersampling. Writes public/icons/*.png; the results are
// committed, so a build does not need to run this (run `npm run icons` after changing it).
import { deflateSync } from "node:zlib";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const OUT = join(dirname(fileURLToPath(import.meta.url)), "..", "public", "icons");
const TEAL = [11, 93, 87];
const WHITE = [255, 255, 255];

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(buffer) {
  let c = 0xffffffff;
  for (const byte of buffer) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

function png(size, rgba) {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(size, 0);
  header.writeUInt32BE(size, 4);
  header[8] = 8; // bit depth
  header[9] = 6; // RGBA
  const raw = Buffer.alloc(size * (size * 4 + 1));
  for (let y = 0; y < size; y++) {
    raw[y * (size * 4 + 1)] = 0; // filter: none
    rgba.copy(raw, y * (size * 4 + 1) + 1, y * size * 4, (y + 1) * size * 4);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(raw, { level: 9 })),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

/** Coverage of a sample point (u, v in 0..1): which colour, or null for transparent. */
function shade(u, v, { maskable }) {
  // Maskable icons are full-bleed; the cross stays inside the 80% safe circle.
  const inset = maskable ? 0 : 0.04;
  const radius = maskable ? 0 : 0.2;
  const x = Math.min(u - inset, 1 - inset - u);
  const y = Math.min(v - inset, 1 - inset - v);
  if (x < 0 || y < 0) return null;
  if (x < radius && y < radius) {
    const dx = radius - x;
    const dy = radius - y;
    if (dx * dx + dy * dy > radius * radius) return null;
  }
  const arm = maskable ? 0.13 : 0.16; // half the cross bar's thickness
  const reach = maskable ? 0.3 : 0.34; // half the cross's span
  const cu = Math.abs(u - 0.5);
  const cv = Math.abs(v - 0.5);
  if ((cu < arm && cv < reach) || (cv < arm && cu < reach)) return WHITE;
  return TEAL;
}

function draw(size, options) {
  const rgba = Buffer.alloc(size * size * 4);
  const samples = 4;
  for (let py = 0; py < size; py++) {
    for (let px = 0; px < size; px++) {
      let r = 0;
      let g = 0;
      let b = 0;
      let a = 0;
      for (let sy = 0; sy < samples; sy++) {
        for (let sx = 0; sx < samples; sx++) {
          const color = shade((px + (sx + 0.5) / samples) / size, (py + (sy + 0.5) / samples) / size, options);
          if (!color) continue;
          r += color[0];
          g += color[1];
          b += color[2];
          a += 1;
        }
      }
      const offset = (py * size + px) * 4;
      if (a) {
        rgba[offset] = Math.round(r / a);
        rgba[offset + 1] = Math.round(g / a);
        rgba[offset + 2] = Math.round(b / a);
      }
      rgba[offset + 3] = Math.round((a / (samples * samples)) * 255);
    }
  }
  return png(size, rgba);
}

mkdirSync(OUT, { recursive: true });
for (const [name, size, maskable] of [
  ["icon-192.png", 192, false],
  ["icon-512.png", 512, false],
  ["maskable-512.png", 512, true],
  ["maskable-192.png", 192, true],
  ["apple-touch-icon-180.png", 180, true],
  ["favicon-32.png", 32, false],
]) {
  const file = join(OUT, name);
  writeFileSync(file, draw(size, { maskable }));
  console.log(`${file} (${size}x${size}${maskable ? ", maskable" : ""})`);
}
