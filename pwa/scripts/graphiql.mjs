// Copies GraphiQL (and the React it runs on) from node_modules into dist/graphiql, beside our
// page (graphiql/), so the server serves it from its own origin: no CDN, works offline.
// Run after `vite build` so the service worker does not precache it (people on wards never
// open it). The versions are the pinned devDependencies in package.json / package-lock.json.
import { copyFileSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const out = join(root, "dist", "graphiql");
mkdirSync(out, { recursive: true });
const vendored = [
  "react/umd/react.production.min.js",
  "react-dom/umd/react-dom.production.min.js",
  "graphiql/graphiql.min.js",
  "graphiql/graphiql.min.css",
];
for (const file of vendored) copyFileSync(join(root, "node_modules", file), join(out, file.split("/").pop()));
for (const file of readdirSync(join(root, "graphiql"))) copyFileSync(join(root, "graphiql", file), join(out, file));
console.log(`GraphiQL: ${vendored.length} vendored files and our page in dist/graphiql`);
