// Dashboard screen.
import { DashboardDocument } from "../gql/graphql";
import { request } from "../lib/graphql";
import { ExpiryTag, Screen, Status, useLoad } from "../ui";

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
