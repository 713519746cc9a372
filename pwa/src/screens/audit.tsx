// Audit (ADMIN, AUDITOR): the hash-chained trail, newest first, filtered by what auditTrail
// accepts, paged with its cursor; each event opens to show what changed. "Verify chain" asks
// the server to walk the whole chain (the same check as `apotheca verify-audit`).
import { auditAction, auditEntity } from "../lib/messages";
import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import {
  AuditActorsDocument,
  AuditIntegrityDocument,
  AuditTrailDocument,
  type AuditIntegrityQuery,
  type AuditTrailQuery,
  type AuditTrailQueryVariables,
} from "../gql/graphql";
import { describeError, request } from "../lib/graphql";
import { Facts } from "../components/form";
import { hasRole } from "../state";
import { Screen, Status, formatDateTime, useLoad } from "../ui";

type AuditEvent = AuditTrailQuery["auditTrail"]["edges"][number]["node"];
type Integrity = AuditIntegrityQuery["auditIntegrity"];

const PAGE = 50;

interface Filters {
  action: string;
  entityType: string;
  entityId: string;
  actor: string;
  since: string; // yyyy-mm-dd, local day, inclusive
  until: string; // yyyy-mm-dd, local day, inclusive
}
const NO_FILTERS: Filters = { action: "", entityType: "", entityId: "", actor: "", since: "", until: "" };

// The entity types services record today; free text is accepted too.
const ENTITY_TYPES = ["Alert", "Contract", "DecommissionedSerial", "Discrepancy", "Location", "Lot", "MinimumLevel", "Movement", "Organisation", "Product", "PurchaseOrder", "Recall", "Shipment", "StockCount", "StockCountLine", "SupplierContact", "Transfer", "User"];

/** Local calendar days to the server's half-open [since, until) instants. */
function variables(f: Filters, after: string | null): AuditTrailQueryVariables {
  const day = (d: string, plus = 0) => {
    const date = new Date(`${d}T00:00`);
    date.setDate(date.getDate() + plus);
    return date.toISOString();
  };
  return {
    first: PAGE,
    after,
    action: f.action.trim() || null,
    entityType: f.entityType.trim() || null,
    entityId: f.entityId.trim() || null,
    actor: f.actor || null,
    since: f.since ? day(f.since) : null,
    until: f.until ? day(f.until, 1) : null,
  };
}

async function page(f: Filters, after: string | null) {
  const { auditTrail } = await request(AuditTrailDocument, variables(f, after));
  return {
    events: auditTrail.edges.map((e) => e.node),
    next: auditTrail.pageInfo.hasNextPage ? (auditTrail.pageInfo.endCursor ?? null) : null,
    total: auditTrail.totalCount,
  };
}

