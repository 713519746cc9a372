// Shipments and receiving. The list (status and expected-date filters, overdue ones flagged),
// one shipment with its lines and discrepancies, and what each side may do: the sender reports
// dispatched / in transit / delivered; the receiver books packs in line by line or by scanning
// a pack (through the outbox, so it works offline and lands once), then completes the receipt
// (what is still outstanding becomes SHORT). Everything follows shipmentUpdated live.
import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import {
  CompleteShipmentReceiptDocument,
  ShipmentDocument,
  ShipmentUpdatedDocument,
  ShipmentsDocument,
  UpdateShipmentStatusDocument,
  type DiscrepancyFieldsFragment,
  type ShipmentDetailFragment,
  type ShipmentLineFieldsFragment,
  type ShipmentStatus,
  type ShipmentSummaryFragment,
} from "../gql/graphql";
import { me } from "../lib/auth";
import type { OutboxEntry } from "../lib/db";
import { allPages, describeError, request } from "../lib/graphql";
import { daysBetween, utcDate } from "../lib/dates";
import { parseLocal } from "../lib/gs1";
import { subscribe } from "../lib/live";
import { enqueue, onSettled } from "../lib/outbox";
import { OutboxList, entriesFor } from "../components/outbox";
import { PackScanner } from "../components/pack-scanner";
import { hasRole, href, online, routeParams } from "../state";
import { LiveBadge, StatusTag } from "../components/status";
import { ExpiryTag, Screen, Status, formatDateTime, useLoad } from "../ui";

type Line = ShipmentLineFieldsFragment;

const STATUS_TEXT: Record<ShipmentStatus, string> = {
  PLANNED: "Planned",
  DISPATCHED: "Dispatched",
  IN_TRANSIT: "In transit",
  DELIVERED: "Delivered",
  RECEIVED: "Received",
  CANCELLED: "Cancelled",
};
const STATUS_TAG: Record<ShipmentStatus, string> = {
  PLANNED: "neutral",
  DISPATCHED: "pending",
  IN_TRANSIT: "pending",
  DELIVERED: "near",
  RECEIVED: "done",
  CANCELLED: "neutral",
};
const DISCREPANCY_TEXT: Record<string, string> = {
  SHORT: "Short",
  OVER: "Over",
  DAMAGED: "Damaged",
  WRONG_LOT: "Wrong batch",
};
/** The sender's next steps from each status (IN_TRANSIT again = a position update). */
const SENDER_NEXT: Partial<Record<ShipmentStatus, ShipmentStatus[]>> = {
  PLANNED: ["DISPATCHED", "CANCELLED"],
  DISPATCHED: ["IN_TRANSIT", "DELIVERED"],
  IN_TRANSIT: ["IN_TRANSIT", "DELIVERED"],
};
const RECEIVABLE: ShipmentStatus[] = ["DISPATCHED", "IN_TRANSIT", "DELIVERED"];
const OPEN: ShipmentStatus[] = ["PLANNED", "DISPATCHED", "IN_TRANSIT", "DELIVERED"];

/** The date it is due: its own expected date, else its order's (as the server's overdue check). */
function expectedDate(s: ShipmentSummaryFragment): string | null {
  return s.expectedAt?.slice(0, 10) ?? s.purchaseOrder?.expectedDeliveryDate ?? null;
}

function daysOverdue(s: ShipmentSummaryFragment, now = utcDate()): number {
  const expected = expectedDate(s);
  if (!expected || !OPEN.includes(s.status)) return 0;
  return Math.max(daysBetween(expected, now), 0);
}

function totals(lines: Line[]) {
  return {
    ordered: lines.reduce((n, l) => n + l.quantity, 0),
    received: lines.reduce((n, l) => n + l.receivedQuantity, 0),
    damaged: lines.reduce((n, l) => n + l.damagedQuantity, 0),
    outstanding: lines.reduce((n, l) => n + l.outstandingQuantity, 0),
  };
}

