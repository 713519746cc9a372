// Suppliers screen.
import { SuppliersDocument } from "../gql/graphql";
import { allPages } from "../lib/graphql";
import { Screen, Status, percent, useLoad } from "../ui";

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
