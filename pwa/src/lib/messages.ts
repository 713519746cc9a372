// One catalogue for every word the app shows that comes from a code: server error codes,
// statuses, movement kinds, alert kinds, and the app's own sentences that carry numbers. Keyed
// ("error.INSUFFICIENT_STOCK"), looked up with `t(key, params)`, one table per language (English
// today; a second language is one more table in MESSAGES), the locale from navigator.language
// with English as the fallback for any key a table lacks. Numbers, dates and money go through
// Intl in the same locale; money in the organisation's currency (see `currency`).

import { me } from "./auth";

type Table = Record<string, string>;

const EN: Table = {
  // Server error codes: what happened, said as a sentence (the server's own message adds detail).
  "error.UNAUTHENTICATED": "You are signed out. Sign in again.",
  "error.FORBIDDEN": "You are not allowed to do this here.",
  "error.NOT_FOUND": "Not found: it may have been removed.",
  "error.INVALID_INPUT": "Something entered is not valid.",
  "error.INVALID_ID": "This link or reference is not valid.",
  "error.INSUFFICIENT_STOCK": "Not enough stock here.",
  "error.EXPIRED_LOT": "This lot has expired: do not use it.",
  "error.LOT_NOT_ISSUABLE": "This lot is quarantined or recalled: do not use it.",
  "error.DUPLICATE": "This already exists.",
  "error.IDEMPOTENCY_KEY_REUSED": "This action was already sent with other details.",
  "error.INVALID_CREDENTIALS": "Wrong username or password.",
  "error.BARCODE_INVALID": "The barcode could not be read.",
  "error.UNKNOWN_PRODUCT": "This product is not in the catalogue.",
  "error.UNKNOWN_BATCH": "Batch not known here: it has not been received at this location.",
  "error.EXPIRY_MISMATCH": "The printed expiry differs from the recorded one: check the pack.",
  "error.SERIAL_ALREADY_DECOMMISSIONED": "This serialised pack was already used: possible duplicate or fake.",
  "error.COUNT_ALREADY_OPEN": "A count is already open here.",
  "error.COUNT_CLOSED": "This count is closed.",
  "error.INVALID_TRANSITION": "This step is not possible in the current status.",
  "error.LOT_ALREADY_RECALLED": "This lot is already recalled.",
  "error.ALREADY_RECEIVED": "This was already received.",
  "error.RATE_LIMITED": "Too many attempts: wait a moment and try again.",
  "error.THROTTLED": "The server is busy: try again in a moment.",
  "error.unknown": "The server refused this ({code}).",
  // What to do after a refusal.
  "todo.INSUFFICIENT_STOCK": "Check the shelf and the lot, then scan the pack again or ask for a transfer.",
  "todo.UNKNOWN_BATCH": "Check the batch on the pack; receive it first if it is new here.",
  "todo.EXPIRED_LOT": "Do not dispense it: waste it instead.",
  "todo.LOT_NOT_ISSUABLE": "Do not dispense it: set it aside for the pharmacy.",
  "todo.SERIAL_ALREADY_DECOMMISSIONED": "Set the pack aside and tell the pharmacist.",
  "todo.default": "Check the pack and scan it again, then dismiss this.",
  // The outbox.
  "outbox.refused": "{count, plural, one {# queued action was refused} other {# queued actions were refused}} by the server.",
  "outbox.review": "Review",
  "outbox.dismiss": "Dismiss",
  // Scan.
  "scan.batchUnknown": "Batch not known here",
  "scan.batchUnknownHelp": "Batch {batch} has not been received at this location: do not dispense it. Check the batch on the pack.",
  "scan.expiryUnknown": "Expiry unknown",
  "scan.expiredWarn": "Expired: do not dispense. Waste it instead.",
  "scan.offlineCached": "Offline: this is what the device last knew; the server checks the pack when the scan is sent.",
  "scan.offline": "Offline: the server will check this pack when the scan is sent.",
  "scan.tookLot": "from batch {batches}",
  "scan.balanceNow": "Balance now {balance}.",
  // Statuses (transfers, shipments, purchase orders, counts, alerts, lots).
  "status.REQUESTED": "Requested",
  "status.APPROVED": "Approved",
  "status.REJECTED": "Rejected",
  "status.PICKED": "Picked",
  "status.DISPATCHED": "Dispatched",
  "status.RECEIVED": "Received",
  "status.CANCELLED": "Cancelled",
  "status.PLANNED": "Planned",
  "status.IN_TRANSIT": "In transit",
  "status.DELIVERED": "Delivered",
  "status.DRAFT": "Draft",
  "status.SUBMITTED": "Submitted",
  "status.ACKNOWLEDGED": "Acknowledged",
  "status.PARTIALLY_RECEIVED": "Partly received",
  "status.OPEN": "Open",
  "status.FINALIZED": "Finalised",
  "status.RESOLVED": "Resolved",
  "status.RELEASED": "Released",
  "status.QUARANTINED": "Quarantined",
  "status.RECALLED": "Recalled",
  // Movement kinds.
  "movement.RECEIVE": "Received",
  "movement.SHIP": "Shipped",
  "movement.DISPENSE": "Dispensed",
  "movement.RETURN": "Returned",
  "movement.ADJUST": "Adjusted",
  "movement.DISPOSE": "Wasted",
  "movement.PRODUCE": "Produced",
  "movement.TRANSFER_OUT": "Transferred out",
  "movement.TRANSFER_IN": "Transferred in",
  "movement.COUNT": "Counted",
  // Alert kinds.
  "alert.LOW_STOCK": "Low stock",
  "alert.EXPIRING_SOON": "Expiring soon",
  "alert.EXPIRED_ON_SHELF": "Expired on shelf",
  "alert.SERIAL_DECOMMISSIONED_TWICE": "Serial used twice",
  "alert.RECALL": "Recall",
  "alert.SHIPMENT_OVERDUE": "Shipment overdue",
  "alert.SUPERVISION_STATUS": "Supervision",
  // Waste reasons.
  "reason.EXPIRED": "Expired",
  "reason.DAMAGED": "Damaged",
  "reason.CONTAMINATED": "Contaminated",
  "reason.PATIENT_REFUSED": "Patient refused",
  "reason.RECALLED": "Recalled",
  "reason.OTHER": "Other",
  // Counts.
  "count.blindHidden": "Hidden until you submit the count",
  "count.uncountedOnly": "Uncounted only",
  "count.showing": "Showing {from}–{to} of {total}",
  // Audit actions (the rest are tidied from their code) and entity types.
  "audit.stock.receive": "Stock received",
  "audit.stock.ship": "Stock shipped",
  "audit.stock.dispense": "Stock dispensed",
  "audit.stock.return": "Stock returned",
  "audit.stock.adjust": "Stock adjusted",
  "audit.stock.dispose": "Stock wasted",
  "audit.stock.produce": "Stock produced",
  "audit.stock.transfer_out": "Stock transferred out",
  "audit.stock.transfer_in": "Stock transferred in",
  "audit.stock.count": "Stock counted",
  "audit.user.create": "User created",
  "audit.user.update": "User changed",
  "audit.alert.acknowledge": "Alert acknowledged",
  "audit.lot.recall": "Lot recalled",
  "audit.recall.create": "Recall issued",
  "audit.count.record_line": "Count line recorded",
  "audit.serial.decommission": "Serial used",
  "audit.serial.recommission": "Serial back in use",
  "audit.transfer.discrepancy": "Transfer discrepancy",
  // Totals.
  "alerts.open": "Open alerts: {count}",
};