export function ShipmentsScreen() {
  const id = routeParams.value.get("id");
  return id ? <ShipmentDetail id={id} /> : <ShipmentList />;
}

// --- the list ------------------------------------------------------------------------------

type StatusFilter = "OPEN" | "ALL" | ShipmentStatus;
type DateFilter = "ANY" | "OVERDUE" | "TODAY" | "WEEK";

function ShipmentList() {
  const status = useSignal<StatusFilter>("OPEN");
  const due = useSignal<DateFilter>("ANY");
  const serverStatus = status.value === "OPEN" || status.value === "ALL" ? null : status.value;
  const loaded = useLoad(`shipments:${serverStatus ?? "all"}`, () =>
    allPages(ShipmentsDocument, { status: serverStatus }, (d) => d.shipments, 300),
  );
  const live = useSignal<Map<string, ShipmentSummaryFragment>>(new Map());
  useEffect(() => {
    live.value = new Map();
  }, [loaded.data]);
  useEffect(
    () =>
      subscribe(ShipmentUpdatedDocument, {}, ({ shipmentUpdated }) => {
        live.value = new Map(live.value).set(shipmentUpdated.shipment.id, shipmentUpdated.shipment);
      }),
    [],
  );

  const byId = new Map<string, ShipmentSummaryFragment>();
  for (const s of live.value.values()) if (!loaded.data?.some((x) => x.id === s.id)) byId.set(s.id, s);
  for (const s of loaded.data ?? []) byId.set(s.id, live.value.get(s.id) ?? s);
  const now = utcDate();
  const week = utcDate(7);
  const items = [...byId.values()]
    .filter((s) => (status.value === "OPEN" ? OPEN.includes(s.status) : status.value === "ALL" || s.status === status.value))
    .filter((s) => {
      const expected = expectedDate(s);
      if (due.value === "OVERDUE") return daysOverdue(s, now) > 0;
      if (due.value === "TODAY") return expected === now;
      if (due.value === "WEEK") return !!expected && expected >= now && expected <= week;
      return true;
    })
    .sort((a, b) => daysOverdue(b, now) - daysOverdue(a, now) || (expectedDate(a) ?? "9").localeCompare(expectedDate(b) ?? "9"));

  return (
    <Screen title="Shipments" actions={<LiveBadge />}>
      <div class="row">
        <label for="shipment-status">
          Status
          <select id="shipment-status" value={status.value} onChange={(e) => (status.value = (e.target as HTMLSelectElement).value as StatusFilter)}>
            <option value="OPEN">Not yet received</option>
            <option value="ALL">All</option>
            {(Object.keys(STATUS_TEXT) as ShipmentStatus[]).map((s) => (
              <option key={s} value={s}>
                {STATUS_TEXT[s]}
              </option>
            ))}
          </select>
        </label>
        <label for="shipment-due">
          Expected
          <select id="shipment-due" value={due.value} onChange={(e) => (due.value = (e.target as HTMLSelectElement).value as DateFilter)}>
            <option value="ANY">Any date</option>
            <option value="OVERDUE">Overdue</option>
            <option value="TODAY">Today</option>
            <option value="WEEK">In the next 7 days</option>
          </select>
        </label>
      </div>
      <Status loaded={loaded} empty={!!loaded.data && !items.length} />
      {loaded.stale && !loaded.error && <p class="meta">Saved copy; refreshing…</p>}
      <ul class="list" data-testid="shipment-list">
        {items.map((s) => {
          const t = totals(s.lines);
          const late = daysOverdue(s, now);
          return (
            <li key={s.id} data-shipment={s.number} data-status={s.status} data-overdue={late > 0 ? "true" : "false"}>
              <a class="button link-button" href={href("shipments", { id: s.id })} style={{ borderColor: late ? "var(--danger)" : undefined }}>
                <span class="row" style={{ alignItems: "center" }}>
                  <strong style={{ flex: "1 1 auto" }}>{s.number}</strong>
                  <StatusTag status={s.status} label={STATUS_TEXT[s.status]} tone={STATUS_TAG[s.status]} />
                  {late > 0 && (
                    <span class="tag expired" data-testid="overdue">
                      Overdue {late} d
                    </span>
                  )}
                </span>
                <span style={{ display: "block", fontWeight: 400 }}>
                  {s.sender.name} → {s.destination.code}
                </span>
                <span class="meta" style={{ display: "block", fontWeight: 400 }}>
                  {t.received} of {t.ordered} packs received
                  {t.damaged > 0 && ` · ${t.damaged} damaged`} · expected {expectedDate(s) ?? "—"}
                  {s.carrier && ` · ${s.carrier}`}
                </span>
              </a>
            </li>
          );
        })}
      </ul>
    </Screen>
  );
}

