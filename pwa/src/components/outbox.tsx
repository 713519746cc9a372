// The outbox as the user sees it: refused actions first (with Dismiss), then pending, then the
// last few sent. Shown on the scan screen and on every screen that queues stock actions.
import type { OutboxEntry } from "../lib/db";
import { dismiss, outbox, scanInput } from "../lib/outbox";
import { href } from "../state";
import { formatDateTime } from "../ui";
import { errorText, sentence } from "../lib/messages";

/** Where the user reviews an entry: the transfer, shipment or count it belongs to, or Scan. */
export function reviewHref(entry: OutboxEntry): string {
  const v = entry.variables;
  switch (entry.operation) {
    case "dispatchTransfer":
    case "receiveTransfer":
      return href("transfers", { id: String(v.transfer) });
    case "receiveShipmentLine":
      return href("shipments", { id: String(v.shipment) });
    case "recordCountLine":
    case "finalizeCount":
      return href("counts", { id: String(v.count) });
    default:
      return href("scan");
  }
}

export const ACTION_LABEL: Record<string, string> = {
  DISPENSE: "Dispense",
  RETURN: "Return",
  DISPOSE: "Waste",
  RECEIVE: "Receive",
};
export const ACTION_PAST: Record<string, string> = {
  DISPENSE: "Dispensed",
  RETURN: "Returned",
  DISPOSE: "Wasted",
  RECEIVE: "Received",
};

/** Entries of the current user that `match`, oldest first. */
export function entriesFor(match: (entry: OutboxEntry) => boolean): OutboxEntry[] {
  return outbox.value.filter(match);
}

/**
 * Queued actions as the user sees them: refused first (the server's message, until dismissed),
 * then pending, then the last few sent. `match` narrows it to one transfer, shipment or count.
 */
export function OutboxList({
  match = () => true,
  id = "outbox",
  title = "Waiting and sent from this device",
}: {
  match?: (entry: OutboxEntry) => boolean;
  id?: string;
  title?: string;
}) {
  const entries = entriesFor(match);
  if (!entries.length) return null;
  const pending = entries.filter((e) => e.status === "pending");
  const refused = entries.filter((e) => e.status === "refused");
  const done = entries.filter((e) => e.status === "done").slice(-5).reverse();
  const common = (e: OutboxEntry) => ({ "data-key": e.key, "data-operation": e.operation });
  return (
    <section class="card" aria-labelledby={`${id}-title`} data-testid={id}>
      <h2 id={`${id}-title`}>{title}</h2>
      {pending.length > 0 && (
        <p class="notice pending" role="status">
          {pending.length} waiting to be sent{navigator.onLine ? "…" : ": they go when the connection returns."}
        </p>
      )}
      <ul class="list">
        {refused.map((e) => (
          <li key={e.key} data-status="refused" {...common(e)}>
            <span class="tag refused">Refused</span> <OutboxLine entry={e} />
            <p class="error" role="alert" data-testid="refusal" data-codes={e.errors?.map((x) => x.code).join(" ")}>
              {e.errors?.map((x) => `${errorText(x)} ${sentence(x.message)}`).join(" ")}
            </p>
            <button type="button" onClick={() => void dismiss(e.seq!)}>
              Dismiss
            </button>
          </li>
        ))}
        {pending.map((e) => (
          <li key={e.key} data-status="pending" {...common(e)}>
            <span class="tag pending">Pending</span> <OutboxLine entry={e} />
          </li>
        ))}
        {done.map((e) => (
          <li key={e.key} data-status="done" data-replayed={e.replayed ? "true" : "false"} {...common(e)}>
            <span class="tag done">Sent</span> <OutboxLine entry={e} />
            {e.replayed && <span class="meta"> (the server already had it)</span>}
          </li>
        ))}
      </ul>
    </section>
  );
}

function OutboxLine({ entry }: { entry: OutboxEntry }) {
  const input = scanInput(entry);
  if (!input) {
    return (
      <span>
        <strong>{entry.label.title ?? entry.operation}</strong>
        <span class="meta"> · {formatDateTime(new Date(entry.createdAt).toISOString())}</span>
      </span>
    );
  }
  const what = entry.label.product ?? (entry.label.gtin ? `GTIN ${entry.label.gtin}` : input.barcode);
  return (
    <span>
      <strong>{ACTION_LABEL[input.action] ?? input.action}</strong> {input.quantity ?? 1} × {what}
      {entry.label.batch && ` · batch ${entry.label.batch}`}
      {entry.label.serial && ` · serial ${entry.label.serial}`}
      <span class="meta"> · {formatDateTime(new Date(entry.createdAt).toISOString())}</span>
    </span>
  );
}
