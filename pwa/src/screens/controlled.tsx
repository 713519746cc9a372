// Controlled register: one controlled drug at one location over a period — every movement with
// the running balance, who recorded and who witnessed it — the CSV and PDF an inspector asks
// for, and a witnessed correction (adjustment) for pharmacists.
import { useSignal } from "@preact/signals";
import {
  AdjustControlledStockDocument,
  ControlledProductsDocument,
  ControlledRegisterDocument,
  StockLevelsDocument,
  type ControlledProductsQuery,
  type ControlledRegisterQuery,
} from "../gql/graphql";
import { accessToken } from "../lib/auth";
import { allPages, describeError, request } from "../lib/graphql";
import { WitnessDialog, witnessMessage, type Witness } from "../components/witness";
import { hasRole, myLocations, online, selectedLocation } from "../state";
import { LocationPicker, Screen, Status, formatDateTime, signed, useLoad } from "../ui";

type ProductNode = ControlledProductsQuery["products"]["edges"][number]["node"];
type Register = ControlledRegisterQuery["controlledRegister"];

const KIND_LABEL: Record<string, string> = {
  RECEIVE: "Received",
  SHIP: "Shipped",
  DISPENSE: "Dispensed",
  RETURN: "Returned",
  ADJUST: "Adjusted",
  DISPOSE: "Disposed of",
  PRODUCE: "Produced",
  TRANSFER_OUT: "Transferred out",
  TRANSFER_IN: "Transferred in",
  COUNT: "Count correction",
};

function isoDay(date: Date): string {
  return date.toISOString().slice(0, 10);
}

function daysAgo(days: number): string {
  return isoDay(new Date(Date.now() - days * 86_400_000));
}

