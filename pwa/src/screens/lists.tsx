// The simple list screens over the existing queries: transfers, shipments, counts, suppliers,
// supervision, audit, users, and a dashboard of open alerts and expiring stock.
import {
  AuditTrailDocument,
  DashboardDocument,
  ShipmentsDocument,
  StockCountsDocument,
  SupervisionReportDocument,
  SuppliersDocument,
  TransfersDocument,
  UsersDocument,
} from "../gql/graphql";
import { allPages, request } from "../lib/graphql";
import { ExpiryTag, Screen, Status, formatDateTime, percent, useLoad } from "../ui";

export function TransfersScreen() {
  const loaded = useLoad("transfers", () => allPages(TransfersDocument, {}, (d) => d.transfers, 100));
  const items = loaded.data ?? [];
  return (
    <Screen title="Transfers">
      <Status loaded={loaded} empty={!!loaded.data && !items.length} />
      <ul class="list">
        {items.map((t) => (
          <li key={t.id}>
            <p>
              <strong>{t.number}</strong> <span class="tag neutral">{t.status.toLowerCase()}</span>
            </p>
            <p>
              {t.source.code} → {t.destination.code}
            </p>
            <p class="meta">
              {t.lines.map((l) => `${l.requestedQuantity} × ${l.product.name} ${l.product.strength}`).join(", ")}
            </p>
            <p class="meta">
              Requested {formatDateTime(t.requestedAt)}
              {t.neededBy && ` · needed by ${t.neededBy}`}
            </p>
          </li>
        ))}
      </ul>
    </Screen>
  );
}

export function ShipmentsScreen() {
  const loaded = useLoad("shipments", () => allPages(ShipmentsDocument, {}, (d) => d.shipments, 100));
  const items = loaded.data ?? [];
  return (
    <Screen title="Shipments">
      <Status loaded={loaded} empty={!!loaded.data && !items.length} />
      <ul class="list">
        {items.map((s) => {
          const ordered = s.lines.reduce((n, l) => n + l.quantity, 0);
          const received = s.lines.reduce((n, l) => n + l.receivedQuantity, 0);
          return (
            <li key={s.id}>
              <p>
                <strong>{s.number}</strong> <span class="tag neutral">{s.status.toLowerCase().replace("_", " ")}</span>
              </p>
              <p>
                {s.sender.name} → {s.destination.code}
              </p>
              <p class="meta">
                {received} of {ordered} packs received · expected {formatDateTime(s.expectedAt)}
                {s.carrier && ` · ${s.carrier}`}
              </p>
            </li>
          );
        })}
      </ul>
    </Screen>
  );
}

export function CountsScreen() {
  const loaded = useLoad("counts", () => allPages(StockCountsDocument, {}, (d) => d.stockCounts, 100));
  const items = loaded.data ?? [];
  return (
    <Screen title="Counts">
      <Status loaded={loaded} empty={!!loaded.data && !items.length} />
      <ul class="list">
        {items.map((c) => (
          <li key={c.id}>
            <p>
              <strong>{c.location.code}</strong> <span class="tag neutral">{c.status.toLowerCase()}</span>
            </p>
            <p class="meta">
              Started {formatDateTime(c.startedAt)} by {c.startedBy ?? "—"} · {c.lines.length} lines counted · variance{" "}
              {c.lines.reduce((n, l) => n + l.variance, 0)}
            </p>
            {c.reason && <p class="meta">{c.reason}</p>}
          </li>
        ))}
      </ul>
    </Screen>
  );
}

export function SuppliersScreen() {
  const loaded = useLoad("suppliers", () => allPages(SuppliersDocument, {}, (d) => d.suppliers, 100));
  const items = loaded.data ?? [];
  return (
    <Screen title="Suppliers">
      <Status loaded={loaded} empty={!!loaded.data && !items.length} />
      <ul class="list">
        {items.map((s) => (
          <li key={s.id}>
            <p>
              <strong>{s.name}</strong> <span class="tag neutral">{s.kind.toLowerCase()}</span>
            </p>
            <p class="meta">
              On time {percent(s.performance.onTimeDeliveryRate)} · fill {percent(s.performance.fillRate)} · lead time{" "}
              {s.performance.averageLeadTimeDays?.toFixed(1) ?? "—"} d · {s.performance.shipmentsReceived} shipments
            </p>
          </li>
        ))}
      </ul>
    </Screen>
  );
}

