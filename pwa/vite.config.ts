import { defineConfig } from "vite";
import preact from "@preact/preset-vite";
import { VitePWA } from "vite-plugin-pwa";

// The server (server/app.py) serves pwa/dist at /. In development, `npm run dev` proxies the
// API to a server on :8000 (`make run`).
const api = process.env.APOTHECA_API ?? "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [
    preact(),
    VitePWA({
      strategies: "injectManifest",
      srcDir: "src",
      filename: "sw.ts",
      injectRegister: false, // src/lib/sw-register.ts registers it and offers updates
      manifest: {
        id: "/",
        name: "Apotheca",
        short_name: "Apotheca",
        description: "Drug inventory: scan, dispense, stock and alerts, online or not.",
        lang: "en",
        start_url: "/",
        scope: "/",
        display: "standalone",
        orientation: "any",
        background_color: "#ffffff",
        theme_color: "#0b5d57",
        categories: ["medical", "business", "productivity"],
        icons: [
          { src: "/icons/icon-192.png", sizes: "192x192", type: "image/png", purpose: "any" },
          { src: "/icons/icon-512.png", sizes: "512x512", type: "image/png", purpose: "any" },
          { src: "/icons/maskable-192.png", sizes: "192x192", type: "image/png", purpose: "maskable" },
          { src: "/icons/maskable-512.png", sizes: "512x512", type: "image/png", purpose: "maskable" },
        ],
        // Long-press on the installed icon: straight to the screen the shift needs.
        shortcuts: [
          { name: "Scan a pack", short_name: "Scan", url: "/#/scan", icons: [{ src: "/icons/icon-192.png", sizes: "192x192" }] },
          { name: "Stock here", short_name: "Stock", url: "/#/stock", icons: [{ src: "/icons/icon-192.png", sizes: "192x192" }] },
          { name: "Receive shipments", short_name: "Receive", url: "/#/shipments", icons: [{ src: "/icons/icon-192.png", sizes: "192x192" }] },
          { name: "Counts", short_name: "Counts", url: "/#/counts", icons: [{ src: "/icons/icon-192.png", sizes: "192x192" }] },
        ],
        // The richer install dialog: one phone and one tablet view (not precached).
        screenshots: [
          { src: "/screenshots/scan-360.png", sizes: "360x740", type: "image/png", form_factor: "narrow", label: "Scan a pack on a phone" },
          { src: "/screenshots/count-1024.png", sizes: "1024x768", type: "image/png", form_factor: "wide", label: "A blind count on a tablet" },
        ],
      },
      injectManifest: {
        // The app shell, the icons and the barcode reader's wasm (so scanning works offline).
        globPatterns: ["**/*.{html,js,css,png,svg,webmanifest,wasm}"],
        globIgnores: ["screenshots/**"],
        maximumFileSizeToCacheInBytes: 3 * 1024 * 1024,
      },
      devOptions: { enabled: false },
    }),
  ],
  // The decoder worker imports the zxing ponyfill: ES module workers keep it one small chunk.
  worker: { format: "es" },
  build: {
    target: "es2022",
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    assetsInlineLimit: 0,
  },
  server: {
    proxy: {
      "/graphql": { target: api, ws: true },
      "/auth": { target: api },
    },
  },
});
