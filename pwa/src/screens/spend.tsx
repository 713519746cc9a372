// Spend: what each department (or ATC code, or supplier) consumed in a month, quarter or year,
// valued at moving average cost, against its budget, with the forecast to the period's end;
// pharmacists and admins set a department's budget here. Amounts are formatted with
// Intl.NumberFormat in the organisation's currency (the report says which).
import { useSignal } from "@preact/signals";
import { SetBudgetDocument, SpendReportDocument, type SpendGrouping, type SpendReportQuery } from "../gql/graphql";
import { describeError, request } from "../lib/graphql";
import { hasRole, myLocations } from "../state";
import { Screen, Status, useLoad } from "../ui";

type Report = SpendReportQuery["spendReport"];
type Row = Report["rows"][number];

const GROUPS: { value: SpendGrouping; label: string }[] = [
  { value: "LOCATION", label: "Department" },
  { value: "ATC", label: "ATC code" },
  { value: "SUPPLIER", label: "Supplier" },
];
const SOURCE_TEXT: Record<string, string> = {
  FORECAST: "from demand forecasts",
  RUN_RATE: "at this period's pace",
  MIXED: "forecasts and pace",
  PERIOD_CLOSED: "period closed",
};

function currentPeriod(kind: string): string {
  const now = new Date();
  const year = now.getUTCFullYear();
  if (kind === "YEAR") return String(year);
  if (kind === "QUARTER") return `${year}-Q${Math.floor(now.getUTCMonth() / 3) + 1}`;
  return `${year}-${String(now.getUTCMonth() + 1).padStart(2, "0")}`;
}

function money(currency: string): (value: string | number | null | undefined) => string {
  const format = new Intl.NumberFormat(undefined, { style: "currency", currency });
  return (value) => (value == null ? "—" : format.format(Number(value)));
}

function label(row: Row): string {
  if (row.location) return `${row.location.code} — ${row.location.name}`;
  if (row.supplier) return row.supplier.name;
  if (row.atcCode !== null && row.atcCode !== undefined) return row.atcCode || "No ATC code";
  return "Unknown supplier";
}

function Bar({ row, scale, fmt }: { row: Row; scale: number; fmt: (v: string | null | undefined) => string }) {
  const spend = Number(row.spend);
  const forecast = Number(row.forecast);
  const budget = row.budget == null ? null : Number(row.budget);
  const width = (v: number) => `${Math.min(100, (v / scale) * 100)}%`;
  const over = budget !== null && spend >= budget;
  const heading = budget !== null && !over && forecast > budget;
  const text =
    `${label(row)}: spent ${fmt(row.spend)}` +
    (budget !== null ? ` of ${fmt(row.budget)} (${row.percent} %)` : "") +
    `, forecast ${fmt(row.forecast)} by period end`;
  return (
    <div class="spend-bar" role="img" aria-label={text}>
      <div class="spend-track">
        <div class="spend-forecast" style={{ width: width(forecast) }} />
        <div class={`spend-used ${over ? "over" : heading ? "heading" : ""}`} style={{ width: width(spend) }} />
        {budget !== null && <div class="spend-budget" style={{ left: width(budget) }} />}
      </div>
    </div>
  );
}

function BudgetForm({ period, onSaved }: { period: string; onSaved: () => void }) {
  const locations = myLocations.value;
  const location = useSignal(locations[0]?.id ?? "");
  const amount = useSignal("");
  const message = useSignal<{ kind: "ok" | "danger"; text: string } | null>(null);
  const busy = useSignal(false);
  if (!locations.length) return null;
  const chosen = location.value || locations[0].id; // the locations may arrive after the first render
  const save = async (e: Event) => {
    e.preventDefault();
    busy.value = true;
    message.value = null;
    try {
      const { setBudget } = await request(SetBudgetDocument, {
        input: { location: chosen, period, amount: amount.value.trim() },
      });
      if (setBudget.errors.length) {
        message.value = { kind: "danger", text: setBudget.errors.map((x) => x.message).join("; ") };
      } else {
        message.value = { kind: "ok", text: `Budget for ${setBudget.budget?.location.code} ${period} saved.` };
        amount.value = "";
        onSaved();
      }
    } catch (error) {
      message.value = { kind: "danger", text: describeError(error) };
    } finally {
      busy.value = false;
    }
  };
  return (
    <form onSubmit={save} class="card" data-testid="budget-form" aria-labelledby="budget-form-title">
      <h2 id="budget-form-title" style={{ fontSize: "1.05rem" }}>
        Set a budget for {period}
      </h2>
      <label for="budget-location">
        Department
        <select id="budget-location" value={chosen} onChange={(e) => (location.value = (e.target as HTMLSelectElement).value)}>
          {locations.map((l) => (
            <option key={l.id} value={l.id}>
              {l.code} — {l.name}
            </option>
          ))}
        </select>
      </label>
      <label for="budget-amount">
        Amount <span class="hint">in the organisation's currency</span>
        <input
          id="budget-amount"
          inputMode="decimal"
          required
          pattern="[0-9]+([.][0-9]{1,4})?"
          value={amount.value}
          onInput={(e) => (amount.value = (e.target as HTMLInputElement).value)}
        />
      </label>
      <button type="submit" class="primary" disabled={busy.value}>
        Save budget
      </button>
      {message.value && (
        <p class={`notice ${message.value.kind}`} role={message.value.kind === "danger" ? "alert" : "status"}>
          {message.value.text}
        </p>
      )}
    </form>
  );
}

