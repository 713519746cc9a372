// Supervision screen.
import { SupervisionReportDocument } from "../gql/graphql";
import { allPages } from "../lib/graphql";
import { Screen, Status, useLoad } from "../ui";

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
