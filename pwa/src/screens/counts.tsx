// Stock counts. Start a count at one of my locations; the count sheet lists the lots there with
// what the system holds, takes the counted number per lot (typed, or found by scanning a pack)
// and shows the variance as it is typed; finalizing posts each variance as a COUNT movement and
// then shows, per lot, the movement and anything that moved after the shelf was counted.
// Count lines and finalizing go through the outbox; starting and cancelling need the server.
import { useSignal } from "@preact/signals";
import { useEffect, useRef } from "preact/hooks";
import {
  CancelCountDocument,
  FinalizeCountWitnessedDocument,
  ParseBarcodeDocument,
  StartCountDocument,
  StockChangedDocument,
  StockCountDocument,
  StockCountsDocument,
  type CountMovementFragment,
  type CountStatus,
  type LotSummaryFragment,
  type ProductSummaryFragment,
  type StockCountLineFieldsFragment,
  type StockCountQuery,
} from "../gql/graphql";
import type { OutboxEntry } from "../lib/db";
import { allPages, describeError, request } from "../lib/graphql";
import { parseLocal } from "../lib/gs1";
import { subscribe } from "../lib/live";
import { enqueue, onSettled } from "../lib/outbox";
import { OutboxList, entriesFor } from "../components/outbox";
import { PackScanner } from "../components/pack-scanner";
import { WitnessDialog, witnessMessage, type Witness } from "../components/witness";
import { hasRole, href, myLocations, online, routeParams, selectedLocation } from "../state";
import { StatusTag } from "../components/status";
import { ExpiryTag, LocationPicker, Screen, Status, formatDateTime, signed, useLoad } from "../ui";
import { t } from "../lib/messages";

type Count = NonNullable<StockCountQuery["stockCount"]>;

const STATUS_TEXT: Record<CountStatus, string> = { OPEN: "Open", FINALIZED: "Finalized", CANCELLED: "Cancelled" };
const STATUS_TAG: Record<CountStatus, string> = { OPEN: "pending", FINALIZED: "done", CANCELLED: "neutral" };
const KIND_TEXT: Record<string, string> = {
  DISPENSE: "Dispensed",
  RETURN: "Returned",
  RECEIVE: "Received",
  DISPOSE: "Wasted",
  TRANSFER_IN: "Transferred in",
  TRANSFER_OUT: "Transferred out",
  ADJUST: "Adjusted",
  COUNT: "Count",
  SHIP: "Shipped",
  PRODUCE: "Produced",
};

function VarianceTag({ value }: { value: number | null }) {
  if (value === null) return <span class="tag neutral">Not counted</span>;
  if (value === 0) return <span class="tag ok" data-variance="0">No variance</span>;
  return (
    <span class={`tag ${value < 0 ? "refused" : "near"}`} data-variance={value}>
      {value < 0 ? "Short" : "Over"} {signed(value)}
    </span>
  );
}

export function CountsScreen() {
  const id = routeParams.value.get("id");
  return id ? <CountDetail id={id} /> : <CountList />;
}

const canCount = () => hasRole("NURSE", "PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN");

// --- the list and starting a count -------------------------------------------------------------

