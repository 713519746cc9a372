// Registers the service worker (sw.ts). A new version waits until the user chooses to reload,
// so a running page never loses the files it was built with.
import { signal } from "@preact/signals";

export const updateReady = signal(false);
let waiting: ServiceWorker | null = null;

export function registerServiceWorker(): void {
  if (!("serviceWorker" in navigator) || import.meta.env.DEV) return;
  window.addEventListener("load", async () => {
    try {
      const registration = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
      const offer = (worker: ServiceWorker | null) => {
        if (worker && navigator.serviceWorker.controller) {
          waiting = worker;
          updateReady.value = true;
        }
      };
      offer(registration.waiting);
      registration.addEventListener("updatefound", () => {
        const installing = registration.installing;
        installing?.addEventListener("statechange", () => {
          if (installing.state === "installed") offer(installing);
        });
      });
      // Look for a new version when the app comes back to the foreground.
      document.addEventListener("visibilitychange", () => {
        if (document.visibilityState === "visible") void registration.update().catch(() => undefined);
      });
    } catch (error) {
      console.warn("service worker registration failed", error);
    }
  });
}

export function applyUpdate(): void {
  if (!waiting) return;
  navigator.serviceWorker.addEventListener("controllerchange", () => window.location.reload(), { once: true });
  waiting.postMessage({ type: "SKIP_WAITING" });
}
