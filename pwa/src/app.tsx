// The shell: header with connection and outbox state, the screen for the route, and tabs by role.
import { useEffect } from "preact/hooks";
import type { FunctionComponent } from "preact";
import { MeDocument } from "./gql/graphql";
import { AuthError, forgetSession, me, rememberMe, sessionExpired, signingOut } from "./lib/auth";
import { clearAll } from "./lib/db";
import { request } from "./lib/graphql";
import { closeLive, liveStatus, reconnects } from "./lib/live";
import type { OutboxEntry } from "./lib/db";
import { errorText, t, todo } from "./lib/messages";
import { dismiss, flush, loadOutbox, outbox, outboxBlocked, pendingCount, scanInput } from "./lib/outbox";
import { updateReady, applyUpdate } from "./lib/sw-register";
import { ACTION_LABEL, reviewHref } from "./components/outbox";
import { AlertsScreen } from "./screens/alerts";
import { ScanScreen } from "./screens/scan";
import { SignIn } from "./screens/signin";
import { StockScreen } from "./screens/stock";
import { forgetLocation, hasRole, loadLocations, navigate, online, route, type Role } from "./state";
import { Screen } from "./ui";
import { lazyScreen } from "./lazy";

const AuditScreen = lazyScreen(() => import("./screens/audit"), (m) => m.AuditScreen);
const ControlledScreen = lazyScreen(() => import("./screens/controlled"), (m) => m.ControlledScreen);
const CountsScreen = lazyScreen(() => import("./screens/counts"), (m) => m.CountsScreen);
const DashboardScreen = lazyScreen(() => import("./screens/dashboard"), (m) => m.DashboardScreen);
const ReorderScreen = lazyScreen(() => import("./screens/reorder"), (m) => m.ReorderScreen);
const OrdersScreen = lazyScreen(() => import("./screens/orders"), (m) => m.OrdersScreen);
const ShipmentsScreen = lazyScreen(() => import("./screens/shipments"), (m) => m.ShipmentsScreen);
const SupervisionScreen = lazyScreen(() => import("./screens/supervision"), (m) => m.SupervisionScreen);
const SuppliersScreen = lazyScreen(() => import("./screens/suppliers"), (m) => m.SuppliersScreen);
const TransfersScreen = lazyScreen(() => import("./screens/transfers"), (m) => m.TransfersScreen);
const UsersScreen = lazyScreen(() => import("./screens/users"), (m) => m.UsersScreen);
const SpendScreen = lazyScreen(() => import("./screens/spend"), (m) => m.SpendScreen);

interface ScreenDef {
  id: string;
  title: string;
  roles: Role[];
  component: FunctionComponent;
}

const SCREENS: ScreenDef[] = [
  { id: "scan", title: "Scan", roles: ["NURSE", "PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN"], component: ScanScreen },
  { id: "stock", title: "Stock", roles: ["NURSE", "PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN", "AUDITOR"], component: StockScreen },
  { id: "alerts", title: "Alerts", roles: ["NURSE", "PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN", "AUDITOR", "REGULATOR"], component: AlertsScreen },
  { id: "dashboard", title: "Dashboard", roles: ["PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN", "AUDITOR"], component: DashboardScreen },
  { id: "reorder", title: "Reorder", roles: ["PHARMACIST", "WAREHOUSE_MANAGER"], component: ReorderScreen },
  { id: "orders", title: "Orders", roles: ["PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN", "SUPPLIER", "AUDITOR"], component: OrdersScreen },
  { id: "transfers", title: "Transfers", roles: ["NURSE", "PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN", "AUDITOR"], component: TransfersScreen },
  { id: "shipments", title: "Shipments", roles: ["PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN", "SUPPLIER", "AUDITOR"], component: ShipmentsScreen },
  { id: "counts", title: "Counts", roles: ["NURSE", "PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN", "AUDITOR"], component: CountsScreen },
  { id: "suppliers", title: "Suppliers", roles: ["PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN", "SUPPLIER", "AUDITOR"], component: SuppliersScreen },
  { id: "controlled", title: "Controlled register", roles: ["PHARMACIST", "ADMIN", "AUDITOR", "REGULATOR"], component: ControlledScreen },
  { id: "supervision", title: "Supervision", roles: ["ADMIN", "AUDITOR", "REGULATOR", "PHARMACIST"], component: SupervisionScreen },
  { id: "spend", title: "Spend", roles: ["PHARMACIST", "WAREHOUSE_MANAGER", "ADMIN", "AUDITOR"], component: SpendScreen },
  { id: "audit", title: "Audit", roles: ["ADMIN", "AUDITOR"], component: AuditScreen },
  { id: "users", title: "Users", roles: ["ADMIN"], component: UsersScreen },
];

