// Stock: lots at a location with expiry, searchable; balances change live (stockChanged).
import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import { StockChangedDocument, StockLevelsDocument, type StockLevelsQuery } from "../gql/graphql";
import { allPages } from "../lib/graphql";
import { liveStatus, subscribe } from "../lib/live";
import { myLocations, selectLocation, selectedLocation } from "../state";
import { ExpiryTag, LocationPicker, Screen, Status, useLoad } from "../ui";

type Row = StockLevelsQuery["stockLevels"]["edges"][number]["node"];

export function StockScreen() {
  const locationId = selectedLocation.value;
  const search = useSignal("");
  const loaded = useLoad(locationId ? `stock:${locationId}` : null, () =>
    allPages(StockLevelsDocument, { location: locationId }, (d) => d.stockLevels, 2000),
  );
  // Live overrides on top of the loaded rows, keyed by lot; cleared on every (re)load.
  const live = useSignal<Map<string, Row>>(new Map());
  const flashed = useSignal<Set<string>>(new Set());

  useEffect(() => {
    live.value = new Map();
  }, [loaded.data]);

  useEffect(() => {
    if (!locationId) return;
    return subscribe(StockChangedDocument, { locations: [locationId] }, ({ stockChanged: change }) => {
      if (change.location.id !== locationId) return;
      const next = new Map(live.value);
      const key = change.lot.id;
      next.set(key, {
        id: key,
        quantity: change.quantity,
        updatedAt: change.movement.occurredAt,
        location: change.location,
        lot: change.lot,
        product: change.product,
      });
      live.value = next;
      flashed.value = new Set([...flashed.value, key]);
      setTimeout(() => {
        const rest = new Set(flashed.value);
        rest.delete(key);
        flashed.value = rest;
      }, 1600);
    });
  }, [locationId]);

  const rows = new Map<string, Row>();
  for (const row of loaded.data ?? []) rows.set(row.lot.id, row);
  for (const [key, row] of live.value) rows.set(key, row);

  const term = search.value.trim().toLowerCase();
  const matches = [...rows.values()].filter(
    (r) =>
      !term ||
      `${r.product.name} ${r.product.strength} ${r.product.dosageForm}`.toLowerCase().includes(term) ||
      r.lot.batchNumber.toLowerCase().includes(term) ||
      r.product.gtins.some((g) => g.includes(term)),
  );
  const byProduct = new Map<string, { name: string; form: string; rows: Row[] }>();
  for (const row of matches) {
    const group = byProduct.get(row.product.id) ?? {
      name: `${row.product.name} ${row.product.strength}`,
      form: row.product.dosageForm,
      rows: [],
    };
    group.rows.push(row);
    byProduct.set(row.product.id, group);
  }
  const groups = [...byProduct.values()].sort((a, b) => a.name.localeCompare(b.name));
  for (const g of groups) g.rows.sort((a, b) => a.lot.expiryDate.localeCompare(b.lot.expiryDate));

  return (
    <Screen
      title="Stock"
      actions={
        <span class="pill" data-testid="live-status" aria-label={`Live updates: ${liveStatus.value}`}>
          {liveStatus.value === "connected" ? "● Live" : liveStatus.value === "idle" ? "…" : "○ Reconnecting"}
        </span>
      }
    >
      <LocationPicker locations={myLocations.value} value={locationId} onChange={selectLocation} id="stock-location" />
      <label for="stock-search">
        Search <span class="hint">product, batch or GTIN</span>
        <input
          id="stock-search"
          type="search"
          value={search.value}
          onInput={(e) => (search.value = (e.target as HTMLInputElement).value)}
        />
      </label>
      <Status loaded={loaded} empty={!!loaded.data && !groups.length} />
      {loaded.stale && !loaded.error && <p class="meta">Saved copy; refreshing…</p>}
      <ul class="list" data-testid="stock-list">
        {groups.map((g) => (
          <li key={g.name}>
            <h2 style={{ fontSize: "1.05rem", marginBottom: "0.25rem" }}>{g.name}</h2>
            <p class="meta">{g.form}</p>
            {g.rows.map((r) => (
              <div
                key={r.lot.id}
                class={`lot ${flashed.value.has(r.lot.id) ? "flash" : ""}`}
                data-batch={r.lot.batchNumber}
                data-quantity={r.quantity}
              >
                <span>
                  Batch <strong>{r.lot.batchNumber}</strong>{" "}
                  <ExpiryTag date={r.lot.expiryDate} expired={r.lot.expired} />
                  {r.lot.status !== "RELEASED" && <span class="tag refused"> {r.lot.status}</span>}
                </span>
                <span class="qty" aria-label={`${r.quantity} packs`}>
                  {r.quantity}
                </span>
              </div>
            ))}
          </li>
        ))}
      </ul>
    </Screen>
  );
}
