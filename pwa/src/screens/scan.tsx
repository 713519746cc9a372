// Scan: camera (or typed GTIN / batch) → what the pack is → dispense, return, waste (receive
// for pharmacy and warehouse roles). Every action goes through the outbox, online or not.
import { useComputed, useSignal } from "@preact/signals";
import { useRef } from "preact/hooks";
import {
  ParseBarcodeDocument,
  RecordScanDocument,
  type ParseBarcodeQuery,
  type ScanAction,
  type StockLevelsQuery,
} from "../gql/graphql";
import { me } from "../lib/auth";
import { cacheGet } from "../lib/db";
import { NetworkError, describeError, request } from "../lib/graphql";
import { expiryState } from "../lib/dates";
import { parseLocal, type LocalParse } from "../lib/gs1";
import { enqueue, outbox, scanInput } from "../lib/outbox";
import { ACTION_LABEL, ACTION_PAST, OutboxList } from "../components/outbox";
import { PackScanner } from "../components/pack-scanner";
import { WitnessDialog, witnessMessage, type Witness } from "../components/witness";
import type { OutboxEntry } from "../lib/db";
import { hasRole, myLocations, online, selectLocation, selectedLocation } from "../state";
import { ExpiryTag, LocationPicker, Screen } from "../ui";
import { errorText, formatNumber, label, sentence, t } from "../lib/messages";

type Preview = ParseBarcodeQuery["parseBarcode"];
type StockNode = StockLevelsQuery["stockLevels"]["edges"][number]["node"];

interface Current {
  barcode: string;
  source: "camera" | "manual";
  format?: string;
  detectedAt: number;
  local: LocalParse | null;
  preview?: Preview;
  previewAt?: number;
  offline?: boolean;
  offlineProduct?: string;
  /** Offline: the lot as this device last saw it at the location (expiry, packs). */
  offlineLot?: { expiryDate: string; expired: boolean; quantity: number } | null;
  error?: string;
}

/** Timings of the last scan, for the browser tests and for anyone curious (DevTools). */
const metrics: Record<string, number | string | undefined> = {};
(window as unknown as { __apothecaScan: typeof metrics }).__apothecaScan = metrics;

const REASONS = ["EXPIRED", "DAMAGED", "CONTAMINATED", "PATIENT_REFUSED", "RECALLED", "OTHER"] as const;


function actionsForRole(): ScanAction[] {
  const actions: ScanAction[] = [];
  if (hasRole("NURSE", "PHARMACIST", "ADMIN")) actions.push("DISPENSE", "RETURN");
  if (hasRole("PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN")) actions.push("RECEIVE");
  if (hasRole("NURSE", "PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN")) actions.push("DISPOSE");
  return actions;
}

/** Offline: the product and (when a batch was read) the lot as the device's stock cache has them. */
async function offlineLookup(
  locationId: string,
  gtin: string | null,
  batch: string | null,
): Promise<Pick<Current, "offlineProduct" | "offlineLot">> {
  const username = me.value?.username;
  if (!gtin || !username) return {};
  const cached = await cacheGet<StockNode[]>(`stock:${locationId}`, username);
  const rows = cached?.filter((row) => row.product.gtins.includes(gtin)) ?? [];
  const hit = rows[0];
  const lot = batch ? rows.find((row) => row.lot.batchNumber === batch) : undefined;
  return {
    offlineProduct: hit ? `${hit.product.name} ${hit.product.strength}` : undefined,
    offlineLot: batch ? (lot ? { expiryDate: lot.lot.expiryDate, expired: lot.lot.expired, quantity: lot.quantity } : null) : undefined,
  };
}

