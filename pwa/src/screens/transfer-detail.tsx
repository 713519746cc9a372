// One transfer: what was asked, approved, picked, sent and received; the actions the state
// machine allows and the user's role and scope permit; differences found on receipt; history.
// Live through transferUpdated. Approve, reject, pick and cancel are sent directly (online only);
// dispatch and receipt move stock and go through the outbox with an idempotency key.
import { useSignal } from "@preact/signals";
import type { ComponentChildren } from "preact";
import { useEffect } from "preact/hooks";
import {
  ApproveTransferDocument,
  CancelTransferDocument,
  PickTransferDocument,
  RejectTransferDocument,
  TransferDetailUpdatedDocument,
  TransferDocument,
  type MutationErrorFieldsFragment,
  type TransferDetailFieldsFragment,
  type DiscrepancyKind,
} from "../gql/graphql";
import { ACTION_LABEL, LIST_HREF, STATUS_LABEL, STATUS_TONE, mayDo, overdue, personName } from "../components/transfers";
import {
  BackLink,
  FieldError,
  GeneralErrors,
  NO_ERRORS,
  fieldProps,
  generalErrors,
  splitErrors,
  type FieldErrors,
} from "../components/form";
import type { OutboxEntry } from "../lib/db";
import { describeError, request } from "../lib/graphql";
import { subscribe } from "../lib/live";
import { enqueue, onSettled } from "../lib/outbox";
import { OutboxList, entriesFor } from "../components/outbox";
import { online } from "../state";
import { LiveBadge, StatusTag } from "../components/status";
import { ExpiryTag, Screen, Status, formatDateTime, useLoad } from "../ui";

type Transfer = TransferDetailFieldsFragment;
type Payload = { transfer: Transfer | null; errors: MutationErrorFieldsFragment[] };

const DISCREPANCY_LABEL: Record<DiscrepancyKind, string> = {
  SHORT: "Short",
  OVER: "Over",
  DAMAGED: "Damaged",
  WRONG_LOT: "Wrong lot",
};

/** Queued stock actions (dispatch, receipt) of this transfer. */
const forTransfer = (id: string) => (e: OutboxEntry) =>
  (e.operation === "dispatchTransfer" || e.operation === "receiveTransfer") && e.variables.transfer === id;

export function TransferDetail({ id }: { id: string }) {
  const loaded = useLoad(`transfer:${id}`, async () => (await request(TransferDocument, { id })).transfer);
  const latest = useSignal<Transfer | null>(null);

  useEffect(() => {
    latest.value = null;
  }, [loaded.data]);

  useEffect(
    () =>
      subscribe(TransferDetailUpdatedDocument, { transfer: id }, ({ transferUpdated }) => {
        latest.value = transferUpdated.transfer;
      }),
    [id],
  );

  // A queued dispatch or receipt of this transfer settled: read the transfer again.
  const reload = loaded.reload;
  useEffect(
    () =>
      onSettled((entry) => {
        if (entry.variables.transfer === id) reload();
      }),
    [id],
  );

  const t = latest.value ?? loaded.data ?? null;
  const title = t ? `Transfer ${t.number}` : "Transfer";
  return (
    <Screen title={title} actions={<LiveBadge />}>
      <BackLink href={LIST_HREF}>All transfers</BackLink>
      <Status loaded={loaded} />
      {loaded.stale && !loaded.error && <p class="meta">Saved copy; refreshing…</p>}
      {!loaded.loading && loaded.data === null && !latest.value && (
        <p class="notice danger" role="alert">
          This transfer does not exist or is not in your scope.
        </p>
      )}
      {t && <Detail t={t} onChange={(next) => (latest.value = next)} />}
    </Screen>
  );
}

