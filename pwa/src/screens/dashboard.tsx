// Dashboard screen: stock value, expiry exposure, consumption against forecast, supplier
// performance and open alerts, for all of the user's locations or one of them.
// The charts live in ../charts (a lazily loaded chunk); until it arrives, each section says so.
import { formatNumber, label, t } from "../lib/messages";
import { signal, useSignal } from "@preact/signals";
import {
  ConsumptionForecastDocument,
  DashboardDocument,
  DashboardFiguresDocument,
  StoredForecastDocument,
  SuppliersDocument,
  type ConsumptionForecastQuery,
  type DashboardFiguresQuery,
  type DashboardQuery,
  type StoredForecastQuery,
} from "../gql/graphql";
import { utcDate } from "../lib/dates";
import { allPages, request } from "../lib/graphql";
import { myLocations } from "../state";
import { ExpiryTag, Screen, Status, useLoad, type Loaded } from "../ui";

type Charts = typeof import("../charts/charts");
const charts = signal<Charts | null>(null);
const chartsError = signal<string | null>(null);
let chartsLoading: Promise<void> | null = null;

/** The chart module, imported the first time a dashboard renders. */
function useCharts(): Charts | null {
  if (!chartsLoading) {
    chartsLoading = import("../charts/charts").then(
      (module) => {
        charts.value = module;
      },
      () => {
        chartsLoading = null; // try again next render (e.g. back online)
        chartsError.value = "Charts could not be loaded; reopen the dashboard when online.";
      },
    );
  }
  return charts.value;
}

const BUCKET_LABELS: Record<string, string> = {
  EXPIRED: "Already expired",
  DAYS_0_30: "0–30 days",
  DAYS_31_60: "31–60 days",
  DAYS_61_90: "61–90 days",
};

const METHOD_TEXT: Record<string, string> = {
  AUTO_ETS: "exponential smoothing (AutoETS)",
  CROSTON_OPTIMIZED: "Croston's method, for intermittent use",
};
// The stored forecast's model, in words (ForecastModel in the schema).
const MODEL_TEXT: Record<string, string> = {
  ZERO: "zero (demand has stopped)",
  NAIVE: "naive (last period again)",
  SEASONAL_NAIVE: "seasonal naive (same period last season)",
  CROSTON_SBA: "Croston (SBA), for intermittent use",
  TSB: "TSB, for intermittent use",
  ADIDA: "ADIDA, for intermittent use",
  IMAPA: "IMAPA, for intermittent use",
  AUTO_ETS: "exponential smoothing (AutoETS)",
  AUTO_THETA: "Theta (AutoTheta)",
  MSTL: "seasonal decomposition (MSTL)",
  ENSEMBLE: "a mean of models",
  WEIGHTED_ENSEMBLE: "a weighted mix of models (weights from past accuracy)",
  HISTORIC_AVERAGE: "the average so far (too little history to compare models)",
};
const CLASS_TEXT: Record<string, string> = {
  SMOOTH: "regular",
  ERRATIC: "regular, varying amounts",
  INTERMITTENT: "intermittent",
  LUMPY: "intermittent, varying amounts",
  OBSOLETE: "stopped",
  INSUFFICIENT: "too new to classify",
  NO_DEMAND: "none",
};
/** Past weeks the stored forecast's chart shows (the stored history may hold three years). */
const SHOWN_HISTORY = 26;

const REASON_TEXT: Record<string, string> = {
  INSUFFICIENT_HISTORY: "Not enough history yet: a forecast needs at least 8 complete weeks of use.",
  NO_CONSUMPTION: "None used in these weeks, so there is nothing to forecast.",
};

