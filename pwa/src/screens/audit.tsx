// Audit screen.
import { AuditTrailDocument } from "../gql/graphql";
import { request } from "../lib/graphql";
import { Screen, Status, formatDateTime, useLoad } from "../ui";

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