export function SupervisionScreen() {
  const loaded = useLoad("supervision", () => allPages(SupervisionReportDocument, {}, (d) => d.supervisionReport, 200));
  const items = loaded.data ?? [];
  return (
    <Screen title="Supervision">
      <p class="meta">Batches whose gamma is not normal.</p>
      <Status loaded={loaded} empty={!!loaded.data && !items.length} />
      <ul class="list">
        {items.map((b) => (
          <li key={`${b.approvalNumber}/${b.batchNumber}`}>
            <p>
              <strong>
                {b.product ? `${b.product.name} ${b.product.strength}` : b.approvalNumber} · batch {b.batchNumber}
              </strong>
            </p>
            <p>
              <span class={`tag ${b.status === "NORMAL" ? "ok" : b.status === "IN_TRANSIT" ? "near" : "refused"}`}>
                {b.status.replace("_", " ").toLowerCase()}
              </span>{" "}
              gamma {b.gamma}
            </p>
          </li>
        ))}
      </ul>
    </Screen>
  );
}

export function AuditScreen() {
  const loaded = useLoad("audit", async () => (await request(AuditTrailDocument, { first: 100 })).auditTrail.edges.map((e) => e.node));
  const items = loaded.data ?? [];
  return (
    <Screen title="Audit">
      <Status loaded={loaded} empty={!!loaded.data && !items.length} />
      <ul class="list">
        {items.map((e) => (
          <li key={e.seq}>
            <p>
              <strong>{e.action}</strong> {e.entityType} {e.entityId}
            </p>
            <p class="meta">
              #{e.seq} · {formatDateTime(e.occurredAt)} · {e.actorName} ({e.role.toLowerCase()})
              {e.reason && ` · ${e.reason}`}
            </p>
          </li>
        ))}
      </ul>
    </Screen>
  );
}

export function UsersScreen() {
  const loaded = useLoad("users", () => allPages(UsersDocument, {}, (d) => d.users, 500));
  const items = loaded.data ?? [];
  return (
    <Screen title="Users">
      <Status loaded={loaded} empty={!!loaded.data && !items.length} />
      <ul class="list">
        {items.map((u) => (
          <li key={u.id}>
            <p>
              <strong>{u.fullName}</strong> ({u.username}) {!u.active && <span class="tag refused">inactive</span>}
            </p>
            <p class="meta">
              {u.roles.map((r) => r.toLowerCase().replace("_", " ")).join(", ")} · {u.organisation?.name ?? "—"}
              {u.locations.length > 0 && ` · ${u.locations.map((l) => l.code).join(", ")}`}
            </p>
          </li>
        ))}
      </ul>
    </Screen>
  );
}

export function DashboardScreen() {
  const horizon = new Date(Date.now() + 90 * 86_400_000).toISOString().slice(0, 10);
  const loaded = useLoad("dashboard", () => request(DashboardDocument, { expiringBefore: horizon }));
  const data = loaded.data;
  const byKind = new Map<string, number>();
  for (const { node } of data?.openAlerts.edges ?? []) byKind.set(node.kind, (byKind.get(node.kind) ?? 0) + 1);
  const expiring = data?.expiring.edges.map((e) => e.node) ?? [];
  return (
    <Screen title="Dashboard">
      <Status loaded={loaded} />
      {data && (
        <>
          <section class="card" aria-labelledby="dash-alerts">
            <h2 id="dash-alerts">
              Open alerts: {data.openAlerts.edges.length}
              {data.openAlerts.pageInfo.hasNextPage && "+"}
            </h2>
            <table>
              <caption class="sr-only">Open alerts by kind</caption>
              <thead>
                <tr>
                  <th scope="col">Kind</th>
                  <th scope="col">Open</th>
                </tr>
              </thead>
              <tbody>
                {[...byKind].map(([kind, n]) => (
                  <tr key={kind}>
                    <td>{kind.replace(/_/g, " ").toLowerCase()}</td>
                    <td>{n}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </section>
          <section class="card" aria-labelledby="dash-expiring">
            <h2 id="dash-expiring">Expiring within 90 days: {expiring.reduce((n, r) => n + r.quantity, 0)} packs</h2>
            <ul class="list">
              {expiring.slice(0, 30).map((r) => (
                <li key={r.id}>
                  {r.product.name} {r.product.strength} · {r.location.code} · {r.quantity} packs · batch {r.lot.batchNumber}{" "}
                  <ExpiryTag date={r.lot.expiryDate} expired={r.lot.expired} />
                </li>
              ))}
            </ul>
          </section>
        </>
      )}
    </Screen>
  );
}