function Detail({ t, onChange }: { t: Transfer; onChange: (t: Transfer) => void }) {
  const entries = entriesFor(forTransfer(t.id));
  const late = overdue(t);
  return (
    <div data-testid="transfer-detail" data-status={t.status} data-number={t.number}>
      <section class="card" aria-labelledby="tr-summary">
        <h2 id="tr-summary" class="row" style={{ alignItems: "center" }}>
          <span style={{ flex: "0 1 auto" }}>
            {t.source.code} → {t.destination.code}
          </span>
          <span style={{ flex: "0 0 auto" }}>
            <StatusTag status={t.status} label={STATUS_LABEL[t.status]} tone={STATUS_TONE[t.status]} />
          </span>
        </h2>
        <dl class="grid2">
          <dt>From</dt>
          <dd>{t.source.name}</dd>
          <dt>To</dt>
          <dd>{t.destination.name}</dd>
          <dt>Requested</dt>
          <dd>
            {formatDateTime(t.requestedAt)}
            {t.requestedBy && ` by ${personName(t.requestedBy)}`}
          </dd>
          {t.neededBy && (
            <>
              <dt>Needed by</dt>
              <dd>{late ? <span class="tag expired" data-overdue="true">Overdue: {t.neededBy}</span> : t.neededBy}</dd>
            </>
          )}
          {t.decidedAt && (
            <>
              <dt>{t.status === "REJECTED" ? "Rejected" : "Approved"}</dt>
              <dd>
                {formatDateTime(t.decidedAt)}
                {t.decidedBy && ` by ${personName(t.decidedBy)}`}
              </dd>
            </>
          )}
          {t.dispatchedAt && (
            <>
              <dt>Dispatched</dt>
              <dd>
                {formatDateTime(t.dispatchedAt)}
                {t.dispatchedBy && ` by ${personName(t.dispatchedBy)}`}
              </dd>
            </>
          )}
          {t.inTransit.length > 0 && (
            <>
              <dt>On the road</dt>
              <dd data-testid="in-transit">{t.inTransit.reduce((n, x) => n + x.quantity, 0)} pack(s)</dd>
            </>
          )}
          {t.receivedAt && (
            <>
              <dt>Received</dt>
              <dd>
                {formatDateTime(t.receivedAt)}
                {t.receivedBy && ` by ${personName(t.receivedBy)}`}
              </dd>
            </>
          )}
          {t.note && (
            <>
              <dt>Note</dt>
              <dd>{t.note}</dd>
            </>
          )}
          {t.rejectionReason && (
            <>
              <dt>Why rejected</dt>
              <dd data-testid="rejection-reason">{t.rejectionReason}</dd>
            </>
          )}
          {t.cancellationReason && (
            <>
              <dt>Why cancelled</dt>
              <dd>{t.cancellationReason}</dd>
            </>
          )}
        </dl>
        <Lines t={t} />
      </section>

      <OutboxList match={forTransfer(t.id)} id="transfer-outbox" title="Sent from this device" />
      <Actions t={t} entries={entries} onChange={onChange} />
      <Discrepancies t={t} />
      {t.picks.length > 0 && !(mayDo("RECEIVE", t) || mayDo("PICK", t)) && <Picks t={t} />}
      <History t={t} />
    </div>
  );
}

function Lines({ t }: { t: Transfer }) {
  return (
    <ul class="list" data-testid="transfer-lines" aria-label="Products">
      {t.lines.map((l) => (
        <li key={l.id}>
          <strong>
            {l.product.name} {l.product.strength}
          </strong>{" "}
          <span class="meta">{l.product.dosageForm}</span>
          <dl class="grid2" style={{ margin: "0.25rem 0 0" }}>
            <dt>Requested</dt>
            <dd>{l.requestedQuantity}</dd>
            {l.approvedQuantity != null && (
              <>
                <dt>Approved</dt>
                <dd>
                  {l.approvedQuantity}
                  {l.approvedQuantity < l.requestedQuantity && " (partial)"}
                </dd>
              </>
            )}
            {l.pickedQuantity > 0 && (
              <>
                <dt>Picked</dt>
                <dd>{l.pickedQuantity}</dd>
              </>
            )}
            {l.receivedQuantity != null && (
              <>
                <dt>Received</dt>
                <dd>{l.receivedQuantity}</dd>
              </>
            )}
          </dl>
        </li>
      ))}
    </ul>
  );
}

// --- actions -------------------------------------------------------------------------------------

