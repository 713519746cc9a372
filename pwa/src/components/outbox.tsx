// The outbox as the user sees it: refused actions first (with Dismiss), then pending, then the
// last few sent. Shown on the scan screen and on every screen that queues stock actions.
import type { OutboxEntry } from "../lib/db";
import { dismiss, outbox, scanInput } from "../lib/outbox";
import { formatDateTime } from "../ui";

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

export function OutboxPanel() {
  const entries = outbox.value;
  const pending = entries.filter((e) => e.status === "pending");
  const refused = entries.filter((e) => e.status === "refused");
  const done = entries.filter((e) => e.status === "done").slice(-5).reverse();
  if (!entries.length) return null;
  return (
    <section class="card" aria-labelledby="outbox-title" data-testid="outbox">
      <h2 id="outbox-title">Waiting and sent from this device</h2>
      <ul class="list">
        {refused.map((e) => (
          <li key={e.key} data-status="refused" data-key={e.key}>
            <span class="tag refused">Refused</span> <OutboxLine entry={e} />
            <p class="error">{e.errors?.map((x) => `${x.message} (${x.code})`).join("; ")}</p>
            <button type="button" onClick={() => void dismiss(e.seq!)}>
              Dismiss
            </button>
          </li>
        ))}
        {pending.map((e) => (
          <li key={e.key} data-status="pending" data-key={e.key}>
            <span class="tag pending">Pending</span> <OutboxLine entry={e} />
          </li>
        ))}
        {done.map((e) => (
          <li key={e.key} data-status="done" data-key={e.key} data-replayed={e.replayed ? "true" : "false"}>
            <span class="tag done">Sent</span> <OutboxLine entry={e} />
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
