// The shell: header with connection and outbox state, the screen for the route, and tabs by role.
import { useEffect } from "preact/hooks";
import type { FunctionComponent } from "preact";
import { MeDocument } from "./gql/graphql";
import { AuthError, forgetSession, me, rememberMe, sessionExpired, signingOut } from "./lib/auth";
import { clearAll } from "./lib/db";
import { request } from "./lib/graphql";
import { closeLive, liveStatus, reconnects } from "./lib/live";
import { flush, loadOutbox, outbox, outboxBlocked, pendingCount } from "./lib/outbox";
import { updateReady, applyUpdate } from "./lib/sw-register";
import { reviewHref } from "./components/outbox";
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

const TABS = 3; // the first three screens a role has are tabs; the rest are under "More"

function screensForUser(): ScreenDef[] {
  return SCREENS.filter((s) => hasRole(...s.roles));
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
  const tabs = screens.slice(0, TABS);
  const more = screens.slice(TABS);
  const pending = pendingCount();
  const refusedEntries = outbox.value.filter((e) => e.status === "refused");
  const refused = refusedEntries.length;
  const Current = current?.component;
  const showMore = section === "more" || (!current && section !== "");
  const Fallback = tabs[0]?.component;

  return (
    <>
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
      {updateReady.value && (
        <div class="banner info" role="status">
          A new version is ready.
          <button type="button" onClick={applyUpdate}>
            Reload
          </button>
        </div>
      )}
      {refused > 0 && route.value !== "scan" && (
        <div class="banner danger" role="alert">
          {refused} queued action(s) were refused by the server. <a href={reviewHref(refusedEntries[0])}>Review</a>
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
      <nav class="tabs" aria-label="Screens">
        {tabs.map((s, i) => (
          <a
            key={s.id}
            href={`#/${s.id}`}
            aria-current={section === s.id || (i === 0 && section === "") ? "page" : undefined}
          >
            {s.title}
            {s.id === "scan" && pending + refused > 0 && <span class="count">{pending + refused}</span>}
          </a>
        ))}
        <a href="#/more" aria-current={showMore || more.some((s) => s.id === section) ? "page" : undefined}>
          More
        </a>
      </nav>
    </>
  );
}
