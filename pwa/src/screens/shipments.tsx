// Shipments screen.
import { ShipmentsDocument } from "../gql/graphql";
import { allPages } from "../lib/graphql";
import { Screen, Status, formatDateTime, useLoad } from "../ui";

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