const MESSAGES: Record<string, Table> = { en: EN };

function pickLocale(): string {
  const wanted = typeof navigator === "undefined" ? [] : [...(navigator.languages ?? []), navigator.language];
  for (const tag of wanted) {
    if (!tag) continue;
    if (MESSAGES[tag]) return tag;
    const base = tag.split("-")[0];
    if (MESSAGES[base]) return base;
  }
  return "en";
}

/** The language of the messages; Intl formats use the browser's full locale (dates, digits). */
export const language = pickLocale();
export const locale = typeof navigator === "undefined" ? "en" : navigator.language || "en";

const plurals = new Intl.PluralRules(locale);

/** `{name}` and `{count, plural, one {…} other {…}}` (with `#` for the number). */
function format(template: string, params: Record<string, unknown>): string {
  return template.replace(/\{(\w+), plural, ((?:\w+ \{[^}]*\}\s*)+)\}|\{(\w+)\}/g, (_, pName, forms, name) => {
    if (name) return params[name] == null ? "" : String(typeof params[name] === "number" ? formatNumber(params[name] as number) : params[name]);
    const n = Number(params[pName]);
    const options: Record<string, string> = {};
    for (const m of (forms as string).matchAll(/(\w+) \{([^}]*)\}/g)) options[m[1]] = m[2];
    const chosen = options[plurals.select(n)] ?? options.other ?? "";
    return chosen.replace(/#/g, formatNumber(n));
  });
}