/** A direct (not queued) transfer mutation: sending flag, typed errors, result applied. */
function useDirect(onChange: (t: Transfer) => void, known: (field: string) => boolean) {
  const sending = useSignal(false);
  const errors = useSignal<FieldErrors>(NO_ERRORS);
  async function run(send: () => Promise<Payload>): Promise<boolean> {
    if (sending.value) return false;
    sending.value = true;
    errors.value = NO_ERRORS;
    try {
      const payload = await send();
      if (payload.errors.length || !payload.transfer) {
        errors.value = splitErrors(payload.errors, known);
        return false;
      }
      onChange(payload.transfer);
      return true;
    } catch (error) {
      errors.value = generalErrors(describeError(error));
      return false;
    } finally {
      sending.value = false;
    }
  }
  return { sending, errors, run };
}

function OfflineNote({ id, what }: { id: string; what: string }) {
  if (online.value) return null;
  return (
    <p class="notice pending" id={id}>
      Offline: {what} needs a connection.
    </p>
  );
}

function Panel({ id, title, children }: { id: string; title: string; children: ComponentChildren }) {
  return (
    <section class="card" aria-labelledby={id} data-testid={id}>
      <h2 id={id}>{title}</h2>
      {children}
    </section>
  );
}

function Actions({ t, entries, onChange }: { t: Transfer; entries: OutboxEntry[]; onChange: (t: Transfer) => void }) {
  const pending = entries.filter((e) => e.status === "pending");
  const offered = t.allowedActions.filter((a) => mayDo(a, t));
  if (!offered.length) {
    if (t.allowedActions.length && !["RECEIVED", "REJECTED", "CANCELLED"].includes(t.status)) {
      return (
        <p class="meta" data-testid="waiting-for">
          Next: {t.allowedActions.map((a) => a.toLowerCase()).join(" or ")} — by{" "}
          {t.status === "DISPATCHED" ? t.destination.code : t.source.code}.
        </p>
      );
    }
    return null;
  }
  return (
    <>
      {offered.includes("APPROVE") && <ApprovePanel t={t} onChange={onChange} />}
      {offered.includes("REJECT") && <RejectPanel t={t} onChange={onChange} />}
      {offered.includes("PICK") && <PickPanel t={t} onChange={onChange} />}
      {offered.includes("DISPATCH") && <DispatchPanel t={t} pending={pending.some((e) => e.operation === "dispatchTransfer")} />}
      {offered.includes("RECEIVE") && <ReceivePanel t={t} pending={pending.some((e) => e.operation === "receiveTransfer")} />}
      {offered.includes("CANCEL") && <CancelPanel t={t} onChange={onChange} />}
    </>
  );
}

function ApprovePanel({ t, onChange }: { t: Transfer; onChange: (t: Transfer) => void }) {
  const quantities = useSignal<Record<string, number>>(Object.fromEntries(t.lines.map((l) => [l.id, l.requestedQuantity])));
  const known = (f: string) => f === "lines" || /^lines\.\d+\.approvedQuantity$/.test(f);
  const { sending, errors, run } = useDirect(onChange, known);
  const err = errors.value.byField;
  const approve = () =>
    run(async () => {
      const lines = t.lines.map((l) => ({ line: l.id, approvedQuantity: quantities.value[l.id] ?? l.requestedQuantity }));
      return (await request(ApproveTransferDocument, { transfer: t.id, lines })).approveTransfer;
    });
  return (
    <Panel id="approve-panel" title="Approve">
      <p class="meta">Approve less than asked for a partial delivery; 0 drops a line.</p>
      {t.lines.map((l, i) => (
        <label key={l.id} for={`approve-${l.id}`}>
          {l.product.name} {l.product.strength} <span class="hint">asked {l.requestedQuantity}</span>
          <input
            id={`approve-${l.id}`}
            type="number"
            inputMode="numeric"
            min={0}
            max={l.requestedQuantity}
            value={quantities.value[l.id]}
            {...fieldProps(`approve-${l.id}`, err[`lines.${i}.approvedQuantity`])}
            onInput={(e) => (quantities.value = { ...quantities.value, [l.id]: Number((e.target as HTMLInputElement).value) })}
          />
          <FieldError id={`approve-${l.id}`} message={err[`lines.${i}.approvedQuantity`]} />
        </label>
      ))}
      <FieldError id="approve-lines" message={err.lines} />
      <GeneralErrors errors={errors.value.general} />
      <OfflineNote id="approve-offline" what="approving" />
      <button
        type="button"
        class="primary big"
        disabled={sending.value || !online.value}
        aria-describedby={online.value ? undefined : "approve-offline"}
        onClick={() => void approve()}
      >
        {sending.value ? "Approving…" : "Approve"}
      </button>
    </Panel>
  );
}