function CountList() {
  const filter = useSignal<"OPEN" | "ALL">("OPEN");
  const loaded = useLoad(`counts:${filter.value}`, () =>
    allPages(StockCountsDocument, { status: filter.value === "OPEN" ? "OPEN" : null }, (d) => d.stockCounts, 200),
  );
  const items = loaded.data ?? [];
  return (
    <Screen title="Counts">
      {canCount() && <StartCount />}
      <div class="row" role="group" aria-label="Which counts">
        <button type="button" aria-pressed={filter.value === "OPEN"} class={filter.value === "OPEN" ? "primary" : ""} onClick={() => (filter.value = "OPEN")}>
          Open
        </button>
        <button type="button" aria-pressed={filter.value === "ALL"} class={filter.value === "ALL" ? "primary" : ""} onClick={() => (filter.value = "ALL")}>
          All
        </button>
      </div>
      <Status loaded={loaded} empty={!!loaded.data && !items.length} />
      {loaded.stale && !loaded.error && <p class="meta">Saved copy; refreshing…</p>}
      <ul class="list" data-testid="count-list">
        {items.map((c) => {
          const net = c.lines.reduce((n, l) => n + l.variance, 0);
          return (
            <li key={c.id} data-count={c.id} data-location={c.location.code} data-status={c.status}>
              <a class="button link-button" href={href("counts", { id: c.id })}>
                <span class="row" style={{ alignItems: "center" }}>
                  <strong style={{ flex: "1 1 auto" }}>
                    {c.location.code} — {c.location.name}
                  </strong>
                  <StatusTag status={c.status} label={STATUS_TEXT[c.status]} tone={STATUS_TAG[c.status]} />
                </span>
                <span class="meta" style={{ display: "block", fontWeight: 400 }}>
                  Started {formatDateTime(c.startedAt)} by {c.startedBy?.username ?? "—"} · {c.lines.length} lot(s) counted · net variance {signed(net)}
                </span>
                {c.reason && (
                  <span class="meta" style={{ display: "block", fontWeight: 400 }}>
                    {c.reason}
                  </span>
                )}
              </a>
            </li>
          );
        })}
      </ul>
    </Screen>
  );
}

function StartCount() {
  const locations = myLocations.value;
  const location = useSignal<string | null>(selectedLocation.value);
  const reason = useSignal("");
  const busy = useSignal(false);
  const error = useSignal<string | null>(null);
  const chosen = locations.some((l) => l.id === location.value) ? location.value : locations[0]?.id ?? null;

  async function start(event: Event) {
    event.preventDefault();
    if (!chosen) return;
    busy.value = true;
    error.value = null;
    try {
      const { startCount } = await request(StartCountDocument, { location: chosen, reason: reason.value.trim() || null });
      if (startCount.errors.length) {
        error.value = startCount.errors.map((e) => e.message).join("; ");
        return;
      }
      if (startCount.stockCount) window.location.hash = href("counts", { id: startCount.stockCount.id });
    } catch (e) {
      error.value = describeError(e);
    } finally {
      busy.value = false;
    }
  }

  return (
    <form class="card panel" onSubmit={(e) => void start(e)} aria-labelledby="start-title">
      <h2 id="start-title">Start a count</h2>
      <LocationPicker locations={locations} value={chosen} onChange={(id) => (location.value = id)} id="count-location" />
      <label for="count-reason">
        Reason <span class="hint">(optional)</span>
        <input id="count-reason" autoComplete="off" value={reason.value} onInput={(e) => (reason.value = (e.target as HTMLInputElement).value)} />
      </label>
      <button type="submit" class="primary big" disabled={busy.value || !online.value || !chosen}>
        {busy.value ? "Starting…" : "Start count"}
      </button>
      {!online.value && <p class="meta">Offline: starting a count needs the server.</p>}
      {error.value && (
        <p class="notice danger" role="alert" data-testid="start-error">
          {error.value}
        </p>
      )}
    </form>
  );
}

// --- one count -----------------------------------------------------------------------------------

const forCount = (id: string) => (e: OutboxEntry) =>
  (e.operation === "recordCountLine" || e.operation === "finalizeCount") && e.variables.count === id;

interface Row {
  lot: LotSummaryFragment;
  product: ProductSummaryFragment;
  /** What the system holds now. */
  current: number;
  line?: StockCountLineFieldsFragment;
}

/** Lots on one page of the count sheet (a warehouse holds hundreds). */
const PAGE_SIZE = 25;

function buildRows(count: Count, extra: Row[]): Row[] {
  const rows = new Map<string, Row>();
  for (const u of count.uncountedLots) rows.set(u.lot.id, { lot: u.lot, product: u.product, current: u.quantity });
  for (const line of count.lines) rows.set(line.lot.id, { lot: line.lot, product: line.product, current: line.currentSystemQuantity, line });
  for (const row of extra) if (!rows.has(row.lot.id)) rows.set(row.lot.id, row);
  return [...rows.values()].sort(
    (a, b) => `${a.product.name} ${a.product.strength}`.localeCompare(`${b.product.name} ${b.product.strength}`) || a.lot.expiryDate.localeCompare(b.lot.expiryDate),
  );
}