export function AuditScreen() {
  const draft = useSignal<Filters>(NO_FILTERS);
  const applied = useSignal<Filters>(NO_FILTERS);
  const loaded = useLoad(`audit:${JSON.stringify(applied.value)}`, () => page(applied.value, null));
  // Further pages, appended by "Load more"; a new first page starts over.
  const more = useSignal<AuditEvent[]>([]);
  const cursor = useSignal<string | null>(null);
  const loadingMore = useSignal(false);
  const moreError = useSignal<string | null>(null);
  const isAdmin = hasRole("ADMIN");
  const actors = useLoad(isAdmin ? "audit:actors" : null, async () => (await request(AuditActorsDocument)).users.edges.map((e) => e.node));

  useEffect(() => {
    more.value = [];
    cursor.value = loaded.data?.next ?? null;
    moreError.value = null;
  }, [loaded.data]);

  async function loadMore() {
    if (!cursor.value) return;
    loadingMore.value = true;
    moreError.value = null;
    try {
      const next = await page(applied.value, cursor.value);
      more.value = [...more.value, ...next.events];
      cursor.value = next.next;
    } catch (e) {
      moreError.value = describeError(e);
    } finally {
      loadingMore.value = false;
    }
  }

  const set = (key: keyof Filters) => (e: Event) => {
    draft.value = { ...draft.value, [key]: (e.target as HTMLInputElement | HTMLSelectElement).value };
  };
  const events = [...(loaded.data?.events ?? []), ...more.value];
  const filtered = JSON.stringify(applied.value) !== JSON.stringify(NO_FILTERS);

  return (
    <Screen title="Audit">
      <IntegrityCheck />
      <details class="card">
        <summary>Filters{filtered && " (on)"}</summary>
        <form
          onSubmit={(e) => {
            e.preventDefault();
            applied.value = { ...draft.value };
          }}
        >
          <label for="audit-action">
            Action <span class="hint">e.g. user.update, stock.dispense</span>
            <input id="audit-action" list="audit-actions" value={draft.value.action} onInput={set("action")} autoCapitalize="none" />
            <datalist id="audit-actions">
              {[...new Set(events.map((e) => e.action))].sort().map((a) => (
                <option key={a} value={a} />
              ))}
            </datalist>
          </label>
          <div class="row">
            <label for="audit-entity-type">
              Entity type
              <input id="audit-entity-type" list="audit-entity-types" value={draft.value.entityType} onInput={set("entityType")} autoCapitalize="none" />
              <datalist id="audit-entity-types">
                {ENTITY_TYPES.map((t) => (
                  <option key={t} value={t} />
                ))}
              </datalist>
            </label>
            <label for="audit-entity-id">
              Entity id
              <input id="audit-entity-id" value={draft.value.entityId} onInput={set("entityId")} inputMode="numeric" />
            </label>
          </div>
          {isAdmin && actors.data && (
            <label for="audit-actor">
              Who
              <select id="audit-actor" value={draft.value.actor} onChange={set("actor")}>
                <option value="">Anyone</option>
                {actors.data.map((u) => (
                  <option key={u.id} value={u.id}>
                    {u.fullName} ({u.username})
                  </option>
                ))}
              </select>
            </label>
          )}
          <div class="row">
            <label for="audit-since">
              From
              <input id="audit-since" type="date" value={draft.value.since} onInput={set("since")} />
            </label>
            <label for="audit-until">
              To <span class="hint">(inclusive)</span>
              <input id="audit-until" type="date" value={draft.value.until} onInput={set("until")} />
            </label>
          </div>
          <div class="row">
            <button type="submit" class="primary">
              Apply filters
            </button>
            <button
              type="button"
              onClick={() => {
                draft.value = NO_FILTERS;
                applied.value = NO_FILTERS;
              }}
            >
              Clear
            </button>
          </div>
        </form>
      </details>
      <Status loaded={loaded} empty={!!loaded.data && !events.length} />
      {loaded.data && (
        <p class="meta" aria-live="polite">
          {events.length} of {loaded.data.total} event{loaded.data.total === 1 ? "" : "s"} shown
        </p>
      )}
      <ul class="list" data-testid="audit-list">
        {events.map((e) => (
          <AuditItem key={e.seq} event={e} />
        ))}
      </ul>
      {moreError.value && (
        <p class="error" role="alert">
          {moreError.value}
        </p>
      )}
      {cursor.value && (
        <button type="button" class="big" disabled={loadingMore.value} onClick={() => void loadMore()}>
          {loadingMore.value ? "Loading…" : "Load more"}
        </button>
      )}
    </Screen>
  );
}