// --- one shipment --------------------------------------------------------------------------

const forShipment = (id: string) => (e: OutboxEntry) => e.operation === "receiveShipmentLine" && e.variables.shipment === id;

function ShipmentDetail({ id }: { id: string }) {
  const loaded = useLoad(`shipment:${id}`, async () => (await request(ShipmentDocument, { id })).shipment);
  const live = useSignal<ShipmentDetailFragment | null>(null);
  const notice = useSignal<{ kind: "ok" | "danger"; text: string } | null>(null);

  useEffect(() => {
    live.value = null;
  }, [loaded.data]);
  useEffect(
    () =>
      subscribe(ShipmentUpdatedDocument, { shipment: id }, ({ shipmentUpdated }) => {
        if (shipmentUpdated.shipment.id === id) live.value = shipmentUpdated.shipment;
      }),
    [id],
  );
  // A receipt from this device settled: show the server's numbers.
  useEffect(
    () =>
      onSettled((entry) => {
        if (forShipment(id)(entry)) loaded.reload();
      }),
    [id],
  );

  const s = live.value ?? loaded.data;
  const user = me.value;
  const admin = hasRole("ADMIN");
  const isReceiver = !!s && (admin || user?.organisation?.id === s.receiver.id) && hasRole("PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN");
  const isSender = !!s && (admin || user?.organisation?.id === s.sender.id) && hasRole("SUPPLIER", "PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN");
  const receivable = !!s && isReceiver && RECEIVABLE.includes(s.status);
  const pending = entriesFor(forShipment(id)).filter((e) => e.status === "pending");

  return (
    <Screen
      title={s ? `Shipment ${s.number}` : "Shipment"}
      actions={
        <a class="button" href="#/shipments">
          All shipments
        </a>
      }
    >
      <Status loaded={loaded} />
      {loaded.stale && !loaded.error && <p class="meta">Saved copy; refreshing…</p>}
      {loaded.data === null && <p class="notice danger">This shipment does not exist or is not yours to see.</p>}
      {s && (
        <>
          <Header s={s} />
          {notice.value && (
            <p class={`notice ${notice.value.kind}`} role={notice.value.kind === "danger" ? "alert" : "status"} data-testid="shipment-notice">
              {notice.value.text}
            </p>
          )}
          {isSender && SENDER_NEXT[s.status] && <SenderActions s={s} onDone={(n) => ((live.value = n.shipment), (notice.value = n.notice))} />}
          {receivable && <ScanReceive s={s} />}
          <section aria-labelledby="lines-title">
            <h2 id="lines-title">Lines</h2>
            <ul class="list" data-testid="shipment-lines">
              {s.lines.map((line) => (
                <LineItem key={line.id} s={s} line={line} receivable={receivable} pending={pending} />
              ))}
            </ul>
          </section>
          <OutboxList match={forShipment(id)} id="shipment-outbox" title="Receipts from this device" />
          <Discrepancies items={s.discrepancies} lines={s.lines} />
          {receivable && (
            <CompleteReceipt
              s={s}
              pending={pending.length}
              onDone={(shipment, shorts) => {
                live.value = shipment;
                notice.value = {
                  kind: "ok",
                  text: shorts.length
                    ? `Receipt completed. Recorded short: ${shorts.map((d) => `${d.quantity} × batch ${d.lot?.batchNumber ?? "?"}`).join(", ")}.`
                    : "Receipt completed: nothing missing.",
                };
              }}
            />
          )}
          <Events s={s} />
        </>
      )}
    </Screen>
  );
}

