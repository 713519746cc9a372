// Reorder: today's suggestions for a location with the numbers behind each, ticked ones become
// draft purchase orders (one per supplier) or, for a ward, transfer requests from its pharmacy.
// A budget can cut the purchases first (the server's optimiser says what it cut and why).
// Sent directly: creating drafts moves no stock, so nothing waits in the outbox.
import { formatMoney, label } from "../lib/messages";
import { useSignal } from "@preact/signals";
import { Fragment } from "preact";
import { useEffect } from "preact/hooks";
import {
  CreatePurchaseOrdersFromSuggestionsDocument,
  CreateTransfersFromSuggestionsDocument,
  ReorderPlanDocument,
  ReorderSuggestionsDocument,
  type ReorderSuggestionsQuery,
} from "../gql/graphql";
import { GeneralErrors, NO_ERRORS, generalErrors, splitErrors, type FieldErrors } from "../components/form";
import { transferHref } from "../components/transfers";
import { describeError, request } from "../lib/graphql";
import { href, myLocations, online, selectLocation, selectedLocation } from "../state";
import { LocationPicker, Screen, Status, percent, useLoad } from "../ui";

type Result = ReorderSuggestionsQuery["reorderSuggestions"];
type Suggestion = Result["suggestions"][number];
type Why = Record<string, unknown>;

const REASON: Record<string, string> = {
  ABOVE_REORDER_POINT: "Enough stock",
  NO_VALID_CONTRACT: "No valid contract",
  CAPPED_BY_SHELF_LIFE: "Cut to what is used before expiry",
  SHELF_LIFE_BELOW_MINIMUM: "Minimum order would expire",
  CAPPED_BY_CENTRAL_STOCK: "Pharmacy short: shared out",
  NO_CENTRAL_STOCK: "Pharmacy has none",
};

// The figures a pharmacist reads first, in the order the decision uses them.
const WHY_ROWS: [string, string, (v: unknown) => string][] = [
  ["on_hand", "On hand", num],
  ["on_order", "On order", num],
  ["in_transit", "In transit", num],
  ["allocated", "Promised to others", num],
  ["position", "Position", num],
  ["daily_rate", "Used per day (recent)", num],
  ["demand_rate_per_day", "Forecast per day", num],
  ["forecast_source", "Forecast from", (v) => (v === "STORED" ? "stored forecast" : "recent use")],
  ["lead_time_days", "Lead time (days)", num],
  ["lead_time_source", "Lead time from", (v) => String(v).toLowerCase().replace("_", " ")],
  ["service_level", "Service level", (v) => (typeof v === "number" ? percentFine(v) : "—")],
  ["safety_stock", "Safety stock", num],
  ["reorder_point", "Reorder point", num],
  ["par_level", "Par level", num],
  ["order_up_to", "Order up to", num],
  ["pack_size", "Pack size", num],
  ["minimum_order", "Minimum order", num],
  ["shelf_life_cap", "Used before expiry", num],
  ["central_available", "Pharmacy has", num],
];

function num(v: unknown): string {
  return typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(1)) : String(v ?? "—");
}

function percentFine(v: number): string {
  return v >= 0.99 ? `${(v * 100).toFixed(1)} %` : percent(v);
}

/** Money in the organisation's currency (lib/messages). */
const money = (value: string | null | undefined): string => formatMoney(value);

interface Created {
  kind: "PURCHASE" | "TRANSFER";
  items: { id: string; number: string; detail: string; href?: string }[];
}