export function SpendScreen() {
  const kind = useSignal("MONTH");
  const period = useSignal(currentPeriod("MONTH"));
  const groupBy = useSignal<SpendGrouping>("LOCATION");
  const loaded = useLoad(`spend:${period.value}:${groupBy.value}`, () =>
    request(SpendReportDocument, { period: period.value, groupBy: groupBy.value }).then((d) => d.spendReport),
  );
  const report: Report | undefined = loaded.data;
  const fmt = money(report?.currency ?? "EUR");
  const scale = Math.max(
    1,
    ...(report?.rows ?? []).map((r) => Math.max(Number(r.spend), Number(r.forecast), Number(r.budget ?? 0))),
  );
  return (
    <Screen title="Spend">
      <div class="row" style={{ gap: "0.75rem", flexWrap: "wrap" }}>
        <label for="spend-kind">
          Period
          <select
            id="spend-kind"
            value={kind.value}
            onChange={(e) => {
              kind.value = (e.target as HTMLSelectElement).value;
              period.value = currentPeriod(kind.value);
            }}
          >
            <option value="MONTH">This month</option>
            <option value="QUARTER">This quarter</option>
            <option value="YEAR">This year</option>
          </select>
        </label>
        <label for="spend-group">
          By
          <select id="spend-group" value={groupBy.value} onChange={(e) => (groupBy.value = (e.target as HTMLSelectElement).value as SpendGrouping)}>
            {GROUPS.map((g) => (
              <option key={g.value} value={g.value}>
                {g.label}
              </option>
            ))}
          </select>
        </label>
      </div>
      <Status loaded={loaded} empty={!!report && !report.rows.length} />
      {report && (
        <>
          <p data-testid="spend-total" data-value={report.spend} data-currency={report.currency}>
            <strong>{fmt(report.spend)}</strong> spent in {report.period}
            {report.budget != null && <> of {fmt(report.budget)} budgeted</>}; forecast{" "}
            <strong data-testid="spend-forecast" data-value={report.forecast}>
              {fmt(report.forecast)}
            </strong>{" "}
            by {report.periodEnd} (as of {report.asOf}).
          </p>
          <p class="meta legend">
            <span class="swatch used" aria-hidden="true" /> spent <span class="swatch forecast" aria-hidden="true" /> forecast
            to period end <span class="swatch budget" aria-hidden="true" /> budget
          </p>
          <ul class="list" data-testid="spend-rows">
            {report.rows.map((row) => (
              <li key={label(row)} data-spend={row.spend} data-budget={row.budget ?? ""} data-source={row.forecastSource}>
                <div class="row" style={{ justifyContent: "space-between", gap: "0.5rem", flexWrap: "wrap" }}>
                  <strong>{label(row)}</strong>
                  <span>
                    {fmt(row.spend)}
                    {row.budget != null && (
                      <>
                        {" "}
                        / {fmt(row.budget)}{" "}
                        <span class={`tag ${Number(row.percent) >= 100 ? "expired" : Number(row.percent) >= 90 ? "near" : "neutral"}`}>
                          {row.percent} %
                        </span>
                      </>
                    )}
                  </span>
                </div>
                <Bar row={row} scale={scale} fmt={fmt} />
                <p class="meta">
                  Forecast {fmt(row.forecast)} ({SOURCE_TEXT[row.forecastSource] ?? row.forecastSource})
                  {row.remaining != null && <>; {Number(row.remaining) >= 0 ? `${fmt(row.remaining)} left` : `${fmt(-Number(row.remaining))} over`}</>}
                </p>
              </li>
            ))}
          </ul>
        </>
      )}
      {hasRole("PHARMACIST", "ADMIN") && <BudgetForm period={period.value} onSaved={loaded.reload} />}
    </Screen>
  );
}