function CountDetail({ id }: { id: string }) {
  const loaded = useLoad(`count:${id}`, async () => (await request(StockCountDocument, { id })).stockCount);
  const count = loaded.data;
  const reloadTimer = useRef<ReturnType<typeof setTimeout>>();

  useEffect(
    () =>
      onSettled((entry) => {
        if (forCount(id)(entry)) loaded.reload();
      }),
    [id],
  );
  // Stock moving at this location changes the system side (and the finalize preview).
  const locationId = count?.location.id;
  useEffect(() => {
    if (!locationId || count?.status !== "OPEN") return;
    return subscribe(StockChangedDocument, { locations: [locationId] }, () => {
      clearTimeout(reloadTimer.current);
      reloadTimer.current = setTimeout(() => loaded.reload(), 300);
    });
  }, [locationId, count?.status]);

  return (
    <Screen
      title={count ? `Count at ${count.location.code}` : "Count"}
      actions={
        <a class="button" href="#/counts">
          All counts
        </a>
      }
    >
      <Status loaded={loaded} />
      {loaded.stale && !loaded.error && <p class="meta">Saved copy; refreshing…</p>}
      {loaded.data === null && <p class="notice danger">This count does not exist or is not in your scope.</p>}
      {count && (
        <>
          <section class="card" aria-label="Count summary" data-testid="count-header" data-status={count.status}>
            <p>
              <StatusTag status={count.status} label={STATUS_TEXT[count.status]} tone={STATUS_TAG[count.status]} /> {count.location.name}
            </p>
            <p class="meta">
              Started {formatDateTime(count.startedAt)} by {count.startedBy?.username ?? "—"}
              {count.closedAt && ` · ${STATUS_TEXT[count.status].toLowerCase()} ${formatDateTime(count.closedAt)} by ${count.closedBy?.username ?? "—"}`}
            </p>
            {count.reason && <p>{count.reason}</p>}
          </section>
          {count.status === "OPEN" ? <CountSheet count={count} onWitnessed={loaded.reload} /> : <Outcome count={count} />}
          <OutboxList match={forCount(id)} id="count-outbox" title="Sent from this device" />
        </>
      )}
    </Screen>
  );
}

function latestPending(entries: OutboxEntry[], lotId: string): number | null {
  const mine = entries.filter((e) => e.operation === "recordCountLine" && e.variables.lot === lotId && e.status === "pending");
  return mine.length ? Number(mine[mine.length - 1].variables.countedQuantity) : null;
}