export function DashboardScreen() {
  const module = useCharts();
  const location = useSignal<string>(""); // "" = every location in scope
  const chosenProduct = useSignal<string | null>(null);
  const where = location.value || null;

  const horizon = utcDate(90);
  const alerts = useLoad("dashboard", () => request(DashboardDocument, { expiringBefore: horizon }));
  const figures = useLoad(`dashboard-figures:${where ?? "all"}`, () => request(DashboardFiguresDocument, { location: where }));
  const top = figures.data?.topConsumption ?? [];
  const product = top.some((t) => t.product.id === chosenProduct.value) ? chosenProduct.value : (top[0]?.product.id ?? null);
  // One location: the stored forecast (backtested, calibrated); all locations: the summed
  // weekly trend, which has no stored forecast of its own.
  const forecast = useLoad(product && !where ? `dashboard-forecast:${product}:all` : null, () =>
    request(ConsumptionForecastDocument, { product: product!, location: where }),
  );
  const stored = useLoad(product && where ? `dashboard-stored-forecast:${product}:${where}` : null, () =>
    request(StoredForecastDocument, { product: product!, location: where! }),
  );
  const suppliers = useLoad("dashboard-suppliers", loadSuppliers);

  return (
    <Screen title="Dashboard">
      <label for="dash-location">
        Show
        <select id="dash-location" value={location.value} onChange={(e) => (location.value = (e.target as HTMLSelectElement).value)}>
          <option value="">All my locations</option>
          {myLocations.value.map((l) => (
            <option key={l.id} value={l.id}>
              {l.code} — {l.name}
            </option>
          ))}
        </select>
      </label>
      {chartsError.value && !module && (
        <p class="notice danger" role="alert">
          {chartsError.value}
        </p>
      )}
      <StockValueSection loaded={figures} charts={module} showLocations={!where} />
      <ExpirySection loaded={figures} charts={module} />
      <ForecastSection
        charts={module}
        top={top}
        product={product}
        onProduct={(id) => (chosenProduct.value = id)}
        loaded={forecast}
        stored={where ? stored : null}
        figuresLoaded={!!figures.data}
      />
      <SupplierSection loaded={suppliers} charts={module} />
      <AlertsSection loaded={alerts} />
    </Screen>
  );
}

function Waiting() {
  return <p aria-live="polite">Loading chart…</p>;
}

function StockValueSection({ loaded, charts: c, showLocations }: { loaded: Loaded<DashboardFiguresQuery>; charts: Charts | null; showLocations: boolean }) {
  const value = loaded.data?.stockValue;
  return (
    <section class="card" aria-labelledby="dash-value">
      <h2 id="dash-value">Stock value</h2>
      <Status loaded={loaded} />
      {value && !c && <Waiting />}
      {value && c && (
        <>
          <dl class="figures">
            <div>
              <dt>Value on hand</dt>
              <dd data-testid="stock-value-total" data-value={value.value}>
                {c.formatMoney(value.value)}
              </dd>
            </div>
            <div>
              <dt>Packs on hand</dt>
              <dd data-testid="stock-packs-total" data-value={value.packs}>
                {c.formatNumber(value.packs)}
              </dd>
            </div>
          </dl>
          {showLocations && (
            <>
              <h3>By location</h3>
              <c.BarTable
                caption="Stock value by location"
                testId="value-by-location"
                columns={[{ name: "Value", max: Math.max(0, ...value.byLocation.map((r) => Number(r.value))) }]}
                rows={value.byLocation.map((r) => ({
                  key: r.location.id,
                  label: r.location.code,
                  sublabel: `${c.formatNumber(r.packs)} packs`,
                  cells: [{ value: Number(r.value), text: c.formatMoney(r.value), raw: r.value }],
                }))}
              />
            </>
          )}
          <h3>By ATC group</h3>
          <c.BarTable
            caption="Stock value by ATC anatomical group"
            testId="value-by-atc"
            columns={[{ name: "Value", max: Math.max(0, ...value.byAtcGroup.map((r) => Number(r.value))), tone: "alt" }]}
            rows={value.byAtcGroup.map((r) => ({
              key: r.code ?? "none",
              label: r.code ? `${r.code} · ${r.name}` : r.name,
              cells: [{ value: Number(r.value), text: c.formatMoney(r.value), raw: r.value }],
            }))}
          />
        </>
      )}
    </section>
  );
}

