/// <reference lib="webworker" />
// The service worker: precaches the app shell (and the barcode reader's wasm) with Workbox, so
// the app opens and scans offline. API calls (/graphql, /auth) always go to the network: stock
// data offline comes from the app's own IndexedDB copy, and mutations from its outbox.
import { cleanupOutdatedCaches, createHandlerBoundToURL, precacheAndRoute } from "workbox-precaching";
import { NavigationRoute, registerRoute } from "workbox-routing";
import { clientsClaim } from "workbox-core";

declare let self: ServiceWorkerGlobalScope & { __WB_MANIFEST: (string | { url: string; revision: string | null })[] };

precacheAndRoute(self.__WB_MANIFEST);
cleanupOutdatedCaches();

// Every navigation inside the app gets the cached shell.
registerRoute(
  new NavigationRoute(createHandlerBoundToURL("index.html"), {
    denylist: [/^\/graphql/, /^\/auth\//, /^\/healthz/, /^\/metrics/],
  }),
);

self.addEventListener("message", (event) => {
  if (event.data?.type === "SKIP_WAITING") void self.skipWaiting();
});

// The first install takes control at once; later versions wait for the user (see sw-register).
clientsClaim();
