// Dashboard charts in plain SVG and HTML: no chart library, nothing drawn on a canvas, so every
// figure is real text a screen reader can reach. Loaded lazily with the dashboard
// (`import("../charts/charts")`), so the first page load does not pay for it.
//
// Bar charts are tables whose cells carry a bar: the table *is* the text equivalent. The trend
// chart is an SVG hidden from assistive technology, paired with a table of the same numbers
// (visually hidden until "Show numbers" is pressed).
import { useState } from "preact/hooks";
import "./charts.css";

const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

export const formatNumber = (n: number): string => numberFormat.format(n);
/** A Decimal string from the API, in the organisation's currency (lib/messages). */
export { formatMoney } from "../lib/messages";

export interface BarColumn {
  name: string;
  /** The value that fills a whole bar; bars of one column share it. */
  max: number;
  tone?: "brand" | "warn" | "danger" | "alt";
}

export interface BarCell {
  value: number | null;
  text: string;
  testId?: string;
  /** The exact figure, for tests and tooling (e.g. a Decimal string). */
  raw?: string;
}

export interface BarRow {
  key: string;
  label: string;
  sublabel?: string;
  cells: BarCell[];
}

/** A table with a bar behind each figure: readable as a table, seen as a bar chart. */
export function BarTable({ caption, columns, rows, testId }: { caption: string; columns: BarColumn[]; rows: BarRow[]; testId?: string }) {
  if (!rows.length) return <p class="meta">Nothing to show.</p>;
  return (
    // In a scroll box: a long supplier name may widen the table, never the page.
    <div class="table-scroll">
    <table class="bars" data-testid={testId}>
      <caption class="sr-only">{caption}</caption>
      <thead>
        <tr>
          <th scope="col">
            <span class="sr-only">Name</span>
          </th>
          {columns.map((c) => (
            <th scope="col" key={c.name} class="num">
              {c.name}
            </th>
          ))}
        </tr>
      </thead>
      <tbody>
        {rows.map((row) => (
          <tr key={row.key}>
            <th scope="row">
              {row.label}
              {row.sublabel && <span class="meta"> {row.sublabel}</span>}
            </th>
            {row.cells.map((cell, i) => {
              const column = columns[i];
              const share = cell.value == null || column.max <= 0 ? 0 : Math.max(0, Math.min(1, cell.value / column.max));
              return (
                <td key={column.name} class="num" data-testid={cell.testId} data-value={cell.raw ?? cell.value ?? ""}>
                  <span class={`bar ${column.tone ?? "brand"}`} style={{ width: `${(share * 100).toFixed(1)}%` }} aria-hidden="true" />
                  <span class="figure">{cell.text}</span>
                </td>
              );
            })}
          </tr>
        ))}
      </tbody>
    </table>
    </div>
  );
}

export interface TrendPoint {
  weekStart: string;
  quantity: number;
  low?: number | null;
  high?: number | null;
}

const W = 340;
const H = 190;
const PAD = { left: 34, right: 8, top: 10, bottom: 26 };

function shortDate(iso: string): string {
  const d = new Date(`${iso}T00:00:00Z`);
  return d.toLocaleDateString(undefined, { day: "numeric", month: "short", timeZone: "UTC" });
}

