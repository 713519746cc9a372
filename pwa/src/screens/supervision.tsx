// Supervision: batches by status; tap one (#/supervision?approval=…&batch=…) for its gamma,
// every constituent's inventory, the sender -> receiver reconciliation and the explanation
// lines whose parts add up to gamma. Status is always written out, never colour alone.
import { useSignal } from "@preact/signals";
import {
  SupervisionBatchDocument,
  SupervisionReportDocument,
  type GammaPartKind,
  type SupervisionBatchQuery,
  type SupervisionStatus,
} from "../gql/graphql";
import { allPages, request } from "../lib/graphql";
import { BackLink, Facts } from "../components/form";
import { href, routeParams } from "../state";
import { StatusTag } from "../components/status";
import { Screen, Status, formatDateTime, signed, useLoad } from "../ui";

type Check = SupervisionBatchQuery["supervision"];

const STATUS: Record<SupervisionStatus, { label: string; tone: "ok" | "pending" | "near" | "refused"; icon: string; meaning: string }> = {
  NORMAL: { label: "Normal", tone: "ok", icon: "✓", meaning: "Every pack is accounted for: gamma is zero and no inventory is negative." },
  IN_TRANSIT: { label: "In transit", tone: "pending", icon: "⏳", meaning: "Gamma is explained by shipments still inside their transit window." },
  OUTFLOW_LEAK: { label: "Outflow leak", tone: "refused", icon: "⚠", meaning: "Packs left the monitored network without being reported." },
  ILLEGAL_INFLOW: { label: "Illegal inflow", tone: "refused", icon: "⚠", meaning: "Packs entered the network that no manufacturer reported producing." },
  NEGATIVE_INVENTORY: { label: "Negative inventory", tone: "near", icon: "⚠", meaning: "A constituent issued more than it reported receiving." },
};
const STATUSES = Object.keys(STATUS) as SupervisionStatus[];

const PART: Record<GammaPartKind, string> = {
  IN_TRANSIT: "In transit",
  NOT_RECEIVED: "Shipped, not received",
  NOT_SHIPPED: "Received, not shipped",
  LEFT_NETWORK: "Left the network",
  UNKNOWN_SOURCE: "Unknown source",
  NOT_A_MANUFACTURER: "Produced by a non-manufacturer",
  ADJUSTED_LOSS: "Adjusted loss",
  ADJUSTED_GAIN: "Adjusted gain",
  NEGATIVE_INVENTORY: "Negative inventory",
};

const statusText = (status: SupervisionStatus) => `${STATUS[status].icon} ${STATUS[status].label}`;
const minus = (n: number) => (n < 0 ? `(−${-n})` : String(n));

export function SupervisionScreen() {
  const approval = routeParams.value.get("approval");
  const batch = routeParams.value.get("batch");
  return approval && batch ? <BatchDetail approvalNumber={approval} batchNumber={batch} /> : <Report />;
}

function Report() {
  const status = useSignal<SupervisionStatus | "">("");
  const loaded = useLoad(`supervision:${status.value || "attention"}`, () =>
    allPages(SupervisionReportDocument, { status: status.value || null }, (d) => d.supervisionReport, 500),
  );
  const items = loaded.data ?? [];
  return (
    <Screen title="Supervision">
      <label for="supervision-status">
        Status
        <select id="supervision-status" value={status.value} onChange={(e) => (status.value = (e.target as HTMLSelectElement).value as SupervisionStatus | "")}>
          <option value="">Needs attention (all but normal)</option>
          {STATUSES.map((s) => (
            <option key={s} value={s}>
              {STATUS[s].label}
            </option>
          ))}
        </select>
      </label>
      <p class="meta">Gamma = input − output − inventory of every constituent; anything but zero needs explaining.</p>
      <Status loaded={loaded} empty={!!loaded.data && !items.length} />
      <ul class="list" data-testid="supervision-list">
        {items.map((b) => (
          <li key={`${b.approvalNumber}/${b.batchNumber}`} data-batch={b.batchNumber} data-approval={b.approvalNumber}>
            <a class="item-link" href={href("supervision", { approval: b.approvalNumber, batch: b.batchNumber })}>
              <p>
                <strong>
                  {b.product ? `${b.product.name} ${b.product.strength}` : b.approvalNumber} · batch {b.batchNumber}
                </strong>
              </p>
              <p>
                <StatusTag status={b.status} label={statusText(b.status)} tone={STATUS[b.status].tone} /> gamma <strong>{signed(b.gamma)}</strong>
              </p>
              <p class="meta">
                {b.approvalNumber} · since {formatDateTime(b.since)}
              </p>
            </a>
          </li>
        ))}
      </ul>
    </Screen>
  );
}