function IntegrityCheck() {
  const result = useSignal<Integrity | null>(null);
  const busy = useSignal(false);
  const error = useSignal<string | null>(null);
  async function verify() {
    busy.value = true;
    error.value = null;
    try {
      result.value = (await request(AuditIntegrityDocument)).auditIntegrity;
    } catch (e) {
      error.value = describeError(e);
    } finally {
      busy.value = false;
    }
  }
  const r = result.value;
  return (
    <section class="card" aria-labelledby="integrity-title">
      <h2 id="integrity-title">Chain integrity</h2>
      <p class="meta">Each event carries the hash of the one before it: an edited, deleted or reordered event breaks the chain there.</p>
      <button type="button" class="primary" disabled={busy.value} onClick={() => void verify()}>
        {busy.value ? "Verifying…" : "Verify chain"}
      </button>
      <div role="status" aria-live="polite" data-testid="integrity" data-ok={r ? String(r.ok) : undefined} data-checked={r?.eventsChecked}>
        {r?.ok && (
          <p class="notice ok">
            ✓ OK — chain intact: {r.eventsChecked} events verified ({formatDateTime(r.checkedAt)}).
          </p>
        )}
        {r && !r.ok && (
          <p class="notice danger" data-broken-seq={r.firstBrokenSeq ?? undefined}>
            ✗ BROKEN at event #{r.firstBrokenSeq}: {r.reason}. The {r.eventsChecked} events before it are intact ({formatDateTime(r.checkedAt)}).
          </p>
        )}
      </div>
      {error.value && (
        <p class="error" role="alert">
          {error.value}
        </p>
      )}
    </section>
  );
}

type Json = unknown;
const show = (value: Json): string => (value === undefined ? "—" : value === null ? "null" : typeof value === "string" ? value : JSON.stringify(value));

/** Fields whose value differs between before and after (all of them on create or delete). */
function changes(before: Json, after: Json): { field: string; before: Json; after: Json }[] {
  const asObject = (v: Json): Record<string, Json> | null => (v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, Json>) : null);
  const b = asObject(before);
  const a = asObject(after);
  if (!b && !a) return [];
  const keys = [...new Set([...Object.keys(b ?? {}), ...Object.keys(a ?? {})])].sort();
  return keys
    .map((field) => ({ field, before: b ? b[field] : undefined, after: a ? a[field] : undefined }))
    .filter((c) => !b || !a || JSON.stringify(c.before) !== JSON.stringify(c.after));
}

function AuditItem({ event: e }: { event: AuditEvent }) {
  const diff = changes(e.before, e.after);
  const kind = e.before == null && e.after != null ? "Created" : e.before != null && e.after == null ? "Removed" : "Changed";
  return (
    <li data-seq={e.seq} data-action={e.action}>
      <details>
        <summary>
          <span>
            <strong>{auditAction(e.action)}</strong> · {auditEntity(e.entityType, e.entityId, e.after ?? e.before)}
            <br />
            <span class="meta">
              #{e.seq} · {formatDateTime(e.occurredAt)} · {e.actorName}
            </span>
          </span>
        </summary>
        <Facts
          items={[
            { key: "seq", label: "Event", value: `#${e.seq}` },
            { key: "when", label: "When", value: formatDateTime(e.occurredAt) },
            { key: "who", label: "Who", value: `${e.actorName} (${e.role.toLowerCase().replace(/_/g, " ")})` },
            { key: "entity", label: "Entity", value: `${e.entityType} ${e.entityId}` },
            { key: "reason", label: "Reason", value: e.reason ?? "—" },
            { key: "request", label: "Request", value: e.requestId ?? "—" },
            { key: "hash", label: "Hash", value: <code title={e.hash}>{e.hash.slice(0, 16)}…</code> },
          ]}
        />
        {diff.length > 0 ? (
          <table class="changes" data-testid="changes">
            <caption class="meta" style={{ textAlign: "left" }}>
              {kind}: {diff.length} field{diff.length === 1 ? "" : "s"}
            </caption>
            <thead>
              <tr>
                <th scope="col">Field</th>
                <th scope="col">Before</th>
                <th scope="col">After</th>
              </tr>
            </thead>
            <tbody>
              {diff.map((c) => (
                <tr key={c.field} data-field={c.field}>
                  <th scope="row">{c.field}</th>
                  <td>{show(c.before)}</td>
                  <td>{show(c.after)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        ) : (
          <p class="meta">No before/after recorded.</p>
        )}
        {(e.before != null || e.after != null) && (
          <details>
            <summary>Full before and after</summary>
            <pre class="json">{JSON.stringify({ before: e.before, after: e.after }, null, 2)}</pre>
          </details>
        )}
      </details>
    </li>
  );
}
