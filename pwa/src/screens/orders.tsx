// Purchase orders: the list (newest first), one order with its lines and shipments, a new order
// from scratch (or from the reorder suggestions, which make drafts), submit; for a supplier
// user, acknowledge and announce a shipment against the order. All through the existing
// purchasing and shipments mutations; refusals show the catalogue's sentence and the server's.
import { useSignal } from "@preact/signals";
import {
  AcknowledgeOrderDocument,
  CreateOrderDocument,
  CreateOrderShipmentDocument,
  OrderChoicesDocument,
  OrderDocument,
  OrdersDocument,
  SubmitOrderDocument,
  type MutationErrorFieldsFragment,
  type OrderFieldsFragment,
} from "../gql/graphql";
import { describeError, request } from "../lib/graphql";
import { errorText, formatDate, formatMoney, formatNumber, label, sentence } from "../lib/messages";
import { localDate } from "../lib/dates";
import { StatusTag } from "../components/status";
import { hasRole, href, navigate, routeParams } from "../state";
import { Screen, Status, formatDateTime, useLoad } from "../ui";

const TONE: Record<string, string> = {
  DRAFT: "neutral",
  SUBMITTED: "pending",
  ACKNOWLEDGED: "pending",
  PARTIALLY_RECEIVED: "near",
  RECEIVED: "done",
  CANCELLED: "refused",
};

const refusal = (errors: readonly MutationErrorFieldsFragment[]): string =>
  errors.map((e) => `${errorText(e)} ${sentence(e.message)}`).join(" ");

export function OrdersScreen() {
  const id = routeParams.value.get("id");
  if (id) return <OrderDetail id={id} />;
  if (routeParams.value.get("new")) return <NewOrder />;
  return <OrderList />;
}

function OrderList() {
  const loaded = useLoad("orders", async () => (await request(OrdersDocument, { first: 50 })).purchaseOrders);
  const orders = loaded.data?.edges.map((e) => e.node) ?? [];
  const buyer = hasRole("PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN");
  return (
    <Screen
      title="Purchase orders"
      actions={
        buyer && (
          <a class="button primary" href={href("orders", { new: "1" })}>
            New order
          </a>
        )
      }
    >
      {buyer && (
        <p class="meta">
          Or start from what stock levels call for: <a href="#/reorder">reorder suggestions</a> make draft orders.
        </p>
      )}
      <Status loaded={loaded} empty={loaded.data !== undefined && !orders.length} />
      {loaded.data && (
        <p class="meta" data-testid="orders-total">
          {formatNumber(orders.length)} of {formatNumber(loaded.data.totalCount)} orders
        </p>
      )}
      <ul class="list" data-testid="orders">
        {orders.map((o) => (
          <li key={o.id} data-number={o.number} data-status={o.status}>
            <a class="item-link" href={href("orders", { id: o.id })}>
              <strong>{o.number}</strong> <StatusTag status={o.status} label={label("status", o.status)} tone={TONE[o.status] ?? "neutral"} />
              <span class="meta">
                {" "}
                · {o.supplier.name} → {o.deliverTo.code} · {formatNumber(o.lines.length)} line(s) · {formatMoney(o.total)}
                {o.expectedDeliveryDate && ` · due ${formatDate(o.expectedDeliveryDate)}`}
              </span>
            </a>
          </li>
        ))}
      </ul>
    </Screen>
  );
}

interface DraftLine {
  product: string;
  quantity: number;
}

