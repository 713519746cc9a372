// Users (ADMIN): find people, create an account, change roles, organisation and locations in
// scope, reset a password, deactivate or reactivate. The server checks every rule; its typed
// field errors are shown next to the field they name.
import { useSignal } from "@preact/signals";
import { useEffect } from "preact/hooks";
import {
  CreateUserDocument,
  UpdateUserDocument,
  UserLocationsDocument,
  UserOrganisationsDocument,
  UsersDocument,
  type AdminUserFragment,
  type MutationErrorFieldsFragment,
  type Role,
  type UpdateUserInput,
  type UserLocationsQuery,
  type UserOrganisationsQuery,
} from "../gql/graphql";
import { allPages, describeError, request } from "../lib/graphql";
import {
  CheckboxGroup,
  FieldError,
  GeneralErrors,
  NO_ERRORS,
  TextField,
  fieldProps,
  generalErrors,
  splitErrors,
  type FieldErrors,
} from "../components/form";
import { Screen, Status, useLoad } from "../ui";

type Organisation = UserOrganisationsQuery["organisations"]["edges"][number]["node"];
type Place = UserLocationsQuery["locations"]["edges"][number]["node"];
interface Refs {
  organisations: Organisation[];
  locations: Place[];
}

const ROLE_LABEL: Record<Role, string> = {
  ADMIN: "Administrator",
  PHARMACIST: "Pharmacist",
  WAREHOUSE_MANAGER: "Warehouse manager",
  NURSE: "Nurse",
  SUPPLIER: "Supplier",
  AUDITOR: "Auditor",
  REGULATOR: "Regulator",
};
const ROLES = Object.keys(ROLE_LABEL) as Role[];
const FORM_FIELDS = ["username", "fullName", "password", "roles", "organisation", "locations"] as const;

type StatusFilter = "ACTIVE" | "INACTIVE" | "ALL";

export function UsersScreen() {
  const loaded = useLoad("users", () => allPages(UsersDocument, {}, (d) => d.users, 2000));
  const refs = useLoad<Refs>("users:refs", async () => {
    const [orgs, locations] = await Promise.all([
      request(UserOrganisationsDocument),
      allPages(UserLocationsDocument, {}, (d) => d.locations, 2000),
    ]);
    return { organisations: orgs.organisations.edges.map((e) => e.node), locations };
  });
  // Users created or changed here, on top of the loaded list until the next load.
  const changed = useSignal<Map<string, AdminUserFragment>>(new Map());
  const creating = useSignal(false);
  const search = useSignal("");
  const role = useSignal<Role | "">("");
  const status = useSignal<StatusFilter>("ACTIVE");

  useEffect(() => {
    changed.value = new Map();
  }, [loaded.data]);

  const remember = (user: AdminUserFragment) => {
    const next = new Map(changed.value);
    next.set(user.id, user);
    changed.value = next;
  };

  const all = new Map<string, AdminUserFragment>();
  for (const u of loaded.data ?? []) all.set(u.id, u);
  for (const [id, u] of changed.value) all.set(id, u);
  const term = search.value.trim().toLowerCase();
  const users = [...all.values()]
    .filter((u) => !term || u.username.includes(term) || u.fullName.toLowerCase().includes(term))
    .filter((u) => !role.value || u.roles.includes(role.value))
    .filter((u) => status.value === "ALL" || u.active === (status.value === "ACTIVE"))
    .sort((a, b) => a.username.localeCompare(b.username));

  return (
    <Screen
      title="Users"
      actions={
        !creating.value && (
          <button type="button" class="primary" style={{ flex: "0 0 auto" }} onClick={() => (creating.value = true)}>
            New user
          </button>
        )
      }
    >
      {creating.value && refs.data && (
        <section class="card panel" aria-labelledby="new-user-title">
          <h2 id="new-user-title">New user</h2>
          <UserForm
            prefix="new-user"
            refs={refs.data}
            onSaved={(user) => {
              remember(user);
              creating.value = false;
              search.value = user.username;
              status.value = "ALL";
            }}
            onCancel={() => (creating.value = false)}
          />
        </section>
      )}
      {creating.value && !refs.data && <Status loaded={refs} />}
      <div class="row">
        <label for="user-search">
          Search <span class="hint">name or username</span>
          <input id="user-search" type="search" value={search.value} onInput={(e) => (search.value = (e.target as HTMLInputElement).value)} />
        </label>
        <label for="user-role">
          Role
          <select id="user-role" value={role.value} onChange={(e) => (role.value = (e.target as HTMLSelectElement).value as Role | "")}>
            <option value="">All roles</option>
            {ROLES.map((r) => (
              <option key={r} value={r}>
                {ROLE_LABEL[r]}
              </option>
            ))}
          </select>
        </label>
        <label for="user-status">
          Status
          <select id="user-status" value={status.value} onChange={(e) => (status.value = (e.target as HTMLSelectElement).value as StatusFilter)}>
            <option value="ACTIVE">Active</option>
            <option value="INACTIVE">Deactivated</option>
            <option value="ALL">All</option>
          </select>
        </label>
      </div>
      <Status loaded={loaded} empty={!!loaded.data && !users.length} />
      {loaded.data && (
        <p class="meta" aria-live="polite">
          {users.length} of {all.size} users
        </p>
      )}
      <ul class="list" data-testid="user-list">
        {users.map((u) => (
          <UserItem key={u.id} user={u} refs={refs.data} onChange={remember} />
        ))}
      </ul>
    </Screen>
  );
}

