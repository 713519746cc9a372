// Counts screen.
import { StockCountsDocument } from "../gql/graphql";
import { allPages } from "../lib/graphql";
import { Screen, Status, formatDateTime, useLoad } from "../ui";

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
