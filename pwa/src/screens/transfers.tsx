// Transfers: the list (filter by status and location, overdue needs highlighted), live through
// transferUpdated; `#/transfers?id=…` opens one transfer, `#/transfers?new` the request form.
import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import {
  TransferListUpdatedDocument,
  TransfersDocument,
  type TransferListFieldsFragment,
  type TransferStatus,
} from "../gql/graphql";
import {
  NEW_TRANSFER_HREF,
  OPEN_STATUSES,
  STATUS_LABEL,
  STATUS_TONE,
  overdue,
  transferHref,
  transferView,
} from "../components/transfers";
import { allPages } from "../lib/graphql";
import { subscribe } from "../lib/live";
import { hasRole, myLocations } from "../state";
import { LiveBadge, StatusTag } from "../components/status";
import { Screen, Status, formatDateTime, useLoad } from "../ui";
import { TransferDetail } from "./transfer-detail";
import { TransferRequest } from "./transfer-request";

type Row = TransferListFieldsFragment;
type StatusFilter = "OPEN" | "ALL" | TransferStatus;

const STATUS_FILTERS: [StatusFilter, string][] = [
  ["OPEN", "Open"],
  ["ALL", "All"],
  ...(Object.entries(STATUS_LABEL) as [TransferStatus, string][]),
];

export function TransfersScreen() {
  const view = transferView.value;
  // Headings take focus when the view changes, so screen readers follow the navigation.
  useEffect(() => {
    document.getElementById("screen-title")?.focus();
  }, [view.id, view.creating]);
  if (view.creating) return <TransferRequest />;
  if (view.id) return <TransferDetail id={view.id} />;
  return <TransferList />;
}

function TransferList() {
  const status = useSignal<StatusFilter>("OPEN");
  const locationFilter = useSignal<string>(""); // "" = every location I see
  const serverStatus = status.value === "OPEN" || status.value === "ALL" ? null : status.value;
  const loaded = useLoad(`transfers:${status.value}:${locationFilter.value}`, () =>
    allPages(
      TransfersDocument,
      { status: serverStatus, location: locationFilter.value || null },
      (d) => d.transfers,
      300,
    ),
  );
  // Live changes on top of the loaded rows; cleared on every (re)load.
  const live = useSignal<Map<string, Row>>(new Map());
  const flashed = useSignal<Set<string>>(new Set());

  useEffect(() => {
    live.value = new Map();
  }, [loaded.data]);

  useEffect(
    () =>
      subscribe(TransferListUpdatedDocument, {}, ({ transferUpdated }) => {
        const row = transferUpdated.transfer;
        live.value = new Map(live.value).set(row.id, row);
        flashed.value = new Set([...flashed.value, row.id]);
        setTimeout(() => {
          const rest = new Set(flashed.value);
          rest.delete(row.id);
          flashed.value = rest;
        }, 1600);
      }),
    [],
  );

  const rows = new Map<string, Row>();
  for (const row of live.value.values()) if (!loaded.data?.some((r) => r.id === row.id)) rows.set(row.id, row);
  for (const row of loaded.data ?? []) rows.set(row.id, live.value.get(row.id) ?? row);
  const matches = (t: Row) =>
    (status.value === "ALL" ||
      (status.value === "OPEN" ? OPEN_STATUSES.includes(t.status) : t.status === status.value)) &&
    (!locationFilter.value || t.source.id === locationFilter.value || t.destination.id === locationFilter.value);
  const items = [...rows.values()].filter(matches).sort((a, b) => b.requestedAt.localeCompare(a.requestedAt));
  const canRequest = hasRole("NURSE", "PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN") && myLocations.value.length > 0;

  return (
    <Screen title="Transfers" actions={<LiveBadge />}>
      {canRequest && (
        <a class="button primary link-button" href={NEW_TRANSFER_HREF} style={{ textAlign: "center", marginBottom: "0.75rem" }}>
          New request
        </a>
      )}
      <div class="row">
        <label for="transfer-status">
          Status
          <select id="transfer-status" value={status.value} onChange={(e) => (status.value = (e.target as HTMLSelectElement).value as StatusFilter)}>
            {STATUS_FILTERS.map(([value, label]) => (
              <option key={value} value={value}>
                {label}
              </option>
            ))}
          </select>
        </label>
        {myLocations.value.length > 0 && (
          <label for="transfer-location">
            Location
            <select id="transfer-location" value={locationFilter.value} onChange={(e) => (locationFilter.value = (e.target as HTMLSelectElement).value)}>
              <option value="">All I see</option>
              {myLocations.value.map((l) => (
                <option key={l.id} value={l.id}>
                  {l.code} — {l.name}
                </option>
              ))}
            </select>
          </label>
        )}
      </div>
      <Status loaded={loaded} empty={!!loaded.data && !items.length} />
      {loaded.stale && !loaded.error && <p class="meta">Saved copy; refreshing…</p>}
      <ul class="list" data-testid="transfer-list">
        {items.map((t) => {
          const late = overdue(t);
          return (
            <li key={t.id} data-number={t.number} data-status={t.status} class={flashed.value.has(t.id) ? "flash" : ""}>
              <a class="item-link" href={transferHref(t.id)}>
                <span class="row" style={{ alignItems: "center", justifyContent: "space-between" }}>
                  <strong style={{ flex: "0 1 auto", color: "var(--focus)", textDecoration: "underline" }}>{t.number}</strong>
                  <span style={{ flex: "0 0 auto" }}>
                    <StatusTag status={t.status} label={STATUS_LABEL[t.status]} tone={STATUS_TONE[t.status]} />
                  </span>
                </span>
                <span style={{ display: "block" }}>
                  {t.source.code} → {t.destination.code}
                </span>
                <span class="meta" style={{ display: "block" }}>
                  {t.lines.map((l) => `${l.approvedQuantity ?? l.requestedQuantity} × ${l.product.name} ${l.product.strength}`).join(", ")}
                </span>
                <span class="meta" style={{ display: "block" }}>
                  Requested {formatDateTime(t.requestedAt)}
                  {t.neededBy && !late && ` · needed by ${t.neededBy}`}
                </span>
                {late && (
                  <span class="tag expired" data-overdue="true" style={{ marginTop: "0.25rem" }}>
                    Overdue: needed by {t.neededBy}
                  </span>
                )}
              </a>
            </li>
          );
        })}
      </ul>
      <p class="meta">
        Transfers move stock between locations: requested by the destination, approved, picked and
        dispatched by the source, received at the destination.
      </p>
    </Screen>
  );
}