/**
 * The tabs of each role, in order, with the label the tab shows there (a warehouse manager's
 * Shipments tab is "Receive": receiving is what they open it for). Everything else a role may
 * open is under "More". A user with several roles gets the tabs of the first role listed here.
 */
const TABS_BY_ROLE: [Role, [string, string?][]][] = [
  ["PHARMACIST", [["scan"], ["stock"], ["orders"], ["dashboard"]]],
  ["WAREHOUSE_MANAGER", [["stock"], ["shipments", "Receive"], ["transfers"], ["counts"]]],
  ["NURSE", [["scan"], ["stock"], ["alerts"]]],
  ["ADMIN", [["stock"], ["alerts"], ["users"], ["audit"]]],
  ["AUDITOR", [["audit"], ["stock"], ["supervision"], ["dashboard"]]],
  ["REGULATOR", [["supervision"], ["alerts"]]],
  ["SUPPLIER", [["shipments"], ["orders"], ["suppliers"]]],
];

function screensForUser(): ScreenDef[] {
  return SCREENS.filter((s) => hasRole(...s.roles));
}

interface Tab {
  screen: ScreenDef;
  label: string;
}

/** The signed-in user's tabs: their first role's list, of the screens they may open. */
function tabsForUser(screens: ScreenDef[]): Tab[] {
  const entry = TABS_BY_ROLE.find(([role]) => hasRole(role));
  if (!entry) return screens.slice(0, 3).map((screen) => ({ screen, label: screen.title }));
  return entry[1].flatMap(([id, label]) => {
    const screen = screens.find((s) => s.id === id);
    return screen ? [{ screen, label: label ?? screen.title }] : [];
  });
}

async function signOut(): Promise<void> {
  const pending = pendingCount();
  if (
    pending &&
    !confirm(`${pending} scan(s) have not reached the server yet. Signing out deletes them from this device. Sign out anyway?`)
  ) {
    return;
  }
  // Order matters: stop caching, clear the device, and only then show the sign-in screen.
  signingOut.value = true;
  try {
    await closeLive();
    await clearAll();
    forgetLocation();
    await forgetSession();
    await loadOutbox();
  } finally {
    signingOut.value = false;
  }
  navigate("");
}

function MoreScreen({ screens }: { screens: ScreenDef[] }) {
  const user = me.value!;
  return (
    <Screen title="More">
      <section class="card">
        <h2>{user.fullName}</h2>
        <p class="meta">
          {user.username} · {user.roles.map((r) => r.toLowerCase().replace("_", " ")).join(", ")}
          {user.organisation && ` · ${user.organisation.name}`}
        </p>
        <button type="button" class="big" disabled={signingOut.value} onClick={() => void signOut()}>
          {signingOut.value ? "Signing out…" : "Sign out"}
        </button>
      </section>
      {screens.length > 0 && (
        <nav aria-label="More screens">
          <ul class="list">
            {screens.map((s) => (
              <li key={s.id}>
                <a class="button link-button" href={`#/${s.id}`}>
                  {s.title}
                </a>
              </li>
            ))}
          </ul>
        </nav>
      )}
      <p class="meta">Apotheca PWA · works offline; scans wait on this device until they are sent.</p>
    </Screen>
  );
}