async function download(path: string, params: Record<string, string>, fallbackName: string): Promise<void> {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v)).toString();
  const response = await fetch(`${path}?${query}`, { headers: { Authorization: `Bearer ${await accessToken()}` } });
  if (!response.ok) {
    const body = (await response.json().catch(() => null)) as { errors?: { message: string }[] } | null;
    throw new Error(body?.errors?.[0]?.message ?? `The export failed (${response.status}).`);
  }
  const disposition = response.headers.get("content-disposition") ?? "";
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? fallbackName;
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function ControlledScreen() {
  const productId = useSignal<string>("");
  const locationId = useSignal<string>(selectedLocation.value ?? myLocations.value[0]?.id ?? "");
  const from = useSignal(daysAgo(30));
  const to = useSignal(isoDay(new Date()));
  const exportError = useSignal<string | null>(null);

  const products = useLoad<ProductNode[]>("controlled:products", async () =>
    (await allPages(ControlledProductsDocument, {}, (d) => d.products)).filter((p) => p.controlled),
  );
  const chosen = productId.value || products.data?.[0]?.id || "";
  const location = locationId.value || myLocations.value[0]?.id || "";
  const ready = Boolean(chosen && location);
  const register = useLoad<Register>(
    ready ? `controlled:${chosen}:${location}:${from.value}:${to.value}` : null,
    async () =>
      (
        await request(ControlledRegisterDocument, {
          product: chosen,
          location,
          from: from.value || null,
          to: to.value || null,
        })
      ).controlledRegister,
  );
  const data = register.data;
  const params = { product: chosen, location, from: from.value, to: to.value };

  async function exportAs(kind: "csv" | "pdf") {
    exportError.value = null;
    try {
      await download(`/reports/controlled-register.${kind}`, params, `controlled-register.${kind}`);
    } catch (error) {
      exportError.value = describeError(error);
    }
  }

  return (
    <Screen title="Controlled register">
      <div class="card register-filters">
        <label for="cd-product">
          Controlled drug
          <select id="cd-product" value={chosen} onChange={(e) => (productId.value = (e.target as HTMLSelectElement).value)}>
            {(products.data ?? []).map((p) => (
              <option key={p.id} value={p.id}>
                {p.name} {p.strength} ({p.dosageForm}) · schedule {p.controlledSchedule}
              </option>
            ))}
          </select>
        </label>
        <LocationPicker locations={myLocations.value} value={location} onChange={(id) => (locationId.value = id)} id="cd-location" />
        <label for="cd-from">
          From
          <input id="cd-from" type="date" value={from.value} max={to.value || undefined} onChange={(e) => (from.value = (e.target as HTMLInputElement).value)} />
        </label>
        <label for="cd-to">
          To (inclusive)
          <input id="cd-to" type="date" value={to.value} min={from.value || undefined} onChange={(e) => (to.value = (e.target as HTMLInputElement).value)} />
        </label>
      </div>
      <Status loaded={products} empty={products.data?.length === 0} />
      {ready && <Status loaded={register} />}

      {data && (
        <>
          <h2 class="meta" style={{ margin: "0.25rem 0" }}>
            {data.product.name} {data.product.strength} at {data.location.code} — {data.organisation.name}
          </h2>
          <div class="register-summary" data-testid="register-summary">
            <div>
              Opening balance <strong data-testid="opening">{data.openingBalance}</strong>
            </div>
            <div>
              Closing balance <strong data-testid="closing">{data.closingBalance}</strong>
            </div>
            <div>
              Movements <strong>{data.entries.length}</strong>
            </div>
          </div>
          <div class="downloads">
            <button type="button" onClick={() => void exportAs("csv")} disabled={!online.value}>
              Download CSV
            </button>
            <button type="button" onClick={() => void exportAs("pdf")} disabled={!online.value}>
              Download PDF for inspection
            </button>
          </div>
          {exportError.value && (
            <p class="notice danger" role="alert">
              {exportError.value}
            </p>
          )}
          {data.entries.length === 0 ? (
            <p>No movements in this period.</p>
          ) : (
            <div class="register-table" tabIndex={0} role="region" aria-label="Register entries">
              <table data-testid="register">
                <thead>
                  <tr>
                    <th scope="col">When</th>
                    <th scope="col">What</th>
                    <th scope="col">Batch</th>
                    <th scope="col" class="num">
                      Packs
                    </th>
                    <th scope="col" class="num">
                      Balance
                    </th>
                    <th scope="col">By</th>
                    <th scope="col">Witness</th>
                    <th scope="col">Why</th>
                    <th scope="col">Patient</th>
                  </tr>
                </thead>
                <tbody>
                  {data.entries.map((e) => (
                    <tr key={e.movement.id}>
                      <td class="when">{formatDateTime(e.occurredAt)}</td>
                      <td>{KIND_LABEL[e.kind] ?? e.kind}</td>
                      <td>{e.batchNumber}</td>
                      <td class="num">{signed(e.quantity)}</td>
                      <td class="num" data-testid="balance">
                        {e.balance}
                      </td>
                      <td>{e.recordedBy?.fullName ?? "—"}</td>
                      <td data-testid="witness">{e.witnessedBy?.fullName ?? "—"}</td>
                      <td>{[e.reason, e.reference].filter(Boolean).join(" · ") || "—"}</td>
                      <td>{e.patientReferenceHidden ? "(hidden)" : e.patientReference ?? "—"}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
          {hasRole("PHARMACIST", "ADMIN") && (
            <Correction register={data} locationId={location} productId={chosen} onDone={register.reload} />
          )}
        </>
      )}
    </Screen>
  );
}

/** A witnessed adjustment of one lot: the pharmacist fills it in, the witness confirms it. */
function Correction({
  register,
  locationId,
  productId,
  onDone,
}: {
  register: Register;
  locationId: string;
  productId: string;
  onDone: () => void;
}) {
  const lotId = useSignal("");
  const quantity = useSignal(-1);
  const reason = useSignal("");
  const witnessing = useSignal(false);
  const outcome = useSignal<string | null>(null);
  const lots = useLoad(`controlled:lots:${productId}:${locationId}`, async () =>
    (await request(StockLevelsDocument, { location: locationId, product: productId, first: 50 })).stockLevels.edges.map(
      (e) => e.node,
    ),
  );
  const lot = lotId.value || lots.data?.[0]?.lot.id || "";
  const batch = lots.data?.find((x) => x.lot.id === lot)?.lot.batchNumber ?? "";
  const valid = Boolean(lot && quantity.value && reason.value.trim());

  async function send(witness: Witness): Promise<string | null> {
    try {
      const data = await request(AdjustControlledStockDocument, {
        input: {
          location: locationId,
          lot,
          quantity: quantity.value,
          reason: reason.value.trim(),
          idempotencyKey: crypto.randomUUID(),
          witness,
        },
      });
      const errors = data.adjustStock.errors;
      if (errors.length) return errors.map((e) => witnessMessage(e.code, e.message)).join(" ");
      const moved = data.adjustStock.movements[0];
      outcome.value = `Adjusted batch ${batch} by ${signed(moved?.quantity ?? quantity.value)}, witnessed by ${witness.username}. Balance of the batch now ${moved?.balanceAfter ?? "—"}.`;
      witnessing.value = false;
      reason.value = "";
      onDone();
      return null;
    } catch (error) {
      return describeError(error);
    }
  }

  return (
    <details class="card">
      <summary>Record a correction (needs a witness)</summary>
      <form
        class="register-filters"
        onSubmit={(e) => {
          e.preventDefault();
          outcome.value = null;
          if (valid) witnessing.value = true;
        }}
      >
        <label for="cd-lot">
          Batch
          <select id="cd-lot" value={lot} onChange={(e) => (lotId.value = (e.target as HTMLSelectElement).value)}>
            {(lots.data ?? []).map((x) => (
              <option key={x.lot.id} value={x.lot.id}>
                {x.lot.batchNumber} · {x.quantity} on hand
              </option>
            ))}
          </select>
        </label>
        <label for="cd-qty">
          Packs (+ adds, − removes)
          <input
            id="cd-qty"
            type="number"
            inputMode="numeric"
            value={quantity.value}
            onInput={(e) => (quantity.value = Math.trunc(Number((e.target as HTMLInputElement).value)) || 0)}
          />
        </label>
        <label for="cd-reason">
          Reason
          <input id="cd-reason" required value={reason.value} onInput={(e) => (reason.value = (e.target as HTMLInputElement).value)} />
        </label>
        <div class="actions">
          <button type="submit" class="primary" disabled={!valid || !online.value}>
            Continue to witness
          </button>
        </div>
      </form>
      {outcome.value && (
        <p class="notice ok" role="status">
          {outcome.value}
        </p>
      )}
      {witnessing.value && (
        <WitnessDialog
          summary={`Adjust ${register.product.name} ${register.product.strength}, batch ${batch}, by ${signed(quantity.value)} at ${register.location.code}: ${reason.value.trim()}.`}
          onSubmit={send}
          onCancel={() => (witnessing.value = false)}
        />
      )}
    </details>
  );
}