export function ScanScreen() {
  const current = useSignal<Current | null>(null);
  const quantity = useSignal(1);
  const patient = useSignal("");
  const reason = useSignal<(typeof REASONS)[number]>("EXPIRED");
  const wasting = useSignal(false);
  const entryKey = useSignal<string | null>(null);
  // Controlled drugs: a dispense is confirmed first; a waste is witnessed and sent at once.
  const confirming = useSignal(false);
  const witnessing = useSignal(false);
  const witnessed = useSignal<string | null>(null);
  const resetToken = useSignal(0);
  const resultRef = useRef<HTMLDivElement>(null);
  const locationId = selectedLocation.value;
  const location = myLocations.value.find((l) => l.id === locationId);

  const entry = useComputed<OutboxEntry | undefined>(() => outbox.value.find((e) => e.key === entryKey.value));

  async function identify(barcode: string, source: Current["source"], format?: string) {
    const detectedAt = performance.now();
    metrics.detectedAt = detectedAt;
    metrics.barcode = barcode;
    metrics.previewAt = metrics.actionAt = metrics.confirmedAt = undefined;
    entryKey.value = null;
    wasting.value = false;
    confirming.value = witnessing.value = false;
    witnessed.value = null;
    quantity.value = 1;
    patient.value = "";
    const local = parseLocal(barcode);
    current.value = { barcode, source, format, detectedAt, local };
    if (navigator.vibrate) navigator.vibrate(60);
    if (!locationId) return;
    try {
      const data = await request(ParseBarcodeDocument, { barcode, location: locationId });
      if (current.value?.barcode !== barcode) return;
      metrics.previewAt = performance.now();
      current.value = { ...current.value, preview: data.parseBarcode, previewAt: performance.now() };
    } catch (error) {
      if (current.value?.barcode !== barcode) return;
      if (error instanceof NetworkError || !navigator.onLine) {
        const found = await offlineLookup(locationId, local?.gtin ?? null, local?.batch ?? null);
        current.value = { ...current.value, offline: true, ...found };
      } else {
        current.value = { ...current.value, error: describeError(error) };
      }
    }
    resultRef.current?.focus();
    resultRef.current?.scrollIntoView({ block: "start", behavior: "smooth" });
  }

  async function act(action: ScanAction) {
    const scan = current.value;
    if (!scan || !locationId) return;
    metrics.actionAt = performance.now();
    metrics.action = action;
    const preview = scan.preview;
    const serial = preview?.serial ?? scan.local?.serial;
    const queued = await enqueue(
      "recordScan",
      {
        barcode: scan.barcode,
        location: locationId,
        action,
        quantity: serial ? 1 : Math.max(1, quantity.value),
        patientReference: action === "DISPENSE" || action === "RETURN" ? patient.value.trim() || null : null,
        reason: action === "DISPOSE" ? reason.value : null,
      },
      {
        product: preview?.product ? `${preview.product.name} ${preview.product.strength}` : scan.offlineProduct,
        gtin: preview?.gtin ?? scan.local?.gtin,
        batch: preview?.batchNumber ?? scan.local?.batch,
        expiry: preview?.lot?.expiryDate ?? preview?.expiryDate ?? scan.local?.expiry ?? scan.offlineLot?.expiryDate,
        serial,
        location: location?.code,
      },
    );
    entryKey.value = queued.key;
  }

  /** A controlled drug's waste, with its witness: sent now, not queued, so the password is
   * never stored on the device. Resolves to a refusal sentence, or null when recorded. */
  async function disposeWitnessed(witness: Witness): Promise<string | null> {
    const scan = current.value;
    if (!scan || !locationId) return "Choose a location first.";
    const serial = scan.preview?.serial ?? scan.local?.serial;
    try {
      const data = await request(RecordScanDocument, {
        input: {
          barcode: scan.barcode,
          location: locationId,
          action: "DISPOSE",
          quantity: serial ? 1 : Math.max(1, quantity.value),
          reason: reason.value,
          idempotencyKey: crypto.randomUUID(),
          witness,
        },
      });
      const errors = data.recordScan.errors;
      if (errors.length) return errors.map((e) => witnessMessage(e.code, e.message)).join(" ");
      const moved = data.recordScan.movements;
      const packs = -moved.reduce((sum, m) => sum + m.quantity, 0);
      witnessed.value = `Disposed of ${packs}, witnessed by ${witness.username}. Balance now ${moved.map((m) => m.balanceAfter).join(", ")}.`;
      witnessing.value = false;
      wasting.value = false;
      return null;
    } catch (error) {
      return describeError(error);
    }
  }

  /** The controlled dispense's confirmation, brought into view and focused (it opens below
   * the form, often under the fold on a phone). */
  function showConfirmation() {
    confirming.value = true;
    requestAnimationFrame(() => {
      const panel = document.querySelector<HTMLElement>('[data-testid="controlled-confirm"]');
      panel?.focus({ preventScroll: true });
      panel?.scrollIntoView({ block: "center" });
    });
  }

  function next() {
    current.value = null;
    entryKey.value = null;
    confirming.value = witnessing.value = false;
    witnessed.value = null;
    quantity.value = 1;
    patient.value = "";
    wasting.value = false;
    resetToken.value += 1;
    metrics.detectedAt = undefined;
  }

  // Record when the server confirmed the last action.
  const settled = entry.value && entry.value.status !== "pending";
  if (settled && metrics.actionAt && !metrics.confirmedAt) {
    metrics.confirmedAt = performance.now();
    metrics.outcome = entry.value!.status;
  }

  const scan = current.value;
  const preview = scan?.preview;
  // The recorded lot's expiry first (what the server knows), else the printed one, else (offline)
  // the cached lot's; never a made-up "no expiry".
  const expiry =
    preview?.lot?.expiryDate ?? preview?.expiryDate ?? scan?.local?.expiry ?? scan?.offlineLot?.expiryDate ?? null;
  const expiredFlag = preview ? preview.lot?.expired ?? preview.expired : scan?.offlineLot?.expired;
  const state = expiryState(expiry, expiredFlag);
  const batch = preview?.batchNumber ?? scan?.local?.batch ?? null;
  // A batch that was read but is not recorded: warn before the tap, not after it.
  const unknownBatch = !!(batch && (preview ? preview.product && !preview.lot : scan?.offline && scan.offlineLot === null));
  const settledEntry = entry.value?.status === "done" ? entry.value : undefined;
  // One source for "On hand here" and "Balance now": once the action is done, the movement's
  // balance (of the lot it took) replaces the preview's figure.
  const onHand = settledEntry?.balances?.length
    ? settledEntry.balances.map((b, i) => `${formatNumber(b)}${settledEntry.lots?.[i] ? ` (batch ${settledEntry.lots[i]})` : ""}`).join(", ")
    : unknownBatch
      ? null
      : preview?.quantityOnHand != null
        ? `${formatNumber(preview.quantityOnHand)}${!preview.batchNumber ? " (all batches)" : ""}`
        : scan?.offlineLot
          ? formatNumber(scan.offlineLot.quantity)
          : null;
  const serial = preview?.serial ?? scan?.local?.serial;
  const actions = actionsForRole();
  const invalid = preview && !preview.valid;
  const product = preview?.product;
  const controlled = Boolean(product?.controlled);
  const packs = serial ? 1 : Math.max(1, quantity.value);
  const done = Boolean(entryKey.value || witnessed.value);

  return (
    <Screen title="Scan">
      <LocationPicker locations={myLocations.value} value={locationId} onChange={selectLocation} id="scan-location" />

      <PackScanner
        id="m"
        primary
        submitLabel="Look up pack"
        manualOpen={!scan}
        resetToken={resetToken.value}
        // While a result waits for a decision the camera does not replace it, nor does the pack
        // just acted on, still in view: "Scan next" clears it.
        accept={(raw) => !(current.value && !entryKey.value) && !(entryKey.value && raw === current.value?.barcode)}
        onStarting={() => (metrics.cameraStartAt = performance.now())}
        onStarted={(camera) => (metrics.engine = camera.engine)}
        onCode={(barcode, source, format) => void identify(barcode, source, format)}
      />

      <div ref={resultRef} tabIndex={-1} aria-live="polite" data-testid="scan-result">
        {scan && (
          <div class={`card result ${state !== "ok" ? state : ""}`}>
            <h2>
              {preview?.product
                ? `${preview.product.name} ${preview.product.strength}`
                : scan.offlineProduct ?? (scan.local?.gtin ? `GTIN ${scan.local.gtin}` : "Unrecognised barcode")}
            </h2>
            {preview?.product && <p class="meta">{preview.product.dosageForm}{preview.product.controlled ? " · controlled substance" : ""}</p>}
            <dl class="grid2">
              <dt>GTIN</dt>
              <dd>{preview?.gtin ?? scan.local?.gtin ?? "—"}</dd>
              <dt>Batch</dt>
              <dd data-testid="batch">{preview?.batchNumber ?? scan.local?.batch ?? "—"}</dd>
              <dt>Expiry</dt>
              <dd>
                <ExpiryTag date={expiry} expired={expiredFlag} />
              </dd>
              {serial && (
                <>
                  <dt>Serial</dt>
                  <dd>{serial}</dd>
                </>
              )}
              {(onHand != null || unknownBatch) && (
                <>
                  <dt>On hand here</dt>
                  <dd data-testid="on-hand">{unknownBatch && !settledEntry ? t("scan.batchUnknown") : onHand}</dd>
                </>
              )}
            </dl>
            {unknownBatch && !entryKey.value && (
              <p class="notice danger" role="alert" data-testid="batch-unknown">
                <strong>{t("scan.batchUnknown")}.</strong> {t("scan.batchUnknownHelp", { batch })}
              </p>
            )}
            {scan.offline && (
              <p class="notice pending">{t(scan.offlineLot ? "scan.offlineCached" : "scan.offline")}</p>
            )}
            {scan.error && <p class="notice danger">{scan.error}</p>}
            {invalid &&
              preview!.errors.map((e) => (
                <p class="notice danger" key={e.code}>
                  {errorText(e)} {sentence(e.message)}
                </p>
              ))}
            {state === "expired" && !invalid && (
              <p class="notice danger" role="alert" data-testid="expired-warning">
                {t("scan.expiredWarn")}
              </p>
            )}
            {!done && !invalid && !scan.error && (
              <>
                {!serial && (
                  <label for="scan-qty">
                    Packs
                    <input
                      id="scan-qty"
                      type="number"
                      inputMode="numeric"
                      min={1}
                      value={quantity.value}
                      onInput={(e) => (quantity.value = Number((e.target as HTMLInputElement).value) || 1)}
                    />
                  </label>
                )}
                {actions.some((a) => a === "DISPENSE" || a === "RETURN") && (
                  <label for="scan-patient">
                    Patient reference{" "}
                    <span class="hint">{controlled ? "(required: controlled drug)" : "(optional)"}</span>
                    <input
                      id="scan-patient"
                      required={controlled}
                      aria-required={controlled}
                      autoComplete="off"
                      value={patient.value}
                      onInput={(e) => (patient.value = (e.target as HTMLInputElement).value)}
                    />
                  </label>
                )}
                {confirming.value && product ? (
                  <div class="card panel" role="group" tabIndex={-1} aria-labelledby="confirm-title" data-testid="controlled-confirm">
                    <p id="confirm-title">
                      <strong>
                        Dispense {packs} × {product.name} {product.strength}
                      </strong>{" "}
                      ({product.dosageForm}, {product.unit}) to patient <strong>{patient.value.trim()}</strong>?
                    </p>
                    <p class="meta">A controlled drug: check the drug, the strength and the quantity before sending.</p>
                    <div class="actions">
                      <button
                        type="button"
                        class="primary big"
                        onClick={() => {
                          confirming.value = false;
                          void act("DISPENSE");
                        }}
                      >
                        Confirm dispense
                      </button>
                      <button type="button" class="big" onClick={() => (confirming.value = false)}>
                        Back
                      </button>
                    </div>
                  </div>
                ) : wasting.value ? (
                  <div class="card panel">
                    <label for="scan-reason">
                      Waste reason
                      <select
                        id="scan-reason"
                        value={reason.value}
                        onChange={(e) => (reason.value = (e.target as HTMLSelectElement).value as typeof reason.value)}
                      >
                        {REASONS.map((r) => (
                          <option key={r} value={r}>
                            {label("reason", r)}
                          </option>
                        ))}
                      </select>
                    </label>
                    <div class="actions">
                      <button
                        type="button"
                        class="danger big"
                        disabled={controlled && !online.value}
                        onClick={() => (controlled ? (witnessing.value = true) : void act("DISPOSE"))}
                      >
                        {controlled ? "Confirm waste with witness" : "Confirm waste"}
                      </button>
                      <button type="button" class="big" onClick={() => (wasting.value = false)}>
                        Back
                      </button>
                    </div>
                  </div>
                ) : (
                  <div class="actions">
                    {actions.map((a) => (
                      <button
                        type="button"
                        key={a}
                        class={a === "DISPOSE" ? "danger big" : a === "DISPENSE" ? "primary big" : "big"}
                        disabled={
                          (a === "DISPENSE" && state === "expired") ||
                          (controlled && a === "DISPENSE" && !patient.value.trim()) ||
                          (unknownBatch && !scan.offline && a !== "RECEIVE")
                        }
                        onClick={() =>
                          a === "DISPOSE"
                            ? (wasting.value = true)
                            : controlled && a === "DISPENSE"
                              ? showConfirmation()
                              : void act(a)
                        }
                      >
                        {ACTION_LABEL[a]}
                      </button>
                    ))}
                  </div>
                )}
              </>
            )}
            {controlled && wasting.value && !online.value && (
              <p class="notice pending">Wasting a controlled drug needs a witness and a connection.</p>
            )}
            {controlled && !done && !patient.value.trim() && actions.includes("DISPENSE") && (
              <p class="meta" data-testid="patient-required">
                Enter the patient reference to dispense a controlled drug.
              </p>
            )}
            {entryKey.value && <Outcome entry={entry.value} />}
            {witnessed.value && (
              <p class="notice ok" role="status" data-testid="outcome" data-status="done">
                {witnessed.value}
              </p>
            )}
            {witnessing.value && product && (
              <WitnessDialog
                summary={`Dispose of ${packs} × ${product.name} ${product.strength} (${reason.value.replace("_", " ").toLowerCase()}) at ${location?.code ?? "this location"}.`}
                onSubmit={disposeWitnessed}
                onCancel={() => (witnessing.value = false)}
              />
            )}
            <button type="button" class="big" onClick={next}>
              {done ? "Scan next" : "Cancel"}
            </button>
          </div>
        )}
      </div>


      <OutboxList />
      {!online.value && <p class="meta">You are offline. Scans are kept on this device and sent when the connection returns.</p>}
      {!location && myLocations.value.length > 0 && <p class="error">Choose a location first.</p>}
    </Screen>
  );
}

function Outcome({ entry }: { entry: OutboxEntry | undefined }) {
  const input = entry && scanInput(entry);
  if (!entry || !input) return null;
  const verb = ACTION_PAST[input.action] ?? input.action;
  if (entry.status === "pending") {
    return (
      <p class="notice pending" role="status" data-testid="outcome" data-status="pending">
        Queued: {verb.toLowerCase()} {input.quantity ?? 1} — will be sent {navigator.onLine ? "now" : "when back online"}.
      </p>
    );
  }
  if (entry.status === "refused") {
    return (
      <p class="notice danger" role="alert" data-testid="outcome" data-status="refused">
        Refused: {entry.errors?.map((e) => `${errorText(e)} ${sentence(e.message)}`).join(" ")}
      </p>
    );
  }
  const lots = [...new Set(entry.lots ?? [])];
  return (
    <p class="notice ok" role="status" data-testid="outcome" data-status="done">
      {verb} {input.quantity ?? 1}
      {lots.length > 0 && <> {t("scan.tookLot", { batches: lots.join(", ") })}</>}.{" "}
      {t("scan.balanceNow", { balance: entry.balances?.map(formatNumber).join(", ") ?? "—" })}
    </p>
  );
}