function ExpirySection({ loaded, charts: c }: { loaded: Loaded<DashboardFiguresQuery>; charts: Charts | null }) {
  const exposure = loaded.data?.expiryExposure;
  const packs = exposure?.buckets.reduce((n, b) => n + b.packs, 0) ?? 0;
  return (
    <section class="card" aria-labelledby="dash-expiry">
      <h2 id="dash-expiry">Expiring soon</h2>
      {exposure && !c && <Waiting />}
      {exposure && c && (
        <>
          <p class="meta">
            <span data-testid="expiry-packs-total" data-value={packs}>
              {c.formatNumber(packs)}
            </span>{" "}
            packs expired or expiring within 90 days of {exposure.today}.
          </p>
          <c.BarTable
            caption="Packs on the shelf by days until expiry"
            testId="expiry-buckets"
            columns={[
              { name: "Packs", max: Math.max(0, ...exposure.buckets.map((b) => b.packs)), tone: "warn" },
              { name: "Value", max: Math.max(0, ...exposure.buckets.map((b) => Number(b.value))), tone: "danger" },
            ]}
            rows={exposure.buckets.map((b) => ({
              key: b.bucket,
              label: BUCKET_LABELS[b.bucket] ?? b.bucket,
              cells: [
                { value: b.packs, text: c.formatNumber(b.packs), testId: `expiry-packs-${b.bucket}` },
                { value: Number(b.value), text: c.formatMoney(b.value), raw: b.value, testId: `expiry-value-${b.bucket}` },
              ],
            }))}
          />
        </>
      )}
    </section>
  );
}

function ForecastSection({
  charts: c,
  top,
  product,
  onProduct,
  loaded,
  stored,
  figuresLoaded,
}: {
  charts: Charts | null;
  top: DashboardFiguresQuery["topConsumption"];
  product: string | null;
  onProduct: (id: string) => void;
  loaded: Loaded<ConsumptionForecastQuery>;
  stored: Loaded<StoredForecastQuery> | null;
  figuresLoaded: boolean;
}) {
  const result = stored ? null : loaded.data?.consumptionForecast;
  const name = result ? `${result.product.name} ${result.product.strength}` : "";
  return (
    <section class="card" aria-labelledby="dash-forecast">
      <h2 id="dash-forecast">Consumption and forecast</h2>
      {figuresLoaded && !top.length && <p>Nothing was used in the last 8 weeks here, so there is no trend to show.</p>}
      {top.length > 0 && (
        <label for="dash-product">
          Product <span class="hint">(most used in the last 8 weeks first)</span>
          <select id="dash-product" value={product ?? ""} onChange={(e) => onProduct((e.target as HTMLSelectElement).value)}>
            {top.map((t) => (
              <option key={t.product.id} value={t.product.id}>
                {t.product.name} {t.product.strength} — {t.quantity} used
              </option>
            ))}
          </select>
        </label>
      )}
      {product && <Status loaded={stored ?? loaded} />}
      {product && stored?.data && <StoredForecastView forecast={stored.data.forecast} charts={c} />}
      {result && !c && <Waiting />}
      {result && c && (
        <>
          {result.method ? (
            <p class="meta" data-testid="forecast-method" data-method={result.method}>
              Weekly packs used, and the next {result.forecast.length} weeks forecast by {METHOD_TEXT[result.method] ?? result.method}.
            </p>
          ) : (
            <p data-testid="forecast-reason" data-reason={result.reason}>
              {REASON_TEXT[result.reason ?? ""] ?? "No forecast."}
            </p>
          )}
          <c.TrendChart
            caption={`${name}: packs used per week${result.method ? " and forecast" : ""}`}
            history={result.history}
            forecast={result.forecast}
            intervalLevel={result.intervalLevel}
          />
        </>
      )}
    </section>
  );
}