function UserSummary({ user }: { user: AdminUserFragment }) {
  return (
    <>
      <p>
        <strong>{user.fullName}</strong> <span class="meta">{user.username}</span>{" "}
        {!user.active && <span class="tag refused">Deactivated</span>}
      </p>
      <p class="tags">
        {user.roles.map((r) => (
          <span key={r} class="tag neutral">
            {ROLE_LABEL[r]}
          </span>
        ))}
      </p>
      <p class="meta">
        {user.organisation?.name ?? "No organisation (network-wide)"} ·{" "}
        {user.locations.length ? `Locations: ${user.locations.map((l) => l.code).join(", ")}` : "All locations of the organisation"}
      </p>
    </>
  );
}

type Panel = "none" | "edit" | "password" | "active";

function UserItem({ user, refs, onChange }: { user: AdminUserFragment; refs: Refs | undefined; onChange: (u: AdminUserFragment) => void }) {
  const panel = useSignal<Panel>("none");
  const notice = useSignal<string | null>(null);
  const prefix = `user-${user.username}`;
  const close = (message: string | null) => {
    panel.value = "none";
    notice.value = message;
  };
  return (
    <li data-user={user.username} data-active={String(user.active)}>
      <UserSummary user={user} />
      {panel.value === "none" && (
        <div class="row">
          <button type="button" disabled={!refs} onClick={() => ((panel.value = "edit"), (notice.value = null))} aria-label={`Edit ${user.username}`}>
            Edit
          </button>
          <button type="button" onClick={() => ((panel.value = "password"), (notice.value = null))} aria-label={`Reset password of ${user.username}`}>
            Reset password
          </button>
          <button
            type="button"
            onClick={() => ((panel.value = "active"), (notice.value = null))}
            aria-label={`${user.active ? "Deactivate" : "Reactivate"} ${user.username}`}
          >
            {user.active ? "Deactivate" : "Reactivate"}
          </button>
        </div>
      )}
      {panel.value === "edit" && refs && (
        <div class="card panel">
          <UserForm
            prefix={prefix}
            refs={refs}
            user={user}
            onSaved={(saved) => {
              onChange(saved);
              close("Saved.");
            }}
            onCancel={() => close(null)}
          />
        </div>
      )}
      {panel.value === "password" && (
        <PasswordForm
          prefix={prefix}
          user={user}
          onDone={(saved) => {
            onChange(saved);
            close("Password changed; their sessions on other devices were signed out.");
          }}
          onCancel={() => close(null)}
        />
      )}
      {panel.value === "active" && (
        <ActiveConfirm
          user={user}
          onDone={(saved) => {
            onChange(saved);
            close(saved.active ? "Reactivated: they can sign in again." : "Deactivated: they can no longer sign in.");
          }}
          onCancel={() => close(null)}
        />
      )}
      {notice.value && (
        <p class="notice ok" role="status">
          {notice.value}
        </p>
      )}
    </li>
  );
}