function NewOrder() {
  const choices = useLoad("order-choices", () => request(OrderChoicesDocument, {}));
  const supplier = useSignal("");
  const deliverTo = useSignal("");
  const due = useSignal(localDate(7));
  const lines = useSignal<DraftLine[]>([{ product: "", quantity: 10 }]);
  const error = useSignal<string | null>(null);
  const busy = useSignal(false);
  const data = choices.data;
  const suppliers = data?.suppliers.edges.map((e) => e.node) ?? [];
  const locations = data?.locations.edges.map((e) => e.node) ?? [];
  const products = data?.products.edges.map((e) => e.node) ?? [];
  const supplierId = supplier.value || suppliers[0]?.id || "";
  const locationId = deliverTo.value || locations[0]?.id || "";

  async function create(e: Event) {
    e.preventDefault();
    error.value = null;
    const chosen = lines.value.filter((l) => l.product && l.quantity > 0);
    if (!chosen.length) {
      error.value = "Add at least one product with a quantity.";
      return;
    }
    busy.value = true;
    try {
      const result = (
        await request(CreateOrderDocument, {
          input: {
            supplier: supplierId,
            deliverTo: locationId,
            expectedDeliveryDate: due.value || null,
            lines: chosen.map((l) => ({ product: l.product, quantity: l.quantity })),
          },
        })
      ).createPurchaseOrder;
      if (result.errors.length || !result.purchaseOrder) error.value = refusal(result.errors);
      else navigate(`orders?id=${encodeURIComponent(result.purchaseOrder.id)}`);
    } catch (err) {
      error.value = describeError(err);
    } finally {
      busy.value = false;
    }
  }

  const setLine = (i: number, patch: Partial<DraftLine>) =>
    (lines.value = lines.value.map((l, k) => (k === i ? { ...l, ...patch } : l)));

  return (
    <Screen
      title="New purchase order"
      actions={
        <a class="button" href="#/orders">
          All orders
        </a>
      }
    >
      <Status loaded={choices} />
      {data && (
        <form class="card" onSubmit={(e) => void create(e)} aria-label="New purchase order">
          <label for="po-supplier">
            Supplier
            <select id="po-supplier" value={supplierId} onChange={(e) => (supplier.value = (e.target as HTMLSelectElement).value)}>
              {suppliers.map((s) => (
                <option key={s.id} value={s.id}>
                  {s.name}
                </option>
              ))}
            </select>
          </label>
          <label for="po-deliver">
            Deliver to
            <select id="po-deliver" value={locationId} onChange={(e) => (deliverTo.value = (e.target as HTMLSelectElement).value)}>
              {locations.map((l) => (
                <option key={l.id} value={l.id}>
                  {l.code} — {l.name}
                </option>
              ))}
            </select>
          </label>
          <label for="po-due">
            Expected delivery
            <input id="po-due" type="date" value={due.value} onInput={(e) => (due.value = (e.target as HTMLInputElement).value)} />
          </label>
          <fieldset>
            <legend>Lines</legend>
            {lines.value.map((line, i) => (
              <div class="row" key={i}>
                <label for={`po-product-${i}`}>
                  Product {i + 1}
                  <select id={`po-product-${i}`} value={line.product} onChange={(e) => setLine(i, { product: (e.target as HTMLSelectElement).value })}>
                    <option value="">Choose a product</option>
                    {products.map((p) => (
                      <option key={p.id} value={p.id}>
                        {p.name} {p.strength}
                      </option>
                    ))}
                  </select>
                </label>
                <label for={`po-qty-${i}`}>
                  Packs
                  <input
                    id={`po-qty-${i}`}
                    type="number"
                    min={1}
                    inputMode="numeric"
                    value={line.quantity}
                    onInput={(e) => setLine(i, { quantity: Number((e.target as HTMLInputElement).value) || 0 })}
                  />
                </label>
              </div>
            ))}
            <button type="button" onClick={() => (lines.value = [...lines.value, { product: "", quantity: 10 }])}>
              Add a line
            </button>
          </fieldset>
          {error.value && (
            <p class="notice danger" role="alert" data-testid="order-error">
              {error.value}
            </p>
          )}
          <button type="submit" class="primary big" disabled={busy.value}>
            Create draft order
          </button>
        </form>
      )}
    </Screen>
  );
}

