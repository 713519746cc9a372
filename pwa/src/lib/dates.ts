// Calendar dates as ISO strings (YYYY-MM-DD): today on the device's calendar or in UTC, whole
// days between dates, and how near an expiry date is.
const DAY_MS = 86_400_000;

/** The device's calendar date `offset` days from today (date inputs, "needed by", local periods). */
export function localDate(offset = 0): string {
  const date = new Date();
  date.setDate(date.getDate() + offset);
  return `${date.getFullYear()}-${String(date.getMonth() + 1).padStart(2, "0")}-${String(date.getDate()).padStart(2, "0")}`;
}

/** The UTC date `offset` days from now (as the server's dates and overdue checks count). */
export function utcDate(offset = 0): string {
  return new Date(Date.now() + offset * DAY_MS).toISOString().slice(0, 10);
}

const utcMidnight = (isoDate: string) => {
  const [y, m, d] = isoDate.split("-").map(Number);
  return Date.UTC(y, m - 1, d);
};

/** Whole days from one ISO date to another; negative when `to` is earlier. */
export function daysBetween(from: string, to: string): number {
  return Math.round((utcMidnight(to) - utcMidnight(from)) / DAY_MS);
}

/** Whole days from today (UTC) to an ISO date; negative when past. */
export function daysUntil(isoDate: string): number {
  return daysBetween(utcDate(), isoDate);
}

const NEAR_EXPIRY_DAYS = 90;

export type ExpiryState = "expired" | "near" | "ok";

export function expiryState(isoDate: string | null | undefined, expired?: boolean | null): ExpiryState {
  if (!isoDate) return "ok";
  const days = daysUntil(isoDate);
  if (expired || days < 0) return "expired";
  return days <= NEAR_EXPIRY_DAYS ? "near" : "ok";
}