function Header({ s }: { s: ShipmentDetailFragment }) {
  const late = daysOverdue(s);
  const t = totals(s.lines);
  return (
    <section class="card" aria-label="Shipment summary" data-testid="shipment-header" data-status={s.status}>
      <p class="row" style={{ alignItems: "center" }}>
        <StatusTag status={s.status} label={STATUS_TEXT[s.status]} tone={STATUS_TAG[s.status]} />
        {late > 0 && <span class="tag expired">Overdue {late} d</span>}
      </p>
      <dl class="grid2">
        <dt>From</dt>
        <dd>
          {s.sender.name}
          {s.origin && ` (${s.origin.code})`}
        </dd>
        <dt>To</dt>
        <dd>
          {s.destination.code} — {s.destination.name}
        </dd>
        {s.purchaseOrder && (
          <>
            <dt>Order</dt>
            <dd>{s.purchaseOrder.number}</dd>
          </>
        )}
        <dt>Expected</dt>
        <dd>{expectedDate(s) ?? "—"}</dd>
        {s.carrier && (
          <>
            <dt>Carrier</dt>
            <dd>
              {s.carrier}
              {s.trackingNumber && ` · ${s.trackingNumber}`}
            </dd>
          </>
        )}
        <dt>Packs</dt>
        <dd data-testid="shipment-totals">
          {t.received} received, {t.damaged} damaged, {t.outstanding} outstanding of {t.ordered}
        </dd>
        {s.receivedAt && (
          <>
            <dt>Received</dt>
            <dd>{formatDateTime(s.receivedAt)}</dd>
          </>
        )}
      </dl>
    </section>
  );
}

function SenderActions({
  s,
  onDone,
}: {
  s: ShipmentDetailFragment;
  onDone: (result: { shipment: ShipmentDetailFragment | null; notice: { kind: "ok" | "danger"; text: string } }) => void;
}) {
  const note = useSignal("");
  const busy = useSignal(false);
  const error = useSignal<string | null>(null);
  const next = SENDER_NEXT[s.status] ?? [];

  async function update(status: ShipmentStatus) {
    if (status === "CANCELLED" && !confirm(`Cancel shipment ${s.number}? It cannot be dispatched afterwards.`)) return;
    busy.value = true;
    error.value = null;
    try {
      const { updateShipmentStatus: result } = await request(UpdateShipmentStatusDocument, {
        shipment: s.id,
        status,
        locationNote: note.value.trim() || null,
      });
      if (result.errors.length) {
        error.value = result.errors.map((e) => e.message).join("; ");
        return;
      }
      note.value = "";
      onDone({ shipment: result.shipment ?? null, notice: { kind: "ok", text: `${s.number}: ${STATUS_TEXT[status].toLowerCase()}.` } });
    } catch (e) {
      error.value = describeError(e);
    } finally {
      busy.value = false;
    }
  }

  return (
    <section class="card panel" aria-labelledby="sender-title">
      <h2 id="sender-title">Report progress</h2>
      <label for="sender-note">
        Where is it? <span class="hint">(optional note)</span>
        <input id="sender-note" autoComplete="off" value={note.value} onInput={(e) => (note.value = (e.target as HTMLInputElement).value)} />
      </label>
      <div class="actions">
        {next.map((status) => (
          <button
            type="button"
            key={status}
            class={status === "CANCELLED" ? "danger big" : "primary big"}
            disabled={busy.value || !online.value}
            onClick={() => void update(status)}
          >
            {status === "CANCELLED" ? "Cancel shipment" : status === s.status ? "Update position" : `Mark ${STATUS_TEXT[status].toLowerCase()}`}
          </button>
        ))}
      </div>
      {!online.value && <p class="meta">Offline: status updates need the server. They are not queued.</p>}
      {error.value && (
        <p class="notice danger" role="alert">
          {error.value}
        </p>
      )}
    </section>
  );
}

