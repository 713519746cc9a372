// Small shared pieces: expiry tags, number and date formats, location picker, data loading with
// offline cache.
import { useSignal, useSignalEffect } from "@preact/signals";
import type { ComponentChildren } from "preact";
import { useLayoutEffect, useRef } from "preact/hooks";
import type { LocationSummaryFragment } from "./gql/graphql";
import { me } from "./lib/auth";
import { cacheGet, cachePut } from "./lib/db";
import { describeError } from "./lib/graphql";
import { daysUntil, expiryState } from "./lib/dates";
import { reconnects } from "./lib/live";
import { formatDate, t } from "./lib/messages";

export function ExpiryTag({ date, expired }: { date: string | null | undefined; expired?: boolean | null }) {
  if (!date) return <span class="tag neutral" data-expiry="unknown">{t("scan.expiryUnknown")}</span>;
  const state = expiryState(date, expired);
  const days = daysUntil(date);
  const text =
    state === "expired"
      ? `EXPIRED ${formatDate(date)}`
      : state === "near"
        ? `Expires ${formatDate(date)} (${days} d)`
        : `Expires ${formatDate(date)}`;
  return <span class={`tag ${state}`} data-expiry={state}>{text}</span>;
}

export function formatDateTime(iso: string | null | undefined): string {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** A number with its sign written out (a real minus): +3, −2, 0; `zero` goes before a zero. */
export function signed(n: number, digits?: number, zero = ""): string {
  const abs = Math.abs(n);
  return `${n > 0 ? "+" : n < 0 ? "−" : zero}${digits === undefined ? abs : abs.toFixed(digits)}`;
}

export function percent(value: number | null | undefined): string {
  return value == null ? "—" : `${Math.round(value * 100)} %`;
}

export function LocationPicker({
  locations,
  value,
  onChange,
  id = "location",
}: {
  locations: LocationSummaryFragment[];
  value: string | null;
  onChange: (id: string) => void;
  id?: string;
}) {
  if (!locations.length) return <p class="meta">No locations in your scope.</p>;
  // On a phone "WARD-A — Ward A - Internal medicine" does not fit the closed select: the
  // options carry the code there, and the chosen location's full name shows under it.
  const narrow = typeof matchMedia === "function" && matchMedia("(max-width: 520px)").matches;
  const chosen = locations.find((l) => l.id === value) ?? locations[0];
  return (
    <label for={id}>
      Location
      <select
        id={id}
        value={value ?? ""}
        aria-describedby={narrow ? `${id}-name` : undefined}
        onChange={(e) => onChange((e.target as HTMLSelectElement).value)}
      >
        {locations.map((l) => (
          <option key={l.id} value={l.id}>
            {narrow ? l.code : `${l.code} — ${l.name}`}
          </option>
        ))}
      </select>
      {narrow && (
        <span class="hint" id={`${id}-name`} data-testid="location-name">
          {chosen.name}
        </span>
      )}
    </label>
  );
}

export interface Loaded<T> {
  data: T | undefined;
  error: string | null;
  loading: boolean;
  /** True when `data` came from the device's cache (offline). */
  stale: boolean;
  reload: () => void;
}

/**
 * Load with `fetcher`, keep the last good answer in IndexedDB under `key` for offline opening,
 * and refetch whenever the live socket reconnects (events may have been missed meanwhile).
 */
export function useLoad<T>(key: string | null, fetcher: () => Promise<T>): Loaded<T> {
  const data = useSignal<T | undefined>(undefined);
  const error = useSignal<string | null>(null);
  const loading = useSignal(true);
  const stale = useSignal(false);
  const tick = useSignal(0);
  // Which key `data` answers: another key's answer is never shown, even for the moment
  // between a new key and the effect that clears it.
  const dataKey = useRef<string | null>(null);
  const keyRef = useRef(key);
  keyRef.current = key;
  const fetcherRef = useRef(fetcher);
  fetcherRef.current = fetcher;

  useSignalEffect(() => {
    tick.value;
    reconnects.value;
    const username = me.value?.username;
    const runKey = keyRef.current;
    if (!runKey || !username) return;
    let cancelled = false;
    loading.value = true;
    const empty = data.peek() === undefined; // peek: this effect must not depend on data
    void (async () => {
      await Promise.resolve(); // nothing below is tracked by this effect
      if (empty) {
        const cached = await cacheGet<T>(runKey, username);
        if (!cancelled && cached !== undefined && data.peek() === undefined) {
          dataKey.current = runKey;
          data.value = cached;
          stale.value = true;
        }
      }
      try {
        const fresh = await fetcherRef.current();
        if (cancelled) return;
        dataKey.current = runKey;
        data.value = fresh;
        stale.value = false;
        error.value = null;
        void cachePut(runKey, username, fresh);
      } catch (e) {
        if (!cancelled) error.value = describeError(e);
      } finally {
        if (!cancelled) loading.value = false;
      }
    })();
    return () => {
      cancelled = true;
    };
  });

  // A new key (another location) starts from nothing.
  const previousKey = useRef(key);
  useLayoutEffect(() => {
    if (previousKey.current === key) return;
    previousKey.current = key;
    data.value = undefined;
    stale.value = false;
    tick.value++;
  }, [key]);

  return {
    data: dataKey.current === key ? data.value : undefined,
    error: error.value,
    loading: loading.value,
    stale: stale.value,
    reload: () => {
      tick.value++;
    },
  };
}

export function Status({ loaded, empty }: { loaded: Loaded<unknown>; empty?: boolean }) {
  return (
    <>
      {loaded.error && (
        <p class="notice danger" role="alert">
          {loaded.error} {loaded.stale && "Showing what this device saved last."}
        </p>
      )}
      {loaded.loading && loaded.data === undefined && <p aria-live="polite">Loading…</p>}
      {empty && !loaded.loading && <p>Nothing here.</p>}
    </>
  );
}

export function Screen({ title, children, actions }: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  return (
    <section aria-labelledby="screen-title">
      <div class="row" style={{ alignItems: "center", marginBottom: "0.5rem" }}>
        <h1 id="screen-title" tabIndex={-1} style={{ flex: "1 1 auto", margin: 0 }}>
          {title}
        </h1>
        {actions}
      </div>
      {children}
    </section>
  );
}
