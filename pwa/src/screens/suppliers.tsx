// Suppliers: every supplier with its delivery performance; tap one (#/suppliers?id=…) for its
// contacts, contracts (validity, prices, lead times) and recent purchase orders.
import { formatMoney } from "../lib/messages";
import { useSignal } from "@preact/signals";
import {
  SupplierDetailDocument,
  SuppliersDocument,
  type PurchaseOrderStatus,
  type SupplierDetailQuery,
  type SupplierPerformanceFieldsFragment,
} from "../gql/graphql";
import { allPages, request } from "../lib/graphql";
import { BackLink, Facts } from "../components/form";
import { href, routeParams } from "../state";
import { localDate } from "../lib/dates";
import { StatusTag } from "../components/status";
import { Screen, Status, formatDateTime, percent, signed, useLoad } from "../ui";

export function SuppliersScreen() {
  const id = routeParams.value.get("id");
  return id ? <SupplierDetail id={id} /> : <SupplierList />;
}

const days = (value: number | null | undefined) => (value == null ? "—" : `${value.toFixed(1)} d`);
const signedPercent = (value: number | null | undefined) => (value == null ? "—" : `${signed(value, 1, "±")} %`);

function SupplierList() {
  const loaded = useLoad("suppliers", () => allPages(SuppliersDocument, {}, (d) => d.suppliers, 500));
  const items = [...(loaded.data ?? [])].sort((a, b) => a.name.localeCompare(b.name));
  return (
    <Screen title="Suppliers">
      <Status loaded={loaded} empty={!!loaded.data && !items.length} />
      <ul class="list" data-testid="supplier-list">
        {items.map((s) => {
          const p = s.performance;
          return (
            <li key={s.id} data-supplier={s.name}>
              <a class="item-link" href={href("suppliers", { id: s.id })}>
                <p>
                  <strong>{s.name}</strong> <span class="tag neutral">{s.kind.toLowerCase()}</span>
                </p>
                <p class="meta">
                  On time {percent(p.onTimeDeliveryRate)} · fill {percent(p.fillRate)} · lead time {days(p.averageLeadTimeDays)} (p90 {days(p.leadTimeP90Days)})
                </p>
                <p class="meta">
                  Discrepancies {percent(p.discrepancyRate)} · price vs contract {signedPercent(p.priceVariancePercent)} · {p.shipmentsReceived} shipment
                  {p.shipmentsReceived === 1 ? "" : "s"} received
                </p>
              </a>
            </li>
          );
        })}
      </ul>
    </Screen>
  );
}

type Period = "all" | "90" | "365";
const PERIODS: { value: Period; label: string }[] = [
  { value: "all", label: "All time" },
  { value: "365", label: "Last 12 months" },
  { value: "90", label: "Last 90 days" },
];

const sinceFor = (period: Period): string | null => (period === "all" ? null : localDate(-Number(period)));

const PO_STATUS: Record<PurchaseOrderStatus, { label: string; tone: string }> = {
  DRAFT: { label: "Draft", tone: "neutral" },
  SUBMITTED: { label: "Submitted", tone: "pending" },
  ACKNOWLEDGED: { label: "Acknowledged", tone: "pending" },
  PARTIALLY_RECEIVED: { label: "Partly received", tone: "near" },
  RECEIVED: { label: "Received", tone: "ok" },
  CANCELLED: { label: "Cancelled", tone: "refused" },
};

function SupplierDetail({ id }: { id: string }) {
  const period = useSignal<Period>("all");
  const loaded = useLoad(`supplier:${id}:${period.value}`, () => request(SupplierDetailDocument, { id, since: sinceFor(period.value) }));
  const supplier = loaded.data?.supplier;
  return (
    <Screen title={supplier?.name ?? "Supplier"}>
      <BackLink href="#/suppliers">All suppliers</BackLink>
      <Status loaded={loaded} />
      {loaded.data && !supplier && <p class="notice danger" role="alert">This supplier does not exist or is not visible to you.</p>}
      {loaded.data && supplier && (
        <>
          <p class="meta">
            {supplier.kind.toLowerCase()}
            {supplier.gln && ` · GLN ${supplier.gln}`}
          </p>
          <section class="card" aria-labelledby="perf-title" data-testid="performance">
            <h2 id="perf-title">Performance</h2>
            <label for="perf-period">
              Period
              <select id="perf-period" value={period.value} onChange={(e) => (period.value = (e.target as HTMLSelectElement).value as Period)}>
                {PERIODS.map((p) => (
                  <option key={p.value} value={p.value}>
                    {p.label}
                  </option>
                ))}
              </select>
            </label>
            <Performance p={loaded.data.supplierPerformance} />
          </section>
          <Contacts contacts={supplier.contacts} />
          <Contracts contracts={supplier.contracts} />
          <Orders orders={loaded.data.purchaseOrders} />
        </>
      )}
    </Screen>
  );
}