function lineLabel(line: Line): string {
  return `${line.product.name} ${line.product.strength}, batch ${line.lot.batchNumber}`;
}

function pendingFor(line: Line, pending: OutboxEntry[]): number {
  return pending
    .filter((e) => e.variables.line === line.id)
    .reduce((n, e) => n + Number(e.variables.quantity ?? 0) + Number(e.variables.damagedQuantity ?? 0), 0);
}

function LineItem({ s, line, receivable, pending }: { s: ShipmentDetailFragment; line: Line; receivable: boolean; pending: OutboxEntry[] }) {
  const open = useSignal(false);
  const waiting = pendingFor(line, pending);
  return (
    <li data-line={line.id} data-batch={line.lot.batchNumber} data-received={line.receivedQuantity} data-outstanding={line.outstandingQuantity}>
      <h3>
        {line.product.name} {line.product.strength}
      </h3>
      <p>
        Batch <strong>{line.lot.batchNumber}</strong> <ExpiryTag date={line.lot.expiryDate} expired={line.lot.expired} />
      </p>
      <dl class="grid2">
        <dt>Shipped</dt>
        <dd>{line.quantity}</dd>
        <dt>Received</dt>
        <dd data-testid="line-received">{line.receivedQuantity}</dd>
        {line.damagedQuantity > 0 && (
          <>
            <dt>Damaged</dt>
            <dd>{line.damagedQuantity}</dd>
          </>
        )}
        <dt>Outstanding</dt>
        <dd data-testid="line-outstanding">
          {line.outstandingQuantity}
          {line.outstandingQuantity === 0 && line.quantity > 0 && " (complete)"}
        </dd>
      </dl>
      {waiting > 0 && (
        <p class="notice pending" role="status">
          {waiting} pack(s) waiting on this device to be sent.
        </p>
      )}
      {receivable && !open.value && (
        <button type="button" class="big" onClick={() => (open.value = true)} aria-label={`Receive ${lineLabel(line)}`}>
          Receive…
        </button>
      )}
      {receivable && open.value && <ReceiveForm s={s} line={line} waiting={waiting} onClose={() => (open.value = false)} />}
    </li>
  );
}

