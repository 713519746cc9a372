// Alerts: open and acknowledged alerts in scope, new ones arrive live (alertRaised).
import { label } from "../lib/messages";
import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import {
  AcknowledgeAlertDocument,
  AlertRaisedDocument,
  AlertsDocument,
  type AlertFieldsFragment,
  type AlertStatus,
} from "../gql/graphql";
import { allPages, describeError, request } from "../lib/graphql";
import { subscribe } from "../lib/live";
import { hasRole } from "../state";
import { ExpiryTag, Screen, Status, formatDateTime, useLoad } from "../ui";


export function AlertsScreen() {
  const filter = useSignal<"OPEN" | "ALL">("OPEN");
  const statuses: AlertStatus[] = filter.value === "OPEN" ? ["OPEN"] : ["OPEN", "ACKNOWLEDGED", "RESOLVED"];
  const loaded = useLoad(`alerts:${filter.value}`, () =>
    allPages(AlertsDocument, { status: statuses }, (d) => d.alerts, 300),
  );
  const fresh = useSignal<AlertFieldsFragment[]>([]);
  const changed = useSignal<Map<string, AlertFieldsFragment>>(new Map());

  useEffect(() => {
    fresh.value = [];
    changed.value = new Map();
  }, [loaded.data]);

  useEffect(
    () =>
      subscribe(AlertRaisedDocument, {}, ({ alertRaised }) => {
        fresh.value = [alertRaised, ...fresh.value.filter((a) => a.id !== alertRaised.id)];
      }),
    [],
  );

  const seen = new Set<string>();
  const alerts = [...fresh.value, ...(loaded.data ?? [])]
    .map((a) => changed.value.get(a.id) ?? a)
    .filter((a) => (seen.has(a.id) ? false : (seen.add(a.id), true)))
    .filter((a) => filter.value === "ALL" || a.status === "OPEN");
  const canAck = hasRole("ADMIN", "PHARMACIST", "WAREHOUSE_MANAGER", "NURSE");

  return (
    <Screen title="Alerts">
      <div class="row" role="group" aria-label="Which alerts">
        <button type="button" aria-pressed={filter.value === "OPEN"} class={filter.value === "OPEN" ? "primary" : ""} onClick={() => (filter.value = "OPEN")}>
          Open
        </button>
        <button type="button" aria-pressed={filter.value === "ALL"} class={filter.value === "ALL" ? "primary" : ""} onClick={() => (filter.value = "ALL")}>
          All
        </button>
      </div>
      <Status loaded={loaded} empty={!!loaded.data && !alerts.length} />
      <ul class="list" data-testid="alert-list">
        {alerts.map((a) => (
          <AlertItem
            key={a.id}
            alert={a}
            canAck={canAck}
            onChange={(updated) => {
              const next = new Map(changed.value);
              next.set(updated.id, updated);
              changed.value = next;
            }}
          />
        ))}
      </ul>
    </Screen>
  );
}

function AlertItem({
  alert,
  canAck,
  onChange,
}: {
  alert: AlertFieldsFragment;
  canAck: boolean;
  onChange: (alert: AlertFieldsFragment) => void;
}) {
  const open = useSignal(false);
  const note = useSignal("");
  const busy = useSignal(false);
  const error = useSignal<string | null>(null);

  async function acknowledge(event: Event) {
    event.preventDefault();
    busy.value = true;
    error.value = null;
    try {
      const { acknowledgeAlert } = await request(AcknowledgeAlertDocument, { id: alert.id, note: note.value.trim() || null });
      if (acknowledgeAlert.errors.length) error.value = acknowledgeAlert.errors.map((e) => e.message).join("; ");
      else if (acknowledgeAlert.alert) {
        onChange(acknowledgeAlert.alert);
        open.value = false;
      }
    } catch (e) {
      error.value = describeError(e);
    } finally {
      busy.value = false;
    }
  }

  const noteId = `note-${alert.id}`;
  return (
    <li data-alert={alert.id} data-status={alert.status}>
      <p>
        <span class={`tag ${alert.status === "OPEN" ? "refused" : "neutral"}`}>{label("alert", alert.kind)}</span>{" "}
        <span class="tag neutral">{label("status", alert.status)}</span>
      </p>
      <p>
        <strong>{alert.message}</strong>
      </p>
      <p class="meta">
        {alert.location && `${alert.location.code} · `}
        {formatDateTime(alert.raisedAt)}
        {alert.lot && (
          <>
            {" · "}batch {alert.lot.batchNumber} <ExpiryTag date={alert.lot.expiryDate} />
          </>
        )}
      </p>
      {alert.acknowledgedAt && (
        <p class="meta">
          Acknowledged {formatDateTime(alert.acknowledgedAt)}
          {alert.acknowledgementNote && `: ${alert.acknowledgementNote}`}
        </p>
      )}
      {alert.status === "OPEN" && canAck && !open.value && (
        <button type="button" onClick={() => (open.value = true)}>
          Acknowledge
        </button>
      )}
      {open.value && (
        <form onSubmit={acknowledge} class="card panel">
          <label for={noteId}>
            Note <span class="hint">(optional)</span>
            <input id={noteId} value={note.value} onInput={(e) => (note.value = (e.target as HTMLInputElement).value)} />
          </label>
          <div class="row">
            <button type="submit" class="primary" disabled={busy.value}>
              Confirm acknowledge
            </button>
            <button type="button" onClick={() => (open.value = false)}>
              Cancel
            </button>
          </div>
        </form>
      )}
      {error.value && (
        <p class="error" role="alert">
          {error.value}
        </p>
      )}
    </li>
  );
}