function BatchDetail({ approvalNumber, batchNumber }: { approvalNumber: string; batchNumber: string }) {
  const loaded = useLoad(`supervision:${approvalNumber}:${batchNumber}`, async () => (await request(SupervisionBatchDocument, { approvalNumber, batchNumber })).supervision);
  const c = loaded.data;
  return (
    <Screen title={`Batch ${batchNumber}`}>
      <BackLink href="#/supervision">All batches</BackLink>
      <Status loaded={loaded} />
      {c && <CheckView c={c} />}
    </Screen>
  );
}

function CheckView({ c }: { c: Check }) {
  const s = STATUS[c.status];
  const partsSum = c.explanation.reduce((n, p) => n + p.quantity, 0);
  return (
    <>
      <p class="meta">
        {c.product ? `${c.product.name} ${c.product.strength}` : "Unknown product"} · approval {c.approvalNumber}
        {c.lot && ` · expires ${c.lot.expiryDate}`}
      </p>
      <section class={`card ${s.tone === "ok" ? "ok" : s.tone === "refused" ? "danger" : "warn"}`} aria-labelledby="status-title" data-testid="batch-status" data-status={c.status}>
        <h2 id="status-title">{statusText(c.status)}</h2>
        <p>{s.meaning}</p>
        <p class="gamma" data-testid="gamma" data-value={c.gamma}>
          γ = I − O − Σ inventory = {c.totalInput} − {minus(c.totalOutput)} − {minus(c.systemInventory)} = <span class="value">{c.gamma}</span>
        </p>
        <p>{c.summary}</p>
      </section>
      {c.scoped && (
        <p class="notice pending">
          You see your organisation's side only: its inventory, the edges it is an end of and the parts that name it. The batch-wide figures are complete.
        </p>
      )}
      <Facts
        items={[
          { key: "totalInput", label: "Input I", raw: c.totalInput, value: `${c.totalInput} (produced by manufacturers)` },
          { key: "totalOutput", label: "Output O", raw: c.totalOutput, value: `${c.totalOutput} (dispensed + destroyed − returned)` },
          { key: "systemInventory", label: "Inventory Σ", raw: c.systemInventory, value: `${c.systemInventory} (held by all constituents)` },
          { key: "gamma", label: "Gamma γ", raw: c.gamma, value: signed(c.gamma) },
          { key: "inTransit", label: "In transit", raw: c.inTransit, value: `${c.inTransit} (window ${c.transitWindowHours} h)` },
          { key: "unexplained", label: "Unexplained", raw: c.unexplained, value: signed(c.unexplained) },
          { key: "checkedAt", label: "Checked", value: formatDateTime(c.checkedAt) },
        ]}
      />
      <section class="card" aria-labelledby="explain-title" data-testid="explanation">
        <h2 id="explain-title">Why gamma is {c.gamma}</h2>
        {!c.explanation.length && <p class="meta">{c.gamma === 0 ? "Nothing to explain." : "No explanation lines."}</p>}
        <ul class="list">
          {c.explanation.map((p, i) => (
            <li key={i} data-part={p.kind} data-quantity={p.quantity}>
              <p>
                <span class="tag neutral">{PART[p.kind]}</span> <strong>{signed(p.quantity)}</strong>
              </p>
              <p>{p.message}</p>
              <p class="meta">
                {p.organisation.name}
                {p.counterparty && ` → ${p.counterparty.name}`}
                {p.references.length > 0 && ` · ${p.references.join(", ")}`}
                {p.at && ` · ${formatDateTime(p.at)}`}
              </p>
            </li>
          ))}
        </ul>
        {c.explanation.length > 0 && (
          <p data-testid="parts-sum" data-value={partsSum} class={partsSum === c.gamma ? "notice ok" : "notice pending"}>
            {partsSum === c.gamma
              ? `✓ The parts add up to ${signed(partsSum)}, which is gamma.`
              : `The parts shown add up to ${signed(partsSum)}; gamma is ${signed(c.gamma)}${c.scoped ? " (parts naming other organisations are not shown to you)" : ""}.`}
          </p>
        )}
      </section>
      <Constituents c={c} />
      <Edges c={c} />
    </>
  );
}