export function App() {
  const user = me.value;

  useEffect(() => {
    if (!user) return;
    void loadLocations();
    void loadOutbox().then(flush);
    // Refresh who we are (roles and scope may have changed) when online.
    request(MeDocument)
      .then(({ me: fresh }) => rememberMe(fresh))
      .catch((error) => {
        if (error instanceof AuthError) sessionExpired.value = true;
      });
  }, [user?.username]);

  // A reconnect means the network is back: send what waits.
  useEffect(() => {
    if (reconnects.value) void flush();
  }, [reconnects.value]);

  if (!user || sessionExpired.value) return <SignIn />;

  const screens = screensForUser();
  const section = route.value;
  const current = screens.find((s) => s.id === section);
  const tabs = tabsForUser(screens);
  const more = screens.filter((s) => !tabs.some((t) => t.screen.id === s.id));
  const pending = pendingCount();
  const refusedEntries = outbox.value.filter((e) => e.status === "refused");
  const refused = refusedEntries.length;
  const Current = current?.component;
  const showMore = section === "more" || (!current && section !== "");
  const Fallback = tabs[0]?.screen.component;

  return (
    <>
      <div class="chrome">
        <header class="topbar">
          <span class="brand">Apotheca</span>
          {!online.value ? (
            <span class="pill offline" role="status">
              Offline
            </span>
          ) : (
            liveStatus.value === "connecting" && <span class="pill">Reconnecting</span>
          )}
          {pending > 0 && (
            <span class="pill" data-testid="pending-count" role="status">
              {pending} pending
            </span>
          )}
          <span class="who">{user.fullName}</span>
        </header>
        <nav class="tabs" aria-label="Screens">
          {tabs.map(({ screen: s, label }, i) => (
            <a
              key={s.id}
              href={`#/${s.id}`}
              aria-current={section === s.id || (i === 0 && section === "") ? "page" : undefined}
            >
              {label}
              {s.id === "scan" && pending + refused > 0 && <span class="count">{pending + refused}</span>}
            </a>
          ))}
          <a href="#/more" aria-current={showMore || more.some((s) => s.id === section) ? "page" : undefined}>
            More
          </a>
        </nav>
        {refused > 0 && <RefusedBanner entries={refusedEntries} />}
      </div>
      {updateReady.value && (
        <div class="banner info" role="status">
          A new version is ready.
          <button type="button" onClick={applyUpdate}>
            Reload
          </button>
        </div>
      )}
      {outboxBlocked.value === "signed-out" && (
        <div class="banner warn" role="alert">
          Scans are waiting: sign in again to send them.
        </div>
      )}
      <main id="main">
        {Current ? <Current /> : showMore || !Fallback ? <MoreScreen screens={more} /> : <Fallback />}
      </main>
    </>
  );
}

/**
 * Refused queued actions, on every screen (Scan included): the first refusal in words, what to
 * do about it, and where to review it — kept in view with the header, so it is seen before the
 * next scan (the server's own words are in the outbox list it links to).
 */
function RefusedBanner({ entries }: { entries: OutboxEntry[] }) {
  const first = entries[0];
  const error = first.errors?.[0];
  const input = scanInput(first);
  const what = input
    ? `${ACTION_LABEL[input.action] ?? input.action} ${input.quantity ?? 1} × ${first.label.product ?? first.label.gtin ?? input.barcode}${first.label.batch ? ` (batch ${first.label.batch})` : ""}`
    : first.label.title ?? first.operation;
  return (
    <div class="banner danger" role="alert" data-testid="refused-banner">
      <p>
        {t("outbox.refused", { count: entries.length })} <strong>{what}</strong>
        {error && `: ${errorText(error)}`}
      </p>
      <p class="todo">
        {todo(error?.code)} <a href={reviewHref(first)}>{t("outbox.review")}</a>
        {" "}
        <button type="button" onClick={() => void dismiss(first.seq!)}>
          {t("outbox.dismiss")}
        </button>
      </p>
    </div>
  );
}