function ReasonForm({
  id,
  label,
  button,
  busyLabel,
  danger,
  what,
  onSubmit,
  sending,
  errors,
}: {
  id: string;
  label: string;
  button: string;
  busyLabel: string;
  danger?: boolean;
  what: string;
  onSubmit: (reason: string) => void;
  sending: boolean;
  errors: FieldErrors;
}) {
  const reason = useSignal("");
  return (
    <form
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        onSubmit(reason.value);
      }}
    >
      <label for={`${id}-reason`}>
        {label}
        <textarea
          id={`${id}-reason`}
          rows={2}
          maxLength={200}
          value={reason.value}
          {...fieldProps(`${id}-reason`, errors.byField.reason)}
          onInput={(e) => (reason.value = (e.target as HTMLTextAreaElement).value)}
        />
        <FieldError id={`${id}-reason`} message={errors.byField.reason} />
      </label>
      <GeneralErrors errors={errors.general} />
      <OfflineNote id={`${id}-offline`} what={what} />
      <button
        type="submit"
        class={danger ? "danger big" : "big"}
        disabled={sending || !online.value}
        aria-describedby={online.value ? undefined : `${id}-offline`}
      >
        {sending ? busyLabel : button}
      </button>
    </form>
  );
}

function RejectPanel({ t, onChange }: { t: Transfer; onChange: (t: Transfer) => void }) {
  const { sending, errors, run } = useDirect(onChange, (f) => f === "reason");
  return (
    <Panel id="reject-panel" title="Reject">
      <ReasonForm
        id="reject"
        label="Why not?"
        button="Reject"
        busyLabel="Rejecting…"
        danger
        what="rejecting"
        sending={sending.value}
        errors={errors.value}
        onSubmit={(reason) =>
          void run(async () => (await request(RejectTransferDocument, { transfer: t.id, reason })).rejectTransfer)
        }
      />
    </Panel>
  );
}

function CancelPanel({ t, onChange }: { t: Transfer; onChange: (t: Transfer) => void }) {
  const { sending, errors, run } = useDirect(onChange, (f) => f === "reason");
  return (
    <details class="card" data-testid="cancel-panel">
      <summary>Cancel this transfer</summary>
      <ReasonForm
        id="cancel"
        label="Reason for cancelling"
        button="Cancel transfer"
        busyLabel="Cancelling…"
        danger
        what="cancelling"
        sending={sending.value}
        errors={errors.value}
        onSubmit={(reason) =>
          void run(async () => (await request(CancelTransferDocument, { transfer: t.id, reason })).cancelTransfer)
        }
      />
    </details>
  );
}

interface PickRow {
  key: string;
  line: string;
  product: string;
  lot: Transfer["picks"][number]["lot"];
  available?: number;
  suggested: number;
  picked: number;
}

function pickRows(t: Transfer): PickRow[] {
  const rows = new Map<string, PickRow>();
  for (const s of t.suggestedPicks) {
    const key = `${s.line.id}:${s.lot.id}`;
    rows.set(key, {
      key,
      line: s.line.id,
      product: `${s.product.name} ${s.product.strength}`,
      lot: s.lot,
      available: s.availableAtSource,
      suggested: s.quantity,
      picked: 0,
    });
  }
  for (const p of t.picks) {
    const key = `${p.line.id}:${p.lot.id}`;
    const row = rows.get(key);
    if (row) row.picked = p.quantity;
    else
      rows.set(key, {
        key,
        line: p.line.id,
        product: `${p.line.product.name} ${p.line.product.strength}`,
        lot: p.lot,
        suggested: 0,
        picked: p.quantity,
      });
  }
  return [...rows.values()];
}