function CountSheet({ count, onWitnessed }: { count: Count; onWitnessed: () => void }) {
  const drafts = useSignal<Map<string, string>>(new Map());
  const extra = useSignal<Row[]>([]);
  const found = useSignal<string | null>(null);
  const scanNote = useSignal<string | null>(null);
  const search = useSignal("");
  const uncountedOnly = useSignal(false);
  const page = useSignal(0);
  const confirming = useSignal(false);
  const witnessing = useSignal(false);
  const entries = entriesFor(forCount(count.id));
  const finalizing = entries.some((e) => e.operation === "finalizeCount" && e.status === "pending");
  const rows = buildRows(count, extra.value);

  /** The counted number a row will post: typed now, waiting on this device, or recorded. */
  const counted = (row: Row): number | null => {
    const draft = drafts.value.get(row.lot.id);
    if (draft !== undefined && draft.trim() !== "" && Number.isInteger(Number(draft))) return Number(draft);
    const pending = latestPending(entries, row.lot.id);
    if (pending !== null) return pending;
    return row.line ? row.line.countedQuantity : null;
  };
  /** A recorded line keeps its snapshot; a new or re-typed entry is compared with now. */
  const system = (row: Row): number => {
    const draft = drafts.value.get(row.lot.id);
    const retyped = (draft !== undefined && draft.trim() !== "") || latestPending(entries, row.lot.id) !== null;
    return row.line && !retyped ? row.line.systemQuantityAtCount : row.current;
  };
  const variance = (row: Row): number | null => {
    const c = counted(row);
    return c === null ? null : c - system(row);
  };

  const countedRows = rows.filter((r) => counted(r) !== null);
  const withVariance = countedRows.filter((r) => variance(r) !== 0);
  const controlledVariance = withVariance.filter((r) => r.product.controlled);
  const net = countedRows.reduce((n, r) => n + (variance(r) ?? 0), 0);
  const unsaved = rows.filter((r) => {
    const draft = drafts.value.get(r.lot.id);
    return draft !== undefined && draft.trim() !== "";
  });

  function focusRow(lotId: string) {
    found.value = lotId;
    // The lot may be on another page, or hidden by the filter: show it.
    uncountedOnly.value = false;
    search.value = "";
    const index = buildRows(count, extra.value).findIndex((r) => r.lot.id === lotId);
    if (index >= 0) page.value = Math.floor(index / PAGE_SIZE);
    setTimeout(() => {
      const input = document.getElementById(inputId(lotId)) as HTMLInputElement | null;
      input?.scrollIntoView({ block: "center", behavior: "smooth" });
      input?.focus();
    }, 50);
  }

  async function onCode(barcode: string) {
    scanNote.value = null;
    search.value = "";
    const local = parseLocal(barcode);
    const hit = local?.gtin
      ? rows.find((r) => r.product.gtins.includes(local.gtin!) && (!local.batch || r.lot.batchNumber === local.batch))
      : undefined;
    if (hit && (local?.batch || rows.filter((r) => r.product.gtins.includes(local!.gtin!)).length === 1)) {
      focusRow(hit.lot.id);
      scanNote.value = `Found batch ${hit.lot.batchNumber}: type the count.`;
      return;
    }
    if (!online.value) {
      scanNote.value = local?.gtin ? "This pack is not on the sheet; offline, the server cannot look it up." : "Unrecognised barcode.";
      return;
    }
    try {
      const { parseBarcode: pack } = await request(ParseBarcodeDocument, { barcode, location: count.location.id });
      if (!pack.lot || !pack.product) {
        scanNote.value = pack.errors.map((e) => e.message).join("; ") || "This pack's batch is not known here.";
        return;
      }
      if (!rows.some((r) => r.lot.id === pack.lot!.id)) {
        extra.value = [...extra.value, { lot: pack.lot, product: pack.product, current: pack.quantityOnHand ?? 0 }];
      }
      focusRow(pack.lot.id);
      scanNote.value = `Found batch ${pack.lot.batchNumber}: type the count.`;
    } catch (e) {
      scanNote.value = describeError(e);
    }
  }

  async function save(row: Row) {
    const draft = drafts.value.get(row.lot.id);
    const value = Number(draft);
    if (draft === undefined || draft.trim() === "" || !Number.isInteger(value) || value < 0) return;
    await enqueue(
      "recordCountLine",
      { count: count.id, lot: row.lot.id, countedQuantity: value },
      { title: `Counted ${value} × ${row.product.name} ${row.product.strength}, batch ${row.lot.batchNumber} at ${count.location.code}`, batch: row.lot.batchNumber, location: count.location.code },
    );
    const next = new Map(drafts.value);
    next.delete(row.lot.id);
    drafts.value = next;
  }

  async function finalize() {
    confirming.value = false;
    await enqueue("finalizeCount", { count: count.id }, { title: `Finalize the count at ${count.location.code}`, location: count.location.code });
  }

  /** Controlled drugs whose count differs from the register: a witness, sent at once. */
  async function finalizeWitnessed(witness: Witness): Promise<string | null> {
    try {
      const data = await request(FinalizeCountWitnessedDocument, { count: count.id, idempotencyKey: crypto.randomUUID(), witness });
      const errors = data.finalizeCount.errors;
      if (errors.length) return errors.map((e) => witnessMessage(e.code, e.message)).join(" ");
      witnessing.value = false;
      confirming.value = false;
      onWitnessed();
      return null;
    } catch (error) {
      return describeError(error);
    }
  }

  const term = search.value.trim().toLowerCase();
  const matching = rows.filter(
    (r) =>
      (!term || `${r.product.name} ${r.product.strength}`.toLowerCase().includes(term) || r.lot.batchNumber.toLowerCase().includes(term)) &&
      (!uncountedOnly.value || counted(r) === null),
  );
  const pages = Math.max(1, Math.ceil(matching.length / PAGE_SIZE));
  const current = Math.min(page.value, pages - 1);
  const shown = matching.slice(current * PAGE_SIZE, (current + 1) * PAGE_SIZE);
  /** Blind count: the system side of a lot shows only once its count is recorded on the server. */
  const revealed = (row: Row): boolean =>
    !!row.line && latestPending(entries, row.lot.id) === null && (drafts.value.get(row.lot.id) ?? "").trim() === "";

  return (
    <>
      <section class="card" aria-labelledby="find-title">
        <h2 id="find-title">Find a lot by scanning</h2>
        <PackScanner id="count-scan" onCode={(b) => void onCode(b)} submitLabel="Find this lot" manualOpen={false} />
        {scanNote.value && (
          <p class="notice pending" role="status" data-testid="count-scan-note">
            {scanNote.value}
          </p>
        )}
      </section>

      <section aria-labelledby="sheet-title">
        <h2 id="sheet-title">Count sheet</h2>
        <p class="meta" data-testid="count-totals" data-counted={countedRows.length} data-net={net}>
          {countedRows.length} of {rows.length} lot(s) counted · {withVariance.length} with a variance · net {signed(net)} pack(s)
        </p>
        <label for="count-search">
          Search <span class="hint">product or batch</span>
          <input
            id="count-search"
            type="search"
            value={search.value}
            onInput={(e) => {
              search.value = (e.target as HTMLInputElement).value;
              page.value = 0;
            }}
          />
        </label>
        <label for="count-uncounted" class="check">
          <input
            id="count-uncounted"
            type="checkbox"
            checked={uncountedOnly.value}
            onChange={(e) => {
              uncountedOnly.value = (e.target as HTMLInputElement).checked;
              page.value = 0;
            }}
          />{" "}
          {t("count.uncountedOnly")}
        </label>
        {!rows.length && <p>No stock recorded here. Scan a pack to count a lot that is on the shelf.</p>}
        <ul class="list" data-testid="count-sheet">
          {shown.map((row) => {
            const v = variance(row);
            const pending = latestPending(entries, row.lot.id);
            const refused = entries.some((e) => e.operation === "recordCountLine" && e.variables.lot === row.lot.id && e.status === "refused");
            const draft = drafts.value.get(row.lot.id);
            const c = counted(row);
            return (
              <li
                key={row.lot.id}
                data-batch={row.lot.batchNumber}
                data-system={revealed(row) ? system(row) : undefined}
                data-counted={c ?? ""}
                class={found.value === row.lot.id ? "flash" : ""}
              >
                <form
                  onSubmit={(e) => {
                    e.preventDefault();
                    void save(row);
                  }}
                >
                  <h3>
                    {row.product.name} {row.product.strength}
                  </h3>
                  <p>
                    Batch <strong>{row.lot.batchNumber}</strong> <ExpiryTag date={row.lot.expiryDate} expired={row.lot.expired} />
                  </p>
                  <p>
                    {revealed(row) ? (
                      <>
                        System <strong data-testid="system">{system(row)}</strong>
                        {row.line && row.line.currentSystemQuantity !== row.line.systemQuantityAtCount && (
                          <span class="meta"> (now {row.line.currentSystemQuantity}: moved since counted)</span>
                        )}{" "}
                        <VarianceTag value={v} />
                      </>
                    ) : (
                      <span class="meta" data-testid="system-hidden">
                        System: {t("count.blindHidden")}
                      </span>
                    )}
                    {pending !== null && <span class="tag pending"> Pending</span>}
                    {refused && <span class="tag refused"> Refused</span>}
                    {row.line && pending === null && !draft && <span class="tag done"> Recorded</span>}
                  </p>
                  <div class="row">
                    <label for={inputId(row.lot.id)}>
                      Counted <span class="sr-only">, batch {row.lot.batchNumber}</span>
                      <input
                        id={inputId(row.lot.id)}
                        type="number"
                        inputMode="numeric"
                        min={0}
                        value={draft ?? (c === null ? "" : String(c))}
                        onInput={(e) => (drafts.value = new Map(drafts.value).set(row.lot.id, (e.target as HTMLInputElement).value))}
                      />
                    </label>
                    <button type="submit" disabled={draft === undefined || draft.trim() === "" || finalizing} aria-label={`Save count of batch ${row.lot.batchNumber}`}>
                      Save
                    </button>
                  </div>
                </form>
              </li>
            );
          })}
        </ul>
        {matching.length > PAGE_SIZE && (
          <nav class="pager" aria-label="Count sheet pages" data-testid="count-pager">
            <button type="button" disabled={current === 0} onClick={() => (page.value = current - 1)}>
              Previous
            </button>
            <span role="status">
              {t("count.showing", { from: current * PAGE_SIZE + 1, to: current * PAGE_SIZE + shown.length, total: matching.length })}
            </span>
            <button type="button" disabled={current >= pages - 1} onClick={() => (page.value = current + 1)}>
              Next
            </button>
          </nav>
        )}
      </section>

      <section class="card" aria-labelledby="finish-title">
        <h2 id="finish-title">Finish</h2>
        {finalizing ? (
          <p class="notice pending" role="status">
            Finalizing: waiting to be sent{online.value ? "…" : " when the connection returns."}
          </p>
        ) : !confirming.value ? (
          <button type="button" class="primary big" disabled={!countedRows.length} onClick={() => (confirming.value = true)}>
            Finalize count…
          </button>
        ) : (
          <div data-testid="finalize-confirm">
            {withVariance.length ? (
              <>
                <p>These variances will be posted as COUNT movements:</p>
                <ul data-testid="variance-preview">
                  {withVariance.map((r) => (
                    <li key={r.lot.id} data-batch={r.lot.batchNumber}>
                      Batch <strong>{r.lot.batchNumber}</strong> ({r.product.name}): counted {counted(r)}, system {system(r)} → <strong>{signed(variance(r)!)}</strong>
                    </li>
                  ))}
                </ul>
              </>
            ) : (
              <p>Every counted lot matches the system: nothing will be posted.</p>
            )}
            {rows.length > countedRows.length && <p class="meta">{rows.length - countedRows.length} lot(s) not counted are left as they are.</p>}
            {unsaved.length > 0 && <p class="notice danger">{unsaved.length} typed count(s) are not saved yet: save them first or they are not part of the count.</p>}
            <div class="actions">
              <button
                type="button"
                class="primary big"
                onClick={() => (controlledVariance.length ? (witnessing.value = true) : void finalize())}
                disabled={controlledVariance.length > 0 && !online.value}
              >
                {controlledVariance.length ? "Confirm with witness: finalize" : "Confirm: finalize"}
              </button>
              <button type="button" class="big" onClick={() => (confirming.value = false)}>
                Back
              </button>
            </div>
          </div>
        )}
        {!countedRows.length && <p class="meta">Record at least one lot before finalizing.</p>}
        {witnessing.value && (
          <WitnessDialog
            summary={`Finalize the count at ${count.location.code}: ${controlledVariance
              .map((r) => `${r.product.name} ${r.product.strength} batch ${r.lot.batchNumber} ${signed(variance(r)!)}`)
              .join("; ")} (controlled drugs differing from the register).`}
            onSubmit={finalizeWitnessed}
            onCancel={() => (witnessing.value = false)}
          />
        )}
        <CancelCount count={count} />
      </section>
    </>
  );
}