function ReceiveForm({ s, line, waiting, onClose }: { s: ShipmentDetailFragment; line: Line; waiting: number; onClose: () => void }) {
  const remaining = Math.max(line.outstandingQuantity - waiting, 0);
  const good = useSignal(String(remaining));
  const damaged = useSignal("0");
  const wrongLot = useSignal(false);
  const batch = useSignal("");
  const expiry = useSignal("");
  const note = useSignal("");
  const over = useSignal(false);
  const error = useSignal<string | null>(null);
  const p = `recv-${line.id.replace(/[^A-Za-z0-9]/g, "")}`;

  async function submit(event: Event) {
    event.preventDefault();
    const g = Number(good.value);
    const d = Number(damaged.value);
    if (!Number.isInteger(g) || !Number.isInteger(d) || g < 0 || d < 0) {
      error.value = "Packs must be whole numbers, 0 or more.";
      return;
    }
    if (g + d === 0) {
      error.value = "Receive at least one pack, good or damaged.";
      return;
    }
    if (g + d > remaining && !over.value) {
      error.value = `Only ${remaining} pack(s) are outstanding. Tick “More arrived than shipped” to record the surplus.`;
      return;
    }
    if (wrongLot.value && (!batch.value.trim() || !expiry.value)) {
      error.value = "Give the batch number and the expiry date of the packs that arrived.";
      return;
    }
    error.value = null;
    const what = [`${g} good`, d ? `${d} damaged` : ""].filter(Boolean).join(" + ");
    await enqueue(
      "receiveShipmentLine",
      {
        shipment: s.id,
        line: line.id,
        quantity: g,
        damagedQuantity: d,
        declareOver: over.value,
        lot: wrongLot.value ? { batchNumber: batch.value.trim(), expiryDate: expiry.value } : null,
        note: note.value.trim() || null,
      },
      {
        title: `Receive ${what} · ${lineLabel(line)}${wrongLot.value ? ` (arrived as ${batch.value.trim()})` : ""} · ${s.number}`,
        product: `${line.product.name} ${line.product.strength}`,
        batch: wrongLot.value ? batch.value.trim() : line.lot.batchNumber,
        location: s.destination.code,
      },
    );
    onClose();
  }

  return (
    <form class="card panel" onSubmit={(e) => void submit(e)} aria-label={`Receive ${lineLabel(line)}`}>
      <div class="row">
        <label for={`${p}-good`}>
          Good packs
          <input id={`${p}-good`} type="number" inputMode="numeric" min={0} value={good.value} onInput={(e) => (good.value = (e.target as HTMLInputElement).value)} />
        </label>
        <label for={`${p}-damaged`}>
          Damaged packs
          <input id={`${p}-damaged`} type="number" inputMode="numeric" min={0} value={damaged.value} onInput={(e) => (damaged.value = (e.target as HTMLInputElement).value)} />
        </label>
      </div>
      <label for={`${p}-wrong`}>
        <input id={`${p}-wrong`} type="checkbox" checked={wrongLot.value} onChange={(e) => (wrongLot.value = (e.target as HTMLInputElement).checked)} style={{ display: "inline-block", width: "auto", minHeight: 0, marginRight: "0.5rem" }} />
        A different batch arrived
      </label>
      {wrongLot.value && (
        <div class="row">
          <label for={`${p}-batch`}>
            Batch that arrived
            <input id={`${p}-batch`} autoComplete="off" value={batch.value} onInput={(e) => (batch.value = (e.target as HTMLInputElement).value)} />
          </label>
          <label for={`${p}-expiry`}>
            Its expiry
            <input id={`${p}-expiry`} type="date" value={expiry.value} onInput={(e) => (expiry.value = (e.target as HTMLInputElement).value)} />
          </label>
        </div>
      )}
      <label for={`${p}-over`}>
        <input id={`${p}-over`} type="checkbox" checked={over.value} onChange={(e) => (over.value = (e.target as HTMLInputElement).checked)} style={{ display: "inline-block", width: "auto", minHeight: 0, marginRight: "0.5rem" }} />
        More arrived than shipped <span class="hint">(records the surplus as OVER)</span>
      </label>
      <label for={`${p}-note`}>
        Note <span class="hint">(optional)</span>
        <input id={`${p}-note`} autoComplete="off" value={note.value} onInput={(e) => (note.value = (e.target as HTMLInputElement).value)} />
      </label>
      {error.value && (
        <p class="error" role="alert">
          {error.value}
        </p>
      )}
      <div class="actions">
        <button type="submit" class="primary big">
          Record receipt
        </button>
        <button type="button" class="big" onClick={onClose}>
          Back
        </button>
      </div>
      {!online.value && <p class="meta">Offline: the receipt waits on this device and is sent when the connection returns.</p>}
    </form>
  );
}