function StoredForecastView({ forecast: f, charts: c }: { forecast: StoredForecastQuery["forecast"]; charts: Charts | null }) {
  if (!f) {
    return (
      <p data-testid="forecast-pending">
        No forecast for this product here yet: the server computes forecasts in the background from each location's use.
      </p>
    );
  }
  const name = `${f.product.name} ${f.product.strength}`;
  const history = f.history.slice(-SHOWN_HISTORY).map((p) => ({ weekStart: p.periodStart, quantity: p.quantity }));
  const points = f.points.map((p) => ({ weekStart: p.periodStart, quantity: p.quantity, low: p.low80, high: p.high80 }));
  const score =
    f.mase != null && f.baselineMase != null
      ? `Backtest error ${f.mase.toFixed(2)} against ${f.baselineMase.toFixed(2)} for ${MODEL_TEXT[f.baselineModel ?? ""] ?? "the baseline"} (lower is better).`
      : "Not enough history to backtest models yet.";
  return (
    <>
      <p class="meta" data-testid="forecast-model" data-model={f.model} data-class={f.demandClass}>
        Weekly packs used here, and the next {f.points.length} weeks forecast by {MODEL_TEXT[f.model] ?? f.model}; use is{" "}
        {CLASS_TEXT[f.demandClass] ?? f.demandClass}.
      </p>
      <p class="meta" data-testid="forecast-score">
        {score} Computed {new Date(f.computedAt).toLocaleString()} from {f.historyLength} weeks.
      </p>
      {!c && <Waiting />}
      {c && <c.TrendChart caption={`${name}: packs used per week and forecast`} history={history} forecast={points} intervalLevel={80} />}
    </>
  );
}

type SupplierList = Awaited<ReturnType<typeof loadSuppliers>>;
const loadSuppliers = () => allPages(SuppliersDocument, {}, (d) => d.suppliers, 100);

function SupplierSection({ loaded, charts: c }: { loaded: Loaded<SupplierList>; charts: Charts | null }) {
  const list = (loaded.data ?? []).filter((s) => s.performance.shipmentsReceived > 0 || s.performance.fillRate != null);
  const pct = (v: number | null) => (v == null ? "—" : `${Math.round(v * 100)} %`);
  return (
    <section class="card" aria-labelledby="dash-suppliers">
      <h2 id="dash-suppliers">Supplier performance</h2>
      <Status loaded={loaded} />
      {loaded.data && !c && <Waiting />}
      {loaded.data && c && !list.length && <p>No deliveries received yet.</p>}
      {c && list.length > 0 && (
        <c.BarTable
          caption="On-time delivery and fill rate by supplier"
          testId="supplier-performance"
          columns={[
            { name: "On time", max: 1 },
            { name: "Fill rate", max: 1, tone: "alt" },
          ]}
          rows={list.map((s) => ({
            key: s.id,
            label: s.name,
            sublabel: `${s.performance.shipmentsReceived} shipments`,
            cells: [
              { value: s.performance.onTimeDeliveryRate ?? null, text: pct(s.performance.onTimeDeliveryRate ?? null) },
              { value: s.performance.fillRate ?? null, text: pct(s.performance.fillRate ?? null) },
            ],
          }))}
        />
      )}
    </section>
  );
}

function AlertsSection({ loaded }: { loaded: Loaded<DashboardQuery> }) {
  const data = loaded.data;
  const byKind = new Map<string, number>();
  for (const { node } of data?.openAlerts.edges ?? []) byKind.set(node.kind, (byKind.get(node.kind) ?? 0) + 1);
  const expiring = data?.expiring.edges.map((e) => e.node) ?? [];
  return (
    <>
      <section class="card" aria-labelledby="dash-alerts">
        <h2 id="dash-alerts">
          <span data-testid="open-alerts-total">
            {data ? t("alerts.open", { count: data.openAlerts.totalCount }) : "Open alerts: …"}
          </span>
        </h2>
        {data?.openAlerts.pageInfo.hasNextPage && (
          <p class="meta">By kind, of the {formatNumber(data.openAlerts.edges.length)} most recent.</p>
        )}
        <Status loaded={loaded} />
        {byKind.size > 0 && (
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
                  <td>{label("alert", kind)}</td>
                  <td>{n}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      {expiring.length > 0 && (
        <section class="card" aria-labelledby="dash-expiring">
          <details>
            <summary id="dash-expiring">Lots expiring within 90 days ({expiring.length}{data?.expiring.pageInfo.hasNextPage && "+"})</summary>
            <ul class="list">
              {expiring.slice(0, 30).map((r) => (
                <li key={r.id}>
                  {r.product.name} {r.product.strength} · {r.location.code} · {r.quantity} packs · batch {r.lot.batchNumber}{" "}
                  <ExpiryTag date={r.lot.expiryDate} expired={r.lot.expired} />
                </li>
              ))}
            </ul>
          </details>
        </section>
      )}
    </>
  );
}