function PickPanel({ t, onChange }: { t: Transfer; onChange: (t: Transfer) => void }) {
  const rows = pickRows(t);
  const picked = t.status === "PICKED";
  const editing = useSignal(false);
  const quantities = useSignal<Record<string, number>>({});
  const known = (f: string) => f === "picks" || /^picks\.\d+\.(lot|quantity|line)$/.test(f);
  const { sending, errors, run } = useDirect(onChange, known);
  const submitted = useSignal<string[]>([]); // row keys in the order sent, to place errors

  function startEditing() {
    quantities.value = Object.fromEntries(rows.map((r) => [r.key, picked ? r.picked : r.suggested]));
    editing.value = true;
  }

  async function accept() {
    const ok = await run(async () => (await request(PickTransferDocument, { transfer: t.id })).pickTransfer);
    if (ok) editing.value = false;
  }

  async function saveEdited() {
    const chosen = rows.filter((r) => (quantities.value[r.key] ?? 0) > 0);
    submitted.value = chosen.map((r) => r.key);
    const picks = chosen.map((r) => ({ line: r.line, lot: r.lot.id, quantity: quantities.value[r.key] }));
    const ok = await run(async () => (await request(PickTransferDocument, { transfer: t.id, picks })).pickTransfer);
    if (ok) editing.value = false;
  }

  const rowError = (key: string) => {
    const index = submitted.value.indexOf(key);
    if (index < 0) return undefined;
    const err = errors.value.byField;
    return err[`picks.${index}.quantity`] ?? err[`picks.${index}.lot`] ?? err[`picks.${index}.line`];
  };
  const byLine = t.lines.map((l) => ({ line: l, rows: rows.filter((r) => r.line === l.id) }));

  return (
    <Panel id="pick-panel" title={picked ? "Picked lots" : "Pick"}>
      <p class="meta">
        {picked
          ? "These lots leave on dispatch. Pick again to change them."
          : "First expired, first out: the lots below are suggested from the stock at the source."}
      </p>
      {byLine.map(({ line, rows: lineRows }) => (
        <div key={line.id} style={{ marginBottom: "0.5rem" }}>
          <h3>
            {line.product.name} {line.product.strength}{" "}
            <span class="meta">· approved {line.approvedQuantity ?? line.requestedQuantity}</span>
          </h3>
          {!lineRows.length && <p class="error">Nothing issuable at {t.source.code} for this product.</p>}
          <ul class="list" data-testid="pick-rows">
            {lineRows.map((r) => (
              <li key={r.key} data-batch={r.lot.batchNumber} data-suggested={r.suggested} data-picked={r.picked}>
                <span>
                  Batch <strong>{r.lot.batchNumber}</strong> <ExpiryTag date={r.lot.expiryDate} expired={r.lot.expired} />
                </span>
                <span class="meta" style={{ display: "block" }}>
                  {r.available != null && `${r.available} on hand · `}
                  {picked ? `picked ${r.picked}` : `suggested ${r.suggested}`}
                  {picked && r.suggested !== r.picked && ` · FEFO suggests ${r.suggested}`}
                </span>
                {editing.value && (
                  <label for={`pick-${r.key}`}>
                    Packs from {r.lot.batchNumber}
                    <input
                      id={`pick-${r.key}`}
                      type="number"
                      inputMode="numeric"
                      min={0}
                      max={r.available}
                      value={quantities.value[r.key] ?? 0}
                      {...fieldProps(`pick-${r.key}`, rowError(r.key))}
                      onInput={(e) => (quantities.value = { ...quantities.value, [r.key]: Number((e.target as HTMLInputElement).value) })}
                    />
                    <FieldError id={`pick-${r.key}`} message={rowError(r.key)} />
                  </label>
                )}
              </li>
            ))}
          </ul>
        </div>
      ))}
      <FieldError id="pick" message={errors.value.byField.picks} />
      <GeneralErrors errors={errors.value.general} />
      <OfflineNote id="pick-offline" what="picking" />
      <div class="actions">
        {editing.value ? (
          <>
            <button type="button" class="primary big" disabled={sending.value || !online.value} aria-describedby={online.value ? undefined : "pick-offline"} onClick={() => void saveEdited()}>
              {sending.value ? "Saving…" : "Save picks"}
            </button>
            <button type="button" class="big" onClick={() => (editing.value = false)}>
              Back
            </button>
          </>
        ) : (
          <>
            {t.suggestedPicks.length > 0 && (
              <button type="button" class="primary big" disabled={sending.value || !online.value} aria-describedby={online.value ? undefined : "pick-offline"} onClick={() => void accept()}>
                {sending.value ? "Picking…" : picked ? "Re-pick as suggested" : "Pick as suggested"}
              </button>
            )}
            <button type="button" class="big" disabled={!rows.length} onClick={startEditing}>
              Edit quantities
            </button>
          </>
        )}
      </div>
    </Panel>
  );
}