/** Send one updateUser; typed errors come back as data, anything else as a general error. */
async function update(input: UpdateUserInput) {
  return (await request(UpdateUserDocument, { input })).updateUser;
}

function UserForm({
  prefix,
  refs,
  user,
  onSaved,
  onCancel,
}: {
  prefix: string;
  refs: Refs;
  user?: AdminUserFragment;
  onSaved: (user: AdminUserFragment) => void;
  onCancel: () => void;
}) {
  const username = useSignal("");
  const fullName = useSignal(user?.fullName ?? "");
  const password = useSignal("");
  const roles = useSignal<Role[]>(user?.roles ?? []);
  const organisation = useSignal(user?.organisation?.id ?? "");
  const locations = useSignal<string[]>(user?.locations.map((l) => l.id) ?? []);
  const errors = useSignal<FieldErrors>(NO_ERRORS);
  const busy = useSignal(false);

  const places = refs.locations.filter((l) => (organisation.value ? l.organisation.id === organisation.value : true) && (l.active || locations.value.includes(l.id)));

  async function submit(event: Event) {
    event.preventDefault();
    busy.value = true;
    errors.value = NO_ERRORS;
    try {
      let payload: { user?: AdminUserFragment | null; errors: MutationErrorFieldsFragment[] };
      if (user) {
        payload = await update({
          id: user.id,
          fullName: fullName.value,
          roles: roles.value,
          organisation: organisation.value || null,
          locations: locations.value,
        });
      } else {
        payload = (
          await request(CreateUserDocument, {
            input: {
              username: username.value,
              fullName: fullName.value,
              password: password.value,
              roles: roles.value,
              organisation: organisation.value || null,
              locations: locations.value,
            },
          })
        ).createUser;
      }
      if (payload.errors.length) errors.value = splitErrors(payload.errors, FORM_FIELDS);
      else if (payload.user) onSaved(payload.user);
    } catch (e) {
      errors.value = generalErrors(describeError(e));
    } finally {
      busy.value = false;
    }
  }

  const e = errors.value.byField;
  const orgId = `${prefix}-organisation`;
  return (
    <form onSubmit={submit} noValidate data-testid={user ? "edit-user-form" : "new-user-form"}>
      {!user && (
        <TextField
          id={`${prefix}-username`}
          label="Username"
          hint="used to sign in"
          value={username.value}
          onValue={(v) => (username.value = v)}
          error={e.username}
          autoComplete="off"
          autoCapitalize="none"
          spellcheck={false}
          required
        />
      )}
      <TextField id={`${prefix}-fullName`} label="Full name" value={fullName.value} onValue={(v) => (fullName.value = v)} error={e.fullName} autoComplete="off" required />
      {!user && (
        <TextField
          id={`${prefix}-password`}
          label="Initial password"
          hint="at least 8 characters; give it to them in person"
          type="password"
          value={password.value}
          onValue={(v) => (password.value = v)}
          error={e.password}
          autoComplete="new-password"
          required
        />
      )}
      <CheckboxGroup
        id={`${prefix}-roles`}
        legend="Roles"
        options={ROLES.map((r) => ({ value: r, label: ROLE_LABEL[r] }))}
        selected={roles.value}
        onChange={(v) => (roles.value = v)}
        error={e.roles}
      />
      <label for={orgId}>
        Organisation
        <select
          id={orgId}
          value={organisation.value}
          onChange={(ev) => {
            organisation.value = (ev.target as HTMLSelectElement).value;
            // Locations must belong to the user's organisation: drop the others.
            const inOrg = new Set(refs.locations.filter((l) => l.organisation.id === organisation.value).map((l) => l.id));
            locations.value = locations.value.filter((id) => !organisation.value || inOrg.has(id));
          }}
          {...fieldProps(orgId, e.organisation)}
        >
          {/* The server cannot clear an organisation once set, so "none" is offered only before. */}
          {!user?.organisation && <option value="">None (network-wide)</option>}
          {refs.organisations.map((o) => (
            <option key={o.id} value={o.id}>
              {o.name}
            </option>
          ))}
        </select>
        <FieldError id={orgId} message={e.organisation} />
      </label>
      <CheckboxGroup
        id={`${prefix}-locations`}
        legend="Locations in scope"
        hint="none ticked: every location of the organisation"
        options={places.map((l) => ({ value: l.id, label: `${l.code} — ${l.name}` }))}
        selected={locations.value}
        onChange={(v) => (locations.value = v)}
        error={e.locations}
      />
      <GeneralErrors errors={errors.value.general} />
      {Object.keys(e).length > 0 && (
        <p class="error" role="alert">
          Please correct the fields marked above.
        </p>
      )}
      <div class="row">
        <button type="submit" class="primary" disabled={busy.value}>
          {user ? "Save changes" : "Create user"}
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function PasswordForm({
  prefix,
  user,
  onDone,
  onCancel,
}: {
  prefix: string;
  user: AdminUserFragment;
  onDone: (user: AdminUserFragment) => void;
  onCancel: () => void;
}) {
  const password = useSignal("");
  const errors = useSignal<FieldErrors>(NO_ERRORS);
  const busy = useSignal(false);
  async function submit(event: Event) {
    event.preventDefault();
    busy.value = true;
    errors.value = NO_ERRORS;
    try {
      const payload = await update({ id: user.id, password: password.value });
      if (payload.errors.length) errors.value = splitErrors(payload.errors, ["password"]);
      else if (payload.user) onDone(payload.user);
    } catch (e) {
      errors.value = generalErrors(describeError(e));
    } finally {
      busy.value = false;
    }
  }
  return (
    <form class="card panel" onSubmit={submit} noValidate>
      <TextField
        id={`${prefix}-new-password`}
        label="New password"
        hint={`for ${user.username}; at least 8 characters`}
        type="password"
        autoComplete="new-password"
        value={password.value}
        onValue={(v) => (password.value = v)}
        error={errors.value.byField.password}
      />
      <GeneralErrors errors={errors.value.general} />
      <div class="row">
        <button type="submit" class="primary" disabled={busy.value}>
          Set password
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function ActiveConfirm({ user, onDone, onCancel }: { user: AdminUserFragment; onDone: (user: AdminUserFragment) => void; onCancel: () => void }) {
  const busy = useSignal(false);
  const error = useSignal<string | null>(null);
  const deactivate = user.active;
  async function confirm() {
    busy.value = true;
    error.value = null;
    try {
      const payload = await update({ id: user.id, active: !deactivate });
      if (payload.errors.length) error.value = payload.errors.map((e) => e.message).join("; ");
      else if (payload.user) onDone(payload.user);
    } catch (e) {
      error.value = describeError(e);
    } finally {
      busy.value = false;
    }
  }
  const titleId = `confirm-${user.username}`;
  return (
    <div class={`card ${deactivate ? "warn" : "panel"}`} role="group" aria-labelledby={titleId}>
      <p id={titleId}>
        <strong>
          {deactivate
            ? `Deactivate ${user.fullName}? They are signed out and can no longer sign in; their history stays.`
            : `Reactivate ${user.fullName}? They can sign in again with their password.`}
        </strong>
      </p>
      {error.value && (
        <p class="error" role="alert">
          {error.value}
        </p>
      )}
      <div class="row">
        <button type="button" class={deactivate ? "danger" : "primary"} disabled={busy.value} onClick={() => void confirm()}>
          {deactivate ? "Yes, deactivate" : "Yes, reactivate"}
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </div>
  );
}