function Constituents({ c }: { c: Check }) {
  return (
    <section class="card" aria-labelledby="constituents-title">
      <h2 id="constituents-title">Constituents</h2>
      <ul class="list" data-testid="constituents">
        {c.constituents.map((k) => (
          <li key={k.organisation.id} data-organisation={k.organisation.name} data-inventory={k.inventory}>
            <p>
              <strong>{k.organisation.name}</strong> <span class="meta">{k.organisation.kind.toLowerCase()}</span>
            </p>
            <p>
              Inventory <strong>{k.inventory}</strong> {k.inventory < 0 && <span class="tag refused">⚠ negative</span>}
            </p>
            <details>
              <summary>In and out</summary>
              <Facts
                items={[
                  { key: "produced", label: "Produced", value: k.produced },
                  { key: "received", label: "Received", value: k.received },
                  { key: "transferredIn", label: "Transferred in", value: k.transferredIn },
                  { key: "returned", label: "Returned by patients", value: k.returned },
                  { key: "adjustedIn", label: "Adjusted up", value: k.adjustedIn },
                  { key: "shipped", label: "Shipped", value: k.shipped },
                  { key: "transferredOut", label: "Transferred out", value: k.transferredOut },
                  { key: "dispensed", label: "Dispensed", value: k.dispensed },
                  { key: "disposed", label: "Destroyed", value: k.disposed },
                  { key: "adjustedOut", label: "Adjusted down", value: k.adjustedOut },
                ]}
              />
            </details>
          </li>
        ))}
      </ul>
    </section>
  );
}

function edgeState(e: Check["edges"][number]): { tone: string; text: string } {
  if (e.unexplained > 0) return { tone: "refused", text: `⚠ Gap: ${e.unexplained} shipped, never received (overdue)` };
  if (e.unexplained < 0) return { tone: "refused", text: `⚠ Gap: ${-e.unexplained} received more than shipped` };
  if (e.inTransit > 0) return { tone: "pending", text: `⏳ ${e.inTransit} in transit` };
  return { tone: "ok", text: "✓ Balanced" };
}

function Edges({ c }: { c: Check }) {
  return (
    <section class="card" aria-labelledby="edges-title">
      <h2 id="edges-title">Shipped and received</h2>
      {!c.edges.length && <p class="meta">No shipments between constituents.</p>}
      <ul class="list" data-testid="edges">
        {c.edges.map((e) => {
          const state = edgeState(e);
          return (
            <li key={`${e.sender.id}-${e.receiver.id}`} data-gap={e.unexplained}>
              <p>
                <strong>
                  {e.sender.name} → {e.receiver.name}
                </strong>{" "}
                {e.internal && <span class="tag neutral">internal</span>}
              </p>
              <p>
                <span class={`tag ${state.tone}`}>{state.text}</span>
              </p>
              <p class="meta">
                Shipped {e.shipped} · received {e.received} · in transit {e.inTransit} · gap {signed(e.unexplained)}
                {e.lastShippedAt && ` · last shipped ${formatDateTime(e.lastShippedAt)}`}
              </p>
              {e.unmatchedShipments.length > 0 && (
                <details>
                  <summary>Shipments not received ({e.unmatchedShipments.length})</summary>
                  <ul>
                    {e.unmatchedShipments.map((u, i) => (
                      <li key={i}>
                        {u.reference ?? "no reference"}: {u.quantity} packs, shipped {formatDateTime(u.shippedAt)} —{" "}
                        {u.inTransitWindow ? "still in transit" : "overdue"}
                      </li>
                    ))}
                  </ul>
                </details>
              )}
              {e.unmatchedReceipts.length > 0 && (
                <details>
                  <summary>Receipts with no shipment ({e.unmatchedReceipts.length})</summary>
                  <ul>
                    {e.unmatchedReceipts.map((u, i) => (
                      <li key={i}>
                        {u.reference ?? "no reference"}: {u.quantity} packs, received {formatDateTime(u.receivedAt)}
                      </li>
                    ))}
                  </ul>
                </details>
              )}
            </li>
          );
        })}
      </ul>
    </section>
  );
}