function OrderDetail({ id }: { id: string }) {
  const loaded = useLoad(`order:${id}`, async () => (await request(OrderDocument, { id })).purchaseOrder);
  const notice = useSignal<{ ok: boolean; text: string } | null>(null);
  const order = loaded.data;

  async function run(action: () => Promise<{ errors: readonly MutationErrorFieldsFragment[] }>, done: string) {
    notice.value = null;
    try {
      const result = await action();
      notice.value = result.errors.length ? { ok: false, text: refusal(result.errors) } : { ok: true, text: done };
      loaded.reload();
    } catch (err) {
      notice.value = { ok: false, text: describeError(err) };
    }
  }

  return (
    <Screen
      title={order ? `Order ${order.number}` : "Order"}
      actions={
        <a class="button" href="#/orders">
          All orders
        </a>
      }
    >
      <Status loaded={loaded} />
      {loaded.data === null && <p class="notice danger">This order does not exist or is not yours to see.</p>}
      {order && (
        <>
          <section class="card" data-testid="order-header" data-status={order.status}>
            <p>
              <StatusTag status={order.status} label={label("status", order.status)} tone={TONE[order.status] ?? "neutral"} /> {order.supplier.name} →{" "}
              {order.deliverTo.code}
            </p>
            <p class="meta">
              Created {formatDateTime(order.createdAt)}
              {order.submittedAt && ` · submitted ${formatDateTime(order.submittedAt)}`}
              {order.acknowledgedAt && ` · acknowledged ${formatDateTime(order.acknowledgedAt)}`}
              {order.expectedDeliveryDate && ` · due ${formatDate(order.expectedDeliveryDate)}`}
            </p>
            <p>
              Total <strong data-testid="order-total">{formatMoney(order.total)}</strong>
            </p>
          </section>
          <section class="card" aria-labelledby="order-lines">
            <h2 id="order-lines">Lines</h2>
            <div class="table-scroll" tabIndex={0} role="region" aria-labelledby="order-lines">
              <table>
                <thead>
                  <tr>
                    <th scope="col">Product</th>
                    <th scope="col">Packs</th>
                    <th scope="col">Received</th>
                    <th scope="col">Price</th>
                  </tr>
                </thead>
                <tbody>
                  {order.lines.map((l) => (
                    <tr key={l.id}>
                      <td>
                        {l.product.name} {l.product.strength}
                      </td>
                      <td>{formatNumber(l.quantity)}</td>
                      <td>{formatNumber(l.receivedQuantity)}</td>
                      <td>{formatMoney(l.lineTotal)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          </section>
          {order.shipments.length > 0 && (
            <section class="card" aria-labelledby="order-shipments">
              <h2 id="order-shipments">Shipments</h2>
              <ul class="list">
                {order.shipments.map((s) => (
                  <li key={s.id}>
                    <a href={href("shipments", { id: s.id })}>{s.number}</a> · {label("status", s.status)}
                    {s.expectedAt && ` · expected ${formatDateTime(s.expectedAt)}`}
                  </li>
                ))}
              </ul>
            </section>
          )}
          {notice.value && (
            <p class={`notice ${notice.value.ok ? "ok" : "danger"}`} role={notice.value.ok ? "status" : "alert"} data-testid="order-notice">
              {notice.value.text}
            </p>
          )}
          {order.status === "DRAFT" && hasRole("PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN") && (
            <button
              type="button"
              class="primary big"
              onClick={() =>
                void run(async () => (await request(SubmitOrderDocument, { input: { id: order.id } })).submitPurchaseOrder, `${order.number} submitted to ${order.supplier.name}.`)
              }
            >
              Submit to {order.supplier.name}
            </button>
          )}
          {order.status === "SUBMITTED" && hasRole("SUPPLIER") && (
            <button
              type="button"
              class="primary big"
              onClick={() =>
                void run(async () => (await request(AcknowledgeOrderDocument, { input: { id: order.id } })).acknowledgePurchaseOrder, `${order.number} acknowledged.`)
              }
            >
              Acknowledge order
            </button>
          )}
          {(order.status === "ACKNOWLEDGED" || order.status === "PARTIALLY_RECEIVED") && hasRole("SUPPLIER") && (
            <NewShipment order={order} onDone={(text) => ((notice.value = { ok: true, text }), loaded.reload())} />
          )}
        </>
      )}
    </Screen>
  );
}

/** The supplier announces a shipment: per line, the batch, its expiry and the packs sent. */
function NewShipment({ order, onDone }: { order: OrderFieldsFragment; onDone: (text: string) => void }) {
  const open = order.lines.filter((l) => l.outstandingQuantity > 0);
  const rows = useSignal(open.map((l) => ({ line: l.id, batch: "", expiry: localDate(365), quantity: l.outstandingQuantity })));
  const error = useSignal<string | null>(null);

  async function create(e: Event) {
    e.preventDefault();
    error.value = null;
    const lines = rows.value.filter((r) => r.quantity > 0);
    if (lines.some((r) => !r.batch.trim())) {
      error.value = "Enter the batch of every line you send.";
      return;
    }
    try {
      const result = (
        await request(CreateOrderShipmentDocument, {
          input: {
            purchaseOrder: order.id,
            lines: lines.map((r) => ({ purchaseOrderLine: r.line, batchNumber: r.batch.trim(), expiryDate: r.expiry, quantity: r.quantity })),
          },
        })
      ).createShipment;
      if (result.errors.length || !result.shipment) error.value = refusal(result.errors);
      else onDone(`Shipment ${result.shipment.number} planned: mark it dispatched on the shipments screen when it leaves.`);
    } catch (err) {
      error.value = describeError(err);
    }
  }
  const set = (i: number, patch: Partial<(typeof rows.value)[number]>) =>
    (rows.value = rows.value.map((r, k) => (k === i ? { ...r, ...patch } : r)));

  return (
    <form class="card" aria-labelledby="ship-title" onSubmit={(e) => void create(e)} data-testid="new-shipment">
      <h2 id="ship-title">Announce a shipment</h2>
      {open.map((l, i) => (
        <fieldset key={l.id}>
          <legend>
            {l.product.name} {l.product.strength} · {formatNumber(l.outstandingQuantity)} outstanding
          </legend>
          <div class="row">
            <label for={`ship-batch-${i}`}>
              Batch
              <input id={`ship-batch-${i}`} autoComplete="off" value={rows.value[i].batch} onInput={(e) => set(i, { batch: (e.target as HTMLInputElement).value })} />
            </label>
            <label for={`ship-expiry-${i}`}>
              Expiry
              <input id={`ship-expiry-${i}`} type="date" value={rows.value[i].expiry} onInput={(e) => set(i, { expiry: (e.target as HTMLInputElement).value })} />
            </label>
            <label for={`ship-qty-${i}`}>
              Packs
              <input
                id={`ship-qty-${i}`}
                type="number"
                min={0}
                inputMode="numeric"
                value={rows.value[i].quantity}
                onInput={(e) => set(i, { quantity: Number((e.target as HTMLInputElement).value) || 0 })}
              />
            </label>
          </div>
        </fieldset>
      ))}
      {error.value && (
        <p class="notice danger" role="alert" data-testid="shipment-error">
          {error.value}
        </p>
      )}
      <button type="submit" class="primary big">
        Create shipment
      </button>
    </form>
  );
}
