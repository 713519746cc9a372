// Users screen.
import { UsersDocument } from "../gql/graphql";
import { allPages } from "../lib/graphql";
import { Screen, Status, useLoad } from "../ui";

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