function Performance({ p }: { p: SupplierPerformanceFieldsFragment }) {
  const of = (part: number, whole: number, unit: string) => (whole ? `(${part} of ${whole} ${unit})` : `(no ${unit})`);
  return (
    <Facts
      items={[
        {
          key: "onTimeDeliveryRate",
          label: "On time",
          raw: p.onTimeDeliveryRate,
          value: `${percent(p.onTimeDeliveryRate)} ${of(p.shipmentsOnTime, p.shipmentsReceived, "shipments received")}`,
        },
        {
          key: "fillRate",
          label: "Fill rate",
          raw: p.fillRate,
          value: `${percent(p.fillRate)} ${of(p.receivedQuantity, p.orderedQuantity, "packs ordered")}`,
        },
        { key: "averageLeadTimeDays", label: "Lead time, average", raw: p.averageLeadTimeDays, value: days(p.averageLeadTimeDays) },
        { key: "leadTimeP90Days", label: "Lead time, 90th pct.", raw: p.leadTimeP90Days, value: days(p.leadTimeP90Days) },
        {
          key: "discrepancyRate",
          label: "Discrepancies",
          raw: p.discrepancyRate,
          value: `${percent(p.discrepancyRate)} ${of(p.shipmentsWithDiscrepancies, p.shipmentsReceived, "shipments received")}`,
        },
        {
          key: "priceVariancePercent",
          label: "Price vs contract",
          raw: p.priceVariancePercent,
          value:
            p.priceVariancePercent == null
              ? "— (no contract-priced orders)"
              : `${signedPercent(p.priceVariancePercent)} ${p.priceVariancePercent > 0 ? "above" : p.priceVariancePercent < 0 ? "below" : "at"} contract (${p.pricedQuantity} packs)`,
        },
      ]}
    />
  );
}

type Detail = NonNullable<SupplierDetailQuery["supplier"]>;

function Contacts({ contacts }: { contacts: Detail["contacts"] }) {
  return (
    <section class="card" aria-labelledby="contacts-title">
      <h2 id="contacts-title">Contacts</h2>
      {!contacts.length && <p class="meta">No contacts recorded.</p>}
      <ul class="list">
        {contacts.map((c) => (
          <li key={c.id}>
            <p>
              <strong>{c.name}</strong>
              {c.role && <span class="meta"> · {c.role}</span>}
            </p>
            {c.email && (
              <p>
                <a href={`mailto:${c.email}`}>{c.email}</a>
              </p>
            )}
            {c.phone && (
              <p>
                <a href={`tel:${c.phone.replace(/\s+/g, "")}`}>{c.phone}</a>
              </p>
            )}
          </li>
        ))}
      </ul>
    </section>
  );
}

function Contracts({ contracts }: { contracts: Detail["contracts"] }) {
  return (
    <section class="card" aria-labelledby="contracts-title">
      <h2 id="contracts-title">Contracts</h2>
      {!contracts.length && <p class="meta">No contracts with your organisation.</p>}
      <ul class="list" data-testid="contracts">
        {contracts.map((c) => (
          <li key={c.id} data-contract={c.reference}>
            <p>
              <strong>{c.reference}</strong>{" "}
              <span class={`tag ${c.validToday ? "ok" : "neutral"}`}>{c.validToday ? "Valid today" : "Not valid today"}</span>
            </p>
            <p class="meta">
              {c.validFrom} to {c.validUntil} · buyer {c.buyer.name}
            </p>
            <div class="table-scroll" tabIndex={0} role="region" aria-label="Contract lines" data-testid="contract-table">
            <table>
              <thead>
                <tr>
                  <th scope="col">Product</th>
                  <th scope="col" class="num">
                    Price
                  </th>
                  <th scope="col" class="num">
                    Lead
                  </th>
                  <th scope="col" class="num">
                    Min.
                  </th>
                </tr>
              </thead>
              <tbody>
                {c.lines.map((l) => (
                  <tr key={l.product.id}>
                    <td>
                      {l.product.name} {l.product.strength}
                    </td>
                    <td class="num">{l.unitPrice}</td>
                    <td class="num">{l.leadTimeDays} d</td>
                    <td class="num">{l.minimumOrderQuantity}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            </div>
          </li>
        ))}
      </ul>
    </section>
  );
}

function Orders({ orders }: { orders: SupplierDetailQuery["purchaseOrders"] }) {
  const items = orders.edges.map((e) => e.node);
  return (
    <section class="card" aria-labelledby="orders-title">
      <h2 id="orders-title">Recent purchase orders</h2>
      {!items.length && <p class="meta">No purchase orders.</p>}
      <ul class="list" data-testid="orders">
        {items.map((o) => {
          const status = PO_STATUS[o.status];
          const ordered = o.lines.reduce((n, l) => n + l.quantity, 0);
          const received = o.lines.reduce((n, l) => n + l.receivedQuantity, 0);
          return (
            <li key={o.id} data-order={o.number} data-status={o.status}>
              <p>
                <strong>{o.number}</strong> <StatusTag status={o.status} label={status.label} tone={status.tone} />
              </p>
              <p class="meta">
                To {o.deliverTo.code} · {received} of {ordered} packs received · total {formatMoney(o.total)}
              </p>
              <p class="meta">
                {o.submittedAt ? `Submitted ${formatDateTime(o.submittedAt)}` : `Created ${formatDateTime(o.createdAt)}`}
                {o.expectedDeliveryDate && ` · expected ${o.expectedDeliveryDate}`}
                {o.closedAt && ` · closed ${formatDateTime(o.closedAt)}`}
              </p>
            </li>
          );
        })}
      </ul>
      {orders.pageInfo.hasNextPage && <p class="meta">Showing the 20 most recent.</p>}
    </section>
  );
}