const inputId = (lotId: string) => `counted-${lotId.replace(/[^A-Za-z0-9]/g, "")}`;

function CancelCount({ count }: { count: Count }) {
  const open = useSignal(false);
  const reason = useSignal("");
  const busy = useSignal(false);
  const error = useSignal<string | null>(null);

  async function cancel(event: Event) {
    event.preventDefault();
    busy.value = true;
    error.value = null;
    try {
      const { cancelCount } = await request(CancelCountDocument, { count: count.id, reason: reason.value.trim() });
      if (cancelCount.errors.length) error.value = cancelCount.errors.map((e) => e.message).join("; ");
      else window.location.hash = "#/counts";
    } catch (e) {
      error.value = describeError(e);
    } finally {
      busy.value = false;
    }
  }

  if (!open.value) {
    return (
      <button type="button" class="big" onClick={() => (open.value = true)}>
        Cancel count…
      </button>
    );
  }
  return (
    <form onSubmit={(e) => void cancel(e)} class="card panel">
      <label for="cancel-reason">
        Why cancel? <span class="hint">(required; stock is not touched)</span>
        <input id="cancel-reason" autoComplete="off" required value={reason.value} onInput={(e) => (reason.value = (e.target as HTMLInputElement).value)} />
      </label>
      <div class="actions">
        <button type="submit" class="danger big" disabled={busy.value || !online.value || !reason.value.trim()}>
          Confirm: cancel count
        </button>
        <button type="button" class="big" onClick={() => (open.value = false)}>
          Back
        </button>
      </div>
      {!online.value && <p class="meta">Offline: cancelling needs the server.</p>}
      {error.value && (
        <p class="notice danger" role="alert">
          {error.value}
        </p>
      )}
    </form>
  );
}