function DispatchPanel({ t, pending }: { t: Transfer; pending: boolean }) {
  const total = t.picks.reduce((n, p) => n + p.quantity, 0);
  return (
    <Panel id="dispatch-panel" title="Dispatch">
      <p>
        {total} pack(s) in {t.picks.length} lot(s) leave {t.source.code} for {t.destination.code}.
      </p>
      {!online.value && <p class="meta">Offline: the dispatch is kept on this device and sent when the connection returns.</p>}
      <button
        type="button"
        class="primary big"
        disabled={pending}
        onClick={() => void enqueue("dispatchTransfer", { transfer: t.id }, { title: `Dispatch ${t.number}` })}
      >
        {pending ? "Dispatch queued" : "Dispatch"}
      </button>
    </Panel>
  );
}

function Picks({ t }: { t: Transfer }) {
  return (
    <section class="card" aria-labelledby="picks-title">
      <h2 id="picks-title">{t.status === "PICKED" ? "Lots picked" : "Lots sent"}</h2>
      <ul class="list">
        {t.picks.map((p) => (
          <li key={p.id} data-batch={p.lot.batchNumber}>
            {p.line.product.name} {p.line.product.strength} · batch <strong>{p.lot.batchNumber}</strong>{" "}
            <ExpiryTag date={p.lot.expiryDate} expired={p.lot.expired} />
            <span class="meta" style={{ display: "block" }}>
              {p.quantity} {t.status === "PICKED" ? "picked" : "sent"}{p.receivedQuantity != null && ` · ${p.receivedQuantity} received`}
            </span>
          </li>
        ))}
      </ul>
    </section>
  );
}

interface ReceiptRow {
  received: number;
  damaged: number;
  note: string;
}

