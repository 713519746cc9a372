// Enough GS1 on the device to show what a pack is while offline (the server's parseBarcode is
// the authority when online), and to build barcode text from typed GTIN / batch / expiry.
const GS = "\u001d";

export interface LocalParse {
  gtin: string | null;
  batch: string | null;
  expiry: string | null; // YYYY-MM-DD
  serial: string | null;
}

/** GS1 check digit over all digits but the last. */
export function gtinValid(gtin: string): boolean {
  if (!/^\d{8}$|^\d{12,14}$/.test(gtin)) return false;
  const digits = gtin.split("").map(Number);
  const check = digits.pop()!;
  const sum = digits.reverse().reduce((acc, d, i) => acc + d * (i % 2 === 0 ? 3 : 1), 0);
  return (10 - (sum % 10)) % 10 === check;
}

export function toGtin14(code: string): string {
  return code.padStart(14, "0");
}

/** YYMMDD (DD 00 = last day of the month) to ISO date. */
function gs1Date(yymmdd: string): string | null {
  const m = /^(\d\d)(\d\d)(\d\d)$/.exec(yymmdd);
  if (!m) return null;
  const yy = Number(m[1]);
  // GS1 general specifications 7.12: a 50-year sliding window around the current year.
  const now = new Date().getUTCFullYear();
  let year = Math.floor(now / 100) * 100 + yy;
  if (year - now > 50) year -= 100;
  else if (now - year > 49) year += 100;
  const month = Number(m[2]);
  let day = Number(m[3]);
  if (month < 1 || month > 12) return null;
  if (day === 0) day = new Date(Date.UTC(year, month, 0)).getUTCDate();
  return `${year}-${String(month).padStart(2, "0")}-${String(day).padStart(2, "0")}`;
}

const FIXED: Record<string, number> = { "00": 18, "01": 14, "02": 14, "11": 6, "12": 6, "13": 6, "15": 6, "16": 6, "17": 6 };

function fromPairs(pairs: [string, string][]): LocalParse {
  const get = (ai: string) => pairs.find(([k]) => k === ai)?.[1] ?? null;
  const gtin = get("01") ?? get("02");
  const expiry = get("17");
  return { gtin, batch: get("10"), expiry: expiry ? gs1Date(expiry) : null, serial: get("21") };
}

export function parseLocal(raw: string): LocalParse | null {
  let text = raw.trim();
  // Digital Link: https://host/01/<gtin>/10/<batch>/21/<serial>?17=YYMMDD
  if (/^https?:\/\//i.test(text)) {
    try {
      const url = new URL(text);
      const parts = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
      const pairs: [string, string][] = [];
      for (let i = 0; i + 1 < parts.length; i++) if (/^\d{2,4}$/.test(parts[i])) pairs.push([parts[i], parts[++i]]);
      url.searchParams.forEach((value, key) => pairs.push([key, value]));
      return pairs.length ? fromPairs(pairs) : null;
    } catch {
      return null;
    }
  }
  // Human readable: (01)...(17)...(10)...
  if (text.startsWith("(")) {
    const pairs = [...text.matchAll(/\((\d{2,4})\)([^(]*)/g)].map((m) => [m[1], m[2]] as [string, string]);
    return pairs.length ? fromPairs(pairs) : null;
  }
  if (/^\d{8}$|^\d{12,14}$/.test(text)) {
    return { gtin: toGtin14(text), batch: null, expiry: null, serial: null };
  }
  // Element string: ]d2 / ]C1 / ]Q3 prefix optional, GS (or <GS>, |) between variable fields.
  text = text.replace(/^\](d2|C1|Q3|e0)/, "").replace(/<GS>|\|/g, GS).replace(/^\u001d/, "");
  if (!/^\d{2}/.test(text)) return null;
  const pairs: [string, string][] = [];
  let rest = text;
  while (rest.length >= 2) {
    const ai = rest.slice(0, 2);
    if (ai in FIXED) {
      pairs.push([ai, rest.slice(2, 2 + FIXED[ai])]);
      rest = rest.slice(2 + FIXED[ai]).replace(/^\u001d/, "");
      continue;
    }
    if (ai === "10" || ai === "21") {
      const end = rest.indexOf(GS);
      pairs.push([ai, end < 0 ? rest.slice(2) : rest.slice(2, end)]);
      rest = end < 0 ? "" : rest.slice(end + 1);
      continue;
    }
    break; // an AI we do not need: stop (the server reads the rest)
  }
  return pairs.length ? fromPairs(pairs) : null;
}

/** Barcode text for typed fields, in the human-readable form the server reads. */
export function composeBarcode(fields: { gtin: string; batch?: string; expiry?: string; serial?: string }): string {
  let text = `(01)${toGtin14(fields.gtin.trim())}`;
  const expiry = fields.expiry?.trim();
  if (expiry) {
    const [y, m, d] = expiry.split("-");
    text += `(17)${y.slice(2)}${m}${d}`;
  }
  if (fields.batch?.trim()) text += `(10)${fields.batch.trim()}`;
  if (fields.serial?.trim()) text += `(21)${fields.serial.trim()}`;
  return text;
}
