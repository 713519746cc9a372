// The outbox entries of one shipment or one count: what this device still has to send
// (pending), what the server refused (with its message, until dismissed), and the last sent.
import type { OutboxEntry } from "../lib/db";
import { dismiss, outbox } from "../lib/outbox";
import { formatDateTime } from "../ui";

export function entriesFor(match: (entry: OutboxEntry) => boolean): OutboxEntry[] {
  return outbox.value.filter(match);
}

export function OutboxFor({ match, id, title = "Sent from this device" }: { match: (entry: OutboxEntry) => boolean; id: string; title?: string }) {
  const entries = entriesFor(match);
  if (!entries.length) return null;
  const refused = entries.filter((e) => e.status === "refused");
  const pending = entries.filter((e) => e.status === "pending");
  const done = entries.filter((e) => e.status === "done").slice(-5).reverse();
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
          <li key={e.key} data-status="refused" data-key={e.key}>
            <span class="tag refused">Refused</span> <Line entry={e} />
            <p class="error" role="alert">
              {e.errors?.map((x) => x.message).join("; ")}
            </p>
            <button type="button" onClick={() => void dismiss(e.seq!)}>
              Dismiss
            </button>
          </li>
        ))}
        {pending.map((e) => (
          <li key={e.key} data-status="pending" data-key={e.key}>
            <span class="tag pending">Pending</span> <Line entry={e} />
          </li>
        ))}
        {done.map((e) => (
          <li key={e.key} data-status="done" data-key={e.key} data-replayed={e.replayed ? "true" : "false"}>
            <span class="tag done">Sent</span> <Line entry={e} />
          </li>
        ))}
      </ul>
    </section>
  );
}

function Line({ entry }: { entry: OutboxEntry }) {
  return (
    <span>
      <strong>{entry.label.title ?? entry.operation}</strong>
      <span class="meta"> · {formatDateTime(new Date(entry.createdAt).toISOString())}</span>
    </span>
  );
}
