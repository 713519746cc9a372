// Transfers screen.
import { TransfersDocument } from "../gql/graphql";
import { allPages } from "../lib/graphql";
import { Screen, Status, formatDateTime, useLoad } from "../ui";

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