/** Weekly history (solid) and forecast (dashed) with the forecast interval as a band. */
export function TrendChart({
  history,
  forecast,
  intervalLevel,
  caption,
}: {
  history: TrendPoint[];
  forecast: TrendPoint[];
  intervalLevel: number | null;
  caption: string;
}) {
  const [showTable, setShowTable] = useState(false);
  const all = [...history, ...forecast];
  if (!all.length) return <p class="meta">No weeks to show.</p>;
  const top = Math.max(1, ...all.map((p) => Math.max(p.quantity, p.high ?? 0)));
  const niceTop = niceCeil(top);
  const n = all.length;
  const x = (i: number) => PAD.left + (n === 1 ? 0 : (i * (W - PAD.left - PAD.right)) / (n - 1));
  const y = (v: number) => PAD.top + (1 - v / niceTop) * (H - PAD.top - PAD.bottom);
  const line = (points: [number, number][]) => points.map(([px, py], i) => `${i ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join("");
  const h = history.length;
  const historyPath = line(history.map((p, i) => [x(i), y(p.quantity)]));
  // The forecast line starts from the last observed week so the two read as one story.
  const joined: [number, number][] = [
    ...(h ? [[x(h - 1), y(history[h - 1].quantity)] as [number, number]] : []),
    ...forecast.map((p, i) => [x(h + i), y(p.quantity)] as [number, number]),
  ];
  const banded = forecast.filter((p) => p.low != null && p.high != null);
  const band =
    banded.length === forecast.length && forecast.length
      ? `${line(forecast.map((p, i) => [x(h + i), y(p.high!)]))}${forecast
          .map((p, i) => [x(h + i), y(p.low!)] as [number, number])
          .reverse()
          .map(([px, py]) => `L${px.toFixed(1)},${py.toFixed(1)}`)
          .join("")}Z`
      : null;
  return (
    <figure class="trend">
      <figcaption class="sr-only">{caption}</figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="presentation" aria-hidden="true" focusable="false" data-testid="trend-svg">
        {[0, 0.5, 1].map((f) => (
          <g key={f}>
            <line class="grid" x1={PAD.left} x2={W - PAD.right} y1={y(niceTop * f)} y2={y(niceTop * f)} />
            <text class="axis" x={PAD.left - 4} y={y(niceTop * f) + 4} text-anchor="end">
              {formatNumber(niceTop * f)}
            </text>
          </g>
        ))}
        {band && <path class="band" d={band} data-testid="forecast-band" />}
        {h > 0 && forecast.length > 0 && <line class="now" x1={x(h - 1)} x2={x(h - 1)} y1={PAD.top} y2={H - PAD.bottom} />}
        {h > 0 && <path class="history" d={historyPath} data-testid="history-line" />}
        {forecast.length > 0 && <path class="forecast" d={line(joined)} data-testid="forecast-line" />}
        <text class="axis" x={PAD.left} y={H - 8} text-anchor="start">
          {shortDate(all[0].weekStart)}
        </text>
        <text class="axis" x={W - PAD.right} y={H - 8} text-anchor="end">
          {shortDate(all[n - 1].weekStart)}
        </text>
      </svg>
      <ul class="legend" aria-hidden="true">
        <li>
          <span class="key history" /> Used per week
        </li>
        {forecast.length > 0 && (
          <li>
            <span class="key forecast" /> Forecast
          </li>
        )}
        {band && (
          <li>
            <span class="key band" /> {intervalLevel} % interval
          </li>
        )}
      </ul>
      <button type="button" class="link" aria-expanded={showTable} onClick={() => setShowTable(!showTable)}>
        {showTable ? "Hide numbers" : "Show numbers"}
      </button>
      {/* sr-only on a wrapper: tables ignore overflow, so a hidden table would widen the page. */}
      <div class={showTable ? "trend-scroll" : "sr-only"}>
      <table class="trend-table" data-testid="trend-table">
        <caption class="sr-only">{caption}</caption>
        <thead>
          <tr>
            <th scope="col">Week of</th>
            <th scope="col" class="num">
              Used
            </th>
            <th scope="col" class="num">
              Forecast
            </th>
            {band && (
              <th scope="col" class="num">
                {intervalLevel} % range
              </th>
            )}
          </tr>
        </thead>
        <tbody>
          {history.map((p) => (
            <tr key={p.weekStart}>
              <th scope="row">{p.weekStart}</th>
              <td class="num">{formatNumber(p.quantity)}</td>
              <td class="num">—</td>
              {band && <td class="num">—</td>}
            </tr>
          ))}
          {forecast.map((p) => (
            <tr key={p.weekStart} data-forecast="true">
              <th scope="row">{p.weekStart}</th>
              <td class="num">—</td>
              <td class="num">{formatNumber(p.quantity)}</td>
              {band && (
                <td class="num">
                  {formatNumber(p.low ?? 0)}–{formatNumber(p.high ?? 0)}
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
      </div>
    </figure>
  );
}

/** 1, 2 or 5 times a power of ten at or above `v`: round axis labels. */
function niceCeil(v: number): number {
  const power = 10 ** Math.floor(Math.log10(v));
  for (const step of [1, 2, 5, 10]) if (v <= step * power) return step * power;
  return 10 * power;
}