export function ReorderScreen() {
  const locationId = selectedLocation.value;
  const loaded = useLoad(locationId ? `reorder:${locationId}` : null, async () =>
    locationId ? (await request(ReorderSuggestionsDocument, { location: locationId })).reorderSuggestions : undefined,
  );
  const ticked = useSignal<Set<string>>(new Set());
  const quantities = useSignal<Record<string, number>>({});
  const errors = useSignal<FieldErrors>(NO_ERRORS);
  const sending = useSignal(false);
  const created = useSignal<Created | null>(null);
  const budget = useSignal("");
  const planning = useSignal(false);
  const planNote = useSignal<string | null>(null);

  const result = loaded.data;
  const suggestions = result?.suggestions ?? [];
  const key = (s: Suggestion) => `${s.location.id}:${s.product.id}`;
  // What the answer says, not which object carries it: a background refresh (the cached copy
  // replaced by the server's, a reconnect) that suggests the same must not untick the user's lines.
  const answer = `${locationId}|${result?.kind}|${suggestions.map((s) => `${key(s)}=${s.quantity}`).join(",")}`;

  // A different answer (another location, new numbers) starts with nothing ticked.
  useEffect(() => {
    ticked.value = new Set();
    quantities.value = {};
    errors.value = NO_ERRORS;
    planNote.value = null;
  }, [answer]);
  const quantityOf = (s: Suggestion) => quantities.value[key(s)] ?? s.quantity;
  const chosen = suggestions.filter((s) => ticked.value.has(key(s)) && quantityOf(s) > 0);
  const isPurchase = result?.kind === "PURCHASE";
  const total = chosen.reduce((sum, s) => sum + (s.unitPrice ? Number(s.unitPrice) * quantityOf(s) : 0), 0);

  function toggle(s: Suggestion, on: boolean) {
    const next = new Set(ticked.value);
    if (on) next.add(key(s));
    else next.delete(key(s));
    ticked.value = next;
  }

  function tickAll(on: boolean) {
    ticked.value = on ? new Set(suggestions.filter((s) => s.quantity > 0).map(key)) : new Set();
  }

  async function fitBudget(event: Event) {
    event.preventDefault();
    if (!locationId || planning.value) return;
    planning.value = true;
    planNote.value = null;
    errors.value = NO_ERRORS;
    try {
      const { reorderPlan: plan } = await request(ReorderPlanDocument, {
        input: { location: locationId, budget: budget.value.trim() },
      });
      const planned = new Map(plan.lines.map((l) => [l.suggestion.product.id, l]));
      const nextQty: Record<string, number> = {};
      const nextTicked = new Set<string>();
      for (const s of suggestions) {
        const line = planned.get(s.product.id);
        if (!line) continue;
        nextQty[key(s)] = line.quantity;
        if (line.quantity > 0) nextTicked.add(key(s));
      }
      quantities.value = nextQty;
      ticked.value = nextTicked;
      const cut = plan.lines.filter((l) => l.cut > 0).length;
      planNote.value = plan.optimised
        ? `The budget binds: ${cut} suggestion(s) cut; the plan spends ${money(plan.spend)} of ${money(plan.budget)} ` +
          `(all suggestions: ${money(plan.suggestedSpend)}). ${plan.messages.filter((m) => !m.startsWith("bound by")).join(" ")}`
        : `Everything fits: the suggestions cost ${money(plan.suggestedSpend)}.`;
    } catch (error) {
      errors.value = generalErrors(describeError(error));
    } finally {
      planning.value = false;
    }
  }

  async function create() {
    if (!result || !chosen.length || sending.value) return;
    sending.value = true;
    errors.value = NO_ERRORS;
    try {
      if (isPurchase) {
        const { createPurchaseOrdersFromSuggestions: payload } = await request(CreatePurchaseOrdersFromSuggestionsDocument, {
          input: {
            location: result.location.id,
            lines: chosen.map((s) => ({ product: s.product.id, supplier: s.supplier!.id, quantity: quantityOf(s) })),
          },
        });
        if (payload.errors.length) {
          errors.value = splitErrors(payload.errors, []);
          return;
        }
        created.value = {
          kind: "PURCHASE",
          items: payload.purchaseOrders.map((o) => ({
            id: o.id,
            number: o.number,
            detail: `${o.supplier.name} · ${o.lines.length} line(s) · ${label("status", o.status)}`,
            // the supplier's screen lists its purchase orders, the new draft first
            href: href("suppliers", { id: o.supplier.id }),
          })),
        };
      } else {
        const { createTransfersFromSuggestions: payload } = await request(CreateTransfersFromSuggestionsDocument, {
          input: { lines: chosen.map((s) => ({ location: s.location.id, product: s.product.id, quantity: quantityOf(s) })) },
        });
        if (payload.errors.length) {
          errors.value = splitErrors(payload.errors, []);
          return;
        }
        created.value = {
          kind: "TRANSFER",
          items: payload.transfers.map((t) => ({
            id: t.id,
            number: t.number,
            detail: `${t.source.code} → ${t.destination.code} · ${label("status", t.status)}`,
            href: transferHref(t.id),
          })),
        };
      }
      loaded.reload();
    } catch (error) {
      errors.value = generalErrors(describeError(error));
    } finally {
      sending.value = false;
    }
  }

  const needed = suggestions.filter((s) => s.quantity > 0).length;

  return (
    <Screen title="Reorder">
      <LocationPicker
        id="reorder-location"
        locations={myLocations.value}
        value={locationId}
        onChange={(id) => {
          created.value = null;
          selectLocation(id);
        }}
      />
      <Status loaded={loaded} />
      {created.value && (
        <section class="notice" role="status" data-testid="reorder-created">
          <p style={{ margin: 0 }}>
            {created.value.kind === "PURCHASE" ? "Draft purchase orders created:" : "Transfer requests sent:"}
          </p>
          <ul class="list">
            {created.value.items.map((i) => (
              <li key={i.id}>
                {i.href ? <a href={i.href}>{i.number}</a> : <strong>{i.number}</strong>} <span class="meta">{i.detail}</span>
              </li>
            ))}
          </ul>
        </section>
      )}
      {result && (
        <>
          <p class="meta" data-testid="reorder-kind">
            {isPurchase
              ? "Bought from suppliers under contracts valid today; ticked lines become draft orders, one per supplier."
              : `Topped up from ${result.sourceLocation?.code ?? "the pharmacy"}; ticked lines become transfer requests.`}
          </p>
          {isPurchase && needed > 0 && (
            <form onSubmit={fitBudget} aria-label="Fit to a budget">
              <label for="reorder-budget">
                Budget <span class="hint">(optional: cut the suggestions to fit)</span>
                <input
                  id="reorder-budget"
                  type="number"
                  inputMode="decimal"
                  min={0}
                  step="0.01"
                  value={budget.value}
                  onInput={(e) => (budget.value = (e.target as HTMLInputElement).value)}
                />
              </label>
              <button type="submit" disabled={!budget.value.trim() || planning.value || !online.value}>
                {planning.value ? "Planning…" : "Fit to budget"}
              </button>
            </form>
          )}
          {planNote.value && (
            <p class="notice" role="status" data-testid="reorder-plan">
              {planNote.value}
            </p>
          )}
          {needed === 0 ? (
            <p data-testid="reorder-empty">Nothing to reorder here today.</p>
          ) : (
            <div class="row" style={{ margin: "0.5rem 0" }}>
              <button type="button" onClick={() => tickAll(true)}>
                Tick all
              </button>
              <button type="button" onClick={() => tickAll(false)}>
                Untick all
              </button>
            </div>
          )}
          <ul class="list" data-testid="reorder-list" aria-label="Suggestions">
            {suggestions.map((s) => (
              <SuggestionCard
                key={key(s)}
                s={s}
                ticked={ticked.value.has(key(s))}
                quantity={quantityOf(s)}
                onTick={(on) => toggle(s, on)}
                onQuantity={(q) => {
                  quantities.value = { ...quantities.value, [key(s)]: q };
                  if (q > 0 && !ticked.value.has(key(s))) toggle(s, true);
                }}
              />
            ))}
          </ul>
          <GeneralErrors errors={[...errors.value.general, ...Object.values(errors.value.byField)]} />
          {!online.value && (
            <p class="notice pending" id="reorder-offline">
              Offline: creating orders needs a connection.
            </p>
          )}
          {needed > 0 && (
            <button
              type="button"
              class="primary big"
              data-testid="reorder-create"
              disabled={!chosen.length || sending.value || !online.value}
              aria-describedby={!online.value ? "reorder-offline" : undefined}
              onClick={() => void create()}
            >
              {sending.value
                ? "Creating…"
                : isPurchase
                  ? `Create draft orders (${chosen.length} line${chosen.length === 1 ? "" : "s"}, ${money(total.toFixed(2))})`
                  : `Request transfers (${chosen.length} line${chosen.length === 1 ? "" : "s"})`}
            </button>
          )}
        </>
      )}
    </Screen>
  );
}