/** The sentence for `key` in the user's language (English when missing; the key when unknown). */
export function t(key: string, params: Record<string, unknown> = {}): string {
  const template = MESSAGES[language]?.[key] ?? EN[key];
  return template === undefined ? key : format(template, params);
}

/** Whether the catalogue has `key` (to fall back to another sentence). */
export const has = (key: string): boolean => key in (MESSAGES[language] ?? EN) || key in EN;

/** A server error as a person reads it: the catalogue's sentence for the code. */
export function errorText(error: { code: string; message?: string | null }): string {
  return has(`error.${error.code}`) ? t(`error.${error.code}`) : t("error.unknown", { code: error.code });
}

/** A server message as a sentence: capital first letter, full stop at the end. */
export function sentence(text: string | null | undefined): string {
  const trimmed = (text ?? "").trim();
  if (!trimmed) return "";
  const body = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(body) ? body : `${body}.`;
}

/** What to do after the server refused with `code`. */
export const todo = (code: string | undefined): string => t(has(`todo.${code}`) ? `todo.${code}` : "todo.default");

/** A status, movement kind, alert kind or reason code as words (the code, tidied, if unknown). */
export function label(prefix: "status" | "movement" | "alert" | "reason", code: string | null | undefined): string {
  if (!code) return "—";
  const key = `${prefix}.${code}`;
  return has(key) ? t(key) : code.charAt(0) + code.slice(1).toLowerCase().replace(/_/g, " ");
}

/** An audit action ("stock.transfer_in") as words. */
export function auditAction(action: string): string {
  if (has(`audit.${action}`)) return t(`audit.${action}`);
  const words = action.replace(/[._]/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/**
 * The thing an audit event is about: its business number when the snapshot has one
 * ("Transfer TR-2026-00001"), else its kind and record number ("Movement #21563").
 */
export function auditEntity(type: string, id: string, snapshot: unknown): string {
  const number = snapshot && typeof snapshot === "object" ? (snapshot as Record<string, unknown>).number : undefined;
  const kind = type.replace(/([a-z])([A-Z])/g, "$1 $2").replace(/_/g, " ");
  const name = kind.charAt(0).toUpperCase() + kind.slice(1).toLowerCase();
  return typeof number === "string" && number ? `${name} ${number}` : `${name} #${id}`;
}

const numberFormat = new Intl.NumberFormat(locale);
export const formatNumber = (n: number): string => numberFormat.format(n);

/** A calendar date (YYYY-MM-DD) in the user's locale, never shifted by time zone. */
export function formatDate(iso: string | null | undefined): string {
  if (!iso) return "—";
  const [y, m, d] = iso.slice(0, 10).split("-").map(Number);
  if (!y || !m || !d) return iso;
  return new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeZone: "UTC" }).format(new Date(Date.UTC(y, m - 1, d)));
}

/**
 * The organisation's currency (ISO 4217), as the server keeps it (`me.organisation.currency`).
 * Before anyone has signed in on this device there is none; EUR then, never a guess per screen.
 */
export function currency(): string {
  return me.value?.organisation?.currency || "EUR";
}

/** Money in the organisation's currency. */
export function formatMoney(amount: number | string | null | undefined): string {
  if (amount == null || amount === "") return "—";
  const n = typeof amount === "number" ? amount : Number(amount);
  if (Number.isNaN(n)) return String(amount);
  return new Intl.NumberFormat(locale, { style: "currency", currency: currency() }).format(n);
}