/** Scan a pack: the server picks the line from the barcode (and records a WRONG_LOT if needed). */
function ScanReceive({ s }: { s: ShipmentDetailFragment }) {
  const scanned = useSignal<string | null>(null);
  const good = useSignal("1");
  const damaged = useSignal("0");
  const queued = useSignal<string | null>(null);
  const error = useSignal<string | null>(null);
  const local = scanned.value ? parseLocal(scanned.value) : null;
  const match =
    local &&
    (s.lines.find((l) => l.product.gtins.includes(local.gtin ?? "") && l.lot.batchNumber === local.batch) ??
      s.lines.find((l) => l.product.gtins.includes(local.gtin ?? "")));
  const serial = local?.serial;

  function onCode(barcode: string) {
    scanned.value = barcode;
    queued.value = null;
    error.value = null;
    good.value = "1";
    damaged.value = "0";
  }

  async function receive() {
    const g = Number(good.value);
    const d = Number(damaged.value);
    if (!Number.isInteger(g) || !Number.isInteger(d) || g < 0 || d < 0 || g + d === 0) {
      error.value = "Receive at least one pack (whole numbers).";
      return;
    }
    if (serial && g + d !== 1) {
      error.value = `Serial ${serial} is one pack: receive 1 good or 1 damaged.`;
      return;
    }
    error.value = null;
    const what = match ? `${match.product.name} ${match.product.strength}` : `GTIN ${local?.gtin ?? "?"}`;
    await enqueue(
      "receiveShipmentLine",
      { shipment: s.id, barcode: scanned.value!, quantity: g, damagedQuantity: d },
      {
        title: `Receive ${g} good${d ? ` + ${d} damaged` : ""} · scanned ${what}${local?.batch ? `, batch ${local.batch}` : ""} · ${s.number}`,
        gtin: local?.gtin,
        batch: local?.batch,
        serial,
        location: s.destination.code,
      },
    );
    queued.value = `Queued: ${g + d} pack(s) of ${what}.`;
    scanned.value = null;
  }

  return (
    <section class="card" aria-labelledby="scan-receive-title">
      <h2 id="scan-receive-title">Receive by scanning</h2>
      <p class="meta">Scan a pack: the server finds its line. A batch that is not the line's is recorded as a wrong batch.</p>
      <PackScanner id="ship-scan" onCode={onCode} paused={!!scanned.value} submitLabel="Use this pack" manualOpen={false} />
      {queued.value && (
        <p class="notice pending" role="status">
          {queued.value}
        </p>
      )}
      {scanned.value && (
        <div class="card panel" data-testid="scanned-pack" aria-live="polite">
          <p>
            <strong>{match ? `${match.product.name} ${match.product.strength}` : local?.gtin ? `GTIN ${local.gtin}` : "Unrecognised barcode"}</strong>
          </p>
          <p class="meta">
            Batch {local?.batch ?? "—"}
            {local?.expiry && ` · expires ${local.expiry}`}
            {serial && ` · serial ${serial}`}
          </p>
          {match && local?.batch && match.lot.batchNumber !== local.batch && (
            <p class="notice danger">Batch {local.batch} is not on this shipment: it will be recorded as a wrong batch for {match.lot.batchNumber}.</p>
          )}
          {!match && local?.gtin && <p class="notice danger">No line of this shipment carries this product; the server will refuse it.</p>}
          <div class="row">
            <label for="scan-good">
              Good packs
              <input id="scan-good" type="number" inputMode="numeric" min={0} value={good.value} onInput={(e) => (good.value = (e.target as HTMLInputElement).value)} />
            </label>
            <label for="scan-damaged">
              Damaged packs
              <input id="scan-damaged" type="number" inputMode="numeric" min={0} value={damaged.value} onInput={(e) => (damaged.value = (e.target as HTMLInputElement).value)} />
            </label>
          </div>
          {error.value && (
            <p class="error" role="alert">
              {error.value}
            </p>
          )}
          <div class="actions">
            <button type="button" class="primary big" onClick={() => void receive()}>
              Receive scanned pack
            </button>
            <button type="button" class="big" onClick={() => (scanned.value = null)}>
              Cancel
            </button>
          </div>
        </div>
      )}
    </section>
  );
}