function MovementText({ m }: { m: CountMovementFragment }) {
  return (
    <>
      {KIND_TEXT[m.kind] ?? m.kind} {signed(m.quantity)} · {formatDateTime(m.occurredAt)}
      {m.recordedBy && ` · ${m.recordedBy.username}`}
    </>
  );
}

/** A closed count: what was posted, and what moved after a shelf was counted. */
function Outcome({ count }: { count: Count }) {
  const finalized = count.status === "FINALIZED";
  const posted = count.lines.filter((l) => l.adjustment);
  const movedAfter = count.lines.filter((l) => l.movementsSinceCounted.length);
  return (
    <section aria-labelledby="outcome-title" data-testid="count-outcome">
      <h2 id="outcome-title">{finalized ? "Result" : "Counted before cancelling"}</h2>
      {finalized && (
        <p class="notice ok" role="status">
          {posted.length ? `${posted.length} COUNT movement(s) posted.` : "No variance: nothing was posted."}
          {movedAfter.length > 0 && ` ${movedAfter.length} lot(s) moved after they were counted; those movements were kept.`}
        </p>
      )}
      <ul class="list">
        {count.lines.map((l) => (
          <li key={l.lot.id} data-batch={l.lot.batchNumber} data-final={l.balanceAfterCount ?? ""} data-moved-after={l.movementsSinceCounted.length ? "true" : "false"}>
            <h3>
              {l.product.name} {l.product.strength}
            </h3>
            <p>
              Batch <strong>{l.lot.batchNumber}</strong> <ExpiryTag date={l.lot.expiryDate} expired={l.lot.expired} />
            </p>
            <dl class="grid2">
              <dt>Counted</dt>
              <dd>{l.countedQuantity}</dd>
              <dt>System then</dt>
              <dd>{l.systemQuantityAtCount}</dd>
              <dt>Variance</dt>
              <dd>
                <VarianceTag value={l.variance} />
              </dd>
              {finalized && (
                <>
                  <dt>Movement</dt>
                  <dd data-testid="adjustment">
                    {l.adjustment ? (
                      <>
                        COUNT {signed(l.adjustment.quantity)}, balance after {l.adjustment.balanceAfter}
                      </>
                    ) : (
                      "none needed"
                    )}
                  </dd>
                  <dt>Balance</dt>
                  <dd>{l.balanceAfterCount ?? "—"}</dd>
                </>
              )}
            </dl>
            {l.movementsSinceCounted.length > 0 && (
              <div class="notice pending">
                <p>Moved after counting ({signed(l.movementsSinceCountedQuantity)}, kept):</p>
                <ul>
                  {l.movementsSinceCounted.map((m) => (
                    <li key={m.id}>
                      <MovementText m={m} />
                    </li>
                  ))}
                </ul>
              </div>
            )}
            <p class="meta">{l.explanation}</p>
          </li>
        ))}
      </ul>
      {finalized && count.uncountedLots.length > 0 && <p class="meta">{count.uncountedLots.length} lot(s) here were not counted and were left as they are.</p>}
    </section>
  );
}
