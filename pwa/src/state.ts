// App-wide state: route, online flag, chosen location, and the user's locations.
import { computed, signal } from "@preact/signals";
import { MyLocationsDocument, type LocationSummaryFragment } from "./gql/graphql";
import { me } from "./lib/auth";
import { cacheGet, cachePut } from "./lib/db";
import { reachable, request } from "./lib/graphql";

export type Role = "ADMIN" | "PHARMACIST" | "WAREHOUSE_MANAGER" | "NURSE" | "SUPPLIER" | "AUDITOR" | "REGULATOR";

const browserOnline = signal(typeof navigator === "undefined" ? true : navigator.onLine);
if (typeof window !== "undefined") {
  window.addEventListener("online", () => {
    browserOnline.value = true;
    reachable.value = true; // optimistic: the next request says otherwise
  });
  window.addEventListener("offline", () => (browserOnline.value = false));
}
/** The browser says it is online and the last request reached the server. */
export const online = computed(() => browserOnline.value && reachable.value);

// Hash routes: `#/<screen>` or `#/<screen>?id=…` for one item of it. `route` is the screen,
// `routeParams` the rest; `href` builds them, so every screen opens items the same way.
function readHash(): [string, URLSearchParams] {
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?");
  return [path.split("/")[0] || "", new URLSearchParams(query)];
}
export const route = signal(readHash()[0]);
export const routeParams = signal(readHash()[1]);
window.addEventListener("hashchange", () => {
  const [screen, params] = readHash();
  route.value = screen;
  routeParams.value = params;
});

/** `#/screen?key=value…` (params left out when empty). */
export function href(screen: string, params: Record<string, string> = {}): string {
  const query = new URLSearchParams(params).toString();
  return `#/${screen}${query ? `?${query}` : ""}`;
}

export function navigate(path: string): void {
  location.hash = `#/${path}`;
}

const roles = computed(() => new Set<Role>((me.value?.roles ?? []) as Role[]));
export const hasRole = (...wanted: Role[]) => wanted.some((r) => roles.value.has(r));

const LOCATION_KEY = "apotheca.location";
export const myLocations = signal<LocationSummaryFragment[]>([]);
export const selectedLocation = signal<string | null>(localStorage.getItem(LOCATION_KEY));

export function selectLocation(id: string): void {
  selectedLocation.value = id;
  localStorage.setItem(LOCATION_KEY, id);
}

/** The user's locations: explicit scope from `me`, else every location in scope (cached). */
export async function loadLocations(): Promise<void> {
  const user = me.value;
  if (!user) {
    myLocations.value = [];
    return;
  }
  let list: LocationSummaryFragment[] = user.locations;
  if (!list.length) {
    const cached = await cacheGet<LocationSummaryFragment[]>("locations", user.username);
    if (cached) myLocations.value = cached;
    try {
      const data = await request(MyLocationsDocument);
      list = data.locations.edges.map((e) => e.node).filter((l) => l.inMyScope);
      void cachePut("locations", user.username, list);
    } catch {
      list = cached ?? [];
    }
  }
  myLocations.value = list;
  if (!list.some((l) => l.id === selectedLocation.value) && list.length) {
    // Prefer wards, then pharmacies: the places people scan at.
    const preferred = list.find((l) => l.kind === "WARD") ?? list.find((l) => l.kind === "PHARMACY") ?? list[0];
    selectLocation(preferred.id);
  }
}

export function forgetLocation(): void {
  localStorage.removeItem(LOCATION_KEY);
  selectedLocation.value = null;
  myLocations.value = [];
}