function Discrepancies({ items, lines }: { items: DiscrepancyFieldsFragment[]; lines: Line[] }) {
  if (!items.length) return null;
  return (
    <section class="card" aria-labelledby="disc-title" data-testid="discrepancies">
      <h2 id="disc-title">Discrepancies</h2>
      <ul class="list">
        {items.map((d) => {
          const line = lines.find((l) => l.id === d.line?.id);
          return (
            <li key={d.id} data-kind={d.kind} data-quantity={d.quantity}>
              <span class={`tag ${d.kind === "OVER" ? "near" : "refused"}`}>{DISCREPANCY_TEXT[d.kind] ?? d.kind}</span>{" "}
              <strong>{d.quantity}</strong> pack(s)
              {line && ` of ${line.product.name} ${line.product.strength}`}
              {d.lot && `, batch ${d.lot.batchNumber}`}
              {d.kind === "WRONG_LOT" && line && ` (expected ${line.lot.batchNumber})`}
              {d.note && <p class="meta">“{d.note}”</p>}
              <p class="meta">
                {formatDateTime(d.recordedAt)}
                {d.recordedBy && ` · ${d.recordedBy.fullName || d.recordedBy.username}`}
              </p>
            </li>
          );
        })}
      </ul>
    </section>
  );
}

function CompleteReceipt({
  s,
  pending,
  onDone,
}: {
  s: ShipmentDetailFragment;
  pending: number;
  onDone: (shipment: ShipmentDetailFragment, shorts: DiscrepancyFieldsFragment[]) => void;
}) {
  const confirming = useSignal(false);
  const note = useSignal("");
  const busy = useSignal(false);
  const error = useSignal<string | null>(null);
  const shorts = s.lines.filter((l) => l.outstandingQuantity > 0);
  const blocked = !online.value ? "Offline: completing a receipt needs the server." : pending ? `${pending} receipt(s) from this device are still waiting to be sent.` : null;

  async function complete() {
    busy.value = true;
    error.value = null;
    try {
      const { completeShipmentReceipt: result } = await request(CompleteShipmentReceiptDocument, { shipment: s.id, note: note.value.trim() || null });
      if (result.errors.length) {
        error.value = result.errors.map((e) => e.message).join("; ");
        return;
      }
      confirming.value = false;
      if (result.shipment) onDone(result.shipment, result.shortDiscrepancies);
    } catch (e) {
      error.value = describeError(e);
    } finally {
      busy.value = false;
    }
  }

  return (
    <section class="card" aria-labelledby="complete-title">
      <h2 id="complete-title">Complete the receipt</h2>
      {!confirming.value ? (
        <button type="button" class="primary big" disabled={!!blocked} onClick={() => (confirming.value = true)}>
          Complete receipt…
        </button>
      ) : (
        <div data-testid="complete-confirm">
          {shorts.length ? (
            <>
              <p>These packs were neither received nor reported damaged. They will be recorded as short:</p>
              <ul data-testid="short-preview">
                {shorts.map((l) => (
                  <li key={l.id}>
                    <strong>{l.outstandingQuantity}</strong> × {lineLabel(l)}
                  </li>
                ))}
              </ul>
            </>
          ) : (
            <p>Every pack is accounted for: nothing will be recorded as short.</p>
          )}
          <label for="complete-note">
            Note <span class="hint">(optional)</span>
            <input id="complete-note" autoComplete="off" value={note.value} onInput={(e) => (note.value = (e.target as HTMLInputElement).value)} />
          </label>
          <div class="actions">
            <button type="button" class="primary big" disabled={busy.value || !!blocked} onClick={() => void complete()}>
              Confirm: complete receipt
            </button>
            <button type="button" class="big" onClick={() => (confirming.value = false)}>
              Back
            </button>
          </div>
        </div>
      )}
      {blocked && <p class="meta">{blocked}</p>}
      {error.value && (
        <p class="notice danger" role="alert">
          {error.value}
        </p>
      )}
    </section>
  );
}

function Events({ s }: { s: ShipmentDetailFragment }) {
  if (!s.events.length) return null;
  return (
    <details>
      <summary>History ({s.events.length})</summary>
      <ol class="list">
        {s.events.map((e, i) => (
          <li key={i}>
            <strong>{STATUS_TEXT[e.status]}</strong> · {formatDateTime(e.occurredAt)}
            {e.actor && ` · ${e.actor.fullName || e.actor.username}`}
            {e.locationNote && <p class="meta">{e.locationNote}</p>}
          </li>
        ))}
      </ol>
    </details>
  );
}