function SuggestionCard({
  s,
  ticked,
  quantity,
  onTick,
  onQuantity,
}: {
  s: Suggestion;
  ticked: boolean;
  quantity: number;
  onTick: (on: boolean) => void;
  onQuantity: (q: number) => void;
}) {
  const why = (s.why ?? {}) as Why;
  const id = `${s.location.id}-${s.product.id}`.replace(/[^A-Za-z0-9-]/g, "");
  const name = `${s.product.name} ${s.product.strength}`;
  const possible = s.quantity > 0;
  return (
    <li class="card" data-product={s.product.name} data-testid="reorder-item">
      <div class="row" style={{ alignItems: "center" }}>
        <label for={`tick-${id}`} style={{ flex: "1 1 auto", display: "flex", gap: "0.5rem", alignItems: "center", margin: 0 }}>
          <input
            id={`tick-${id}`}
            type="checkbox"
            checked={ticked}
            disabled={!possible}
            onChange={(e) => onTick((e.target as HTMLInputElement).checked)}
            style={{ width: "1.5rem", height: "1.5rem", flex: "0 0 auto" }}
          />
          <span>
            <strong>{name}</strong> <span class="meta">{s.product.dosageForm}</span>
          </span>
        </label>
        {possible && (
          <label for={`qty-${id}`} style={{ margin: 0 }}>
            <span class="sr-only">Packs of {name}</span>
            <input
              id={`qty-${id}`}
              type="number"
              inputMode="numeric"
              min={0}
              value={quantity}
              style={{ width: "6rem" }}
              onInput={(e) => onQuantity(Math.max(0, Math.floor(Number((e.target as HTMLInputElement).value) || 0)))}
            />
          </label>
        )}
      </div>
      <p class="meta" style={{ margin: "0.25rem 0" }}>
        {possible ? `Suggested ${s.quantity} pack(s)` : "Nothing suggested"}
        {s.supplier && ` · ${s.supplier.name}`}
        {s.contractReference && ` · ${s.contractReference}`}
        {s.unitPrice && ` · ${money(s.unitPrice)} a pack`}
        {s.unitPrice && possible && ` · ${money((Number(s.unitPrice) * quantity).toFixed(2))}`}
        {s.product.controlled && " · controlled"}
      </p>
      {s.reason && <span class="tag neutral">{REASON[s.reason] ?? s.reason}</span>}
      <details>
        <summary>Why</summary>
        <dl
          data-testid="reorder-why"
          style={{ display: "grid", gridTemplateColumns: "auto auto", gap: "0.15rem 0.75rem", margin: "0.5rem 0" }}
        >
          {WHY_ROWS.filter(([k]) => k in why && why[k] !== null).map(([k, label, format]) => (
            <Fragment key={k}>
              <dt class="meta">{label}</dt>
              <dd style={{ margin: 0, textAlign: "right" }}>{format(why[k])}</dd>
            </Fragment>
          ))}
        </dl>
        {typeof why.contract === "string" && <p class="meta">Contract: {why.contract}</p>}
        <details>
          <summary>Every number</summary>
          <pre style={{ whiteSpace: "pre-wrap", fontSize: "0.8rem" }}>{JSON.stringify(why, null, 1)}</pre>
        </details>
      </details>
    </li>
  );
}