function ReceivePanel({ t, pending }: { t: Transfer; pending: boolean }) {
  const rows = useSignal<Record<string, ReceiptRow>>(
    Object.fromEntries(t.picks.map((p) => [p.id, { received: p.quantity, damaged: 0, note: "" }])),
  );
  const set = (id: string, change: Partial<ReceiptRow>) => (rows.value = { ...rows.value, [id]: { ...rows.value[id], ...change } });

  function receive() {
    const lines = t.picks.map((p) => {
      const row = rows.value[p.id] ?? { received: p.quantity, damaged: 0, note: "" };
      return {
        pick: p.id,
        receivedQuantity: Math.max(0, row.received || 0),
        damagedQuantity: Math.max(0, row.damaged || 0),
        note: row.note.trim() || null,
      };
    });
    const short = lines.reduce((n, l, i) => n + Math.max(0, t.picks[i].quantity - l.receivedQuantity - l.damagedQuantity), 0);
    void enqueue("receiveTransfer", { transfer: t.id, lines }, { title: `Receive ${t.number}${short ? ` (${short} short)` : ""}` });
  }

  return (
    <Panel id="receive-panel" title="Receive">
      <p class="meta">Count what arrived. Damaged packs do not go into stock; differences are recorded.</p>
      <ul class="list">
        {t.picks.map((p) => {
          const row = rows.value[p.id] ?? { received: p.quantity, damaged: 0, note: "" };
          const diff = row.received + row.damaged - p.quantity;
          return (
            <li key={p.id} data-batch={p.lot.batchNumber}>
              <p>
                {p.line.product.name} {p.line.product.strength} · batch <strong>{p.lot.batchNumber}</strong>{" "}
                <ExpiryTag date={p.lot.expiryDate} expired={p.lot.expired} />
              </p>
              <p class="meta">{p.quantity} sent</p>
              <div class="row">
                <label for={`recv-${p.id}`}>
                  Received
                  <input
                    id={`recv-${p.id}`}
                    type="number"
                    inputMode="numeric"
                    min={0}
                    value={row.received}
                    onInput={(e) => set(p.id, { received: Number((e.target as HTMLInputElement).value) })}
                  />
                </label>
                <label for={`damaged-${p.id}`}>
                  Damaged
                  <input
                    id={`damaged-${p.id}`}
                    type="number"
                    inputMode="numeric"
                    min={0}
                    value={row.damaged}
                    onInput={(e) => set(p.id, { damaged: Number((e.target as HTMLInputElement).value) })}
                  />
                </label>
              </div>
              {diff !== 0 && (
                <p class="notice pending" data-testid="receipt-difference">
                  {diff < 0 ? `${-diff} short` : `${diff} over`} — recorded as a discrepancy.
                </p>
              )}
              <label for={`note-${p.id}`}>
                Note <span class="hint">(optional)</span>
                <input id={`note-${p.id}`} autoComplete="off" value={row.note} onInput={(e) => set(p.id, { note: (e.target as HTMLInputElement).value })} />
              </label>
            </li>
          );
        })}
      </ul>
      {!online.value && <p class="meta">Offline: the receipt is kept on this device and sent when the connection returns.</p>}
      <button type="button" class="primary big" disabled={pending} onClick={receive}>
        {pending ? "Receipt queued" : "Receive into stock"}
      </button>
    </Panel>
  );
}

function Discrepancies({ t }: { t: Transfer }) {
  if (!t.discrepancies.length) return null;
  return (
    <section class="card" aria-labelledby="disc-title" data-testid="discrepancies">
      <h2 id="disc-title">Differences on receipt</h2>
      <ul class="list">
        {t.discrepancies.map((d) => (
          <li key={d.id} data-kind={d.kind} data-quantity={d.quantity}>
            <span class={`tag ${d.kind === "OVER" ? "pending" : "refused"}`}>{DISCREPANCY_LABEL[d.kind].toUpperCase()}</span>{" "}
            <strong>{d.quantity}</strong> pack(s){d.lot && ` · batch ${d.lot.batchNumber}`}
            <span class="meta" style={{ display: "block" }}>
              {d.dispatchedQuantity != null && `sent ${d.dispatchedQuantity}`}
              {d.receivedQuantity != null && ` · received ${d.receivedQuantity}`}
              {!!d.damagedQuantity && ` · damaged ${d.damagedQuantity}`}
              {d.recordedBy && ` · by ${personName(d.recordedBy)}`} · {formatDateTime(d.recordedAt)}
            </span>
            {d.note && <span style={{ display: "block" }}>“{d.note}”</span>}
          </li>
        ))}
      </ul>
    </section>
  );
}

function History({ t }: { t: Transfer }) {
  if (!t.history.length) return null;
  return (
    <section class="card" aria-labelledby="history-title" data-testid="history">
      <h2 id="history-title">History</h2>
      <ol class="list">
        {t.history.map((h, i) => (
          <li key={i} data-action={h.action}>
            <strong>{ACTION_LABEL[h.action]}</strong> by {h.actor} <span class="meta">({h.role.toLowerCase().replace("_", " ")})</span>
            <span class="meta" style={{ display: "block" }}>{formatDateTime(h.at)}</span>
            {h.reason && <span style={{ display: "block" }}>“{h.reason}”</span>}
          </li>
        ))}
      </ol>
    </section>
  );
}
