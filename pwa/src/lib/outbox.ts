// The outbox: every stock mutation the app makes (recordScan) is first written to IndexedDB
// with its idempotency key, then sent. Entries are replayed strictly in the order they were
// queued — on `online`, at start, when the app becomes visible, after the live socket
// reconnects, and every 20 s while something is pending. The server's idempotency makes each
// land exactly once, however often a lost response makes us resend. A scan the server refuses
// is kept as `refused` and shown until the user dismisses it; nothing is dropped silently.
import { signal } from "@preact/signals";
import { RecordScanDocument, type RecordScanInput, type RecordScanMutation } from "../gql/graphql";
import { AuthError, me, withLock } from "./auth";
import { db, type OutboxEntry, type OutboxLabel } from "./db";
import { GraphQLRequestError, NetworkError, hasUnauthenticated, request } from "./graphql";

/** The current user's entries, oldest first (pending, refused and the recent done ones). */
export const outbox = signal<OutboxEntry[]>([]);
/** Why the last flush stopped early (offline, signed out), or null. */
export const outboxBlocked = signal<string | null>(null);

const KEEP_DONE = 20;
type Listener = (entry: OutboxEntry, result?: RecordScanMutation["recordScan"]) => void;
const listeners = new Set<Listener>();

/** Called with each entry as it completes (done or refused). */
export function onSettled(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function newKey(): string {
  if (crypto.randomUUID) return `pwa-${crypto.randomUUID()}`;
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `pwa-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

export async function loadOutbox(): Promise<void> {
  const username = me.value?.username;
  if (!username) {
    outbox.value = [];
    return;
  }
  const all = await (await db()).getAll("outbox");
  outbox.value = all.filter((entry) => entry.username === username);
}

/** Queue a scan and try to send it at once. Resolves with the stored entry. */
export async function enqueueScan(input: Omit<RecordScanInput, "idempotencyKey">, label: OutboxLabel): Promise<OutboxEntry> {
  const username = me.value?.username;
  if (!username) throw new AuthError("not signed in");
  const entry: OutboxEntry = {
    key: newKey(),
    username,
    createdAt: Date.now(),
    status: "pending",
    input: { ...input, idempotencyKey: "" },
    label,
    attempts: 0,
  };
  entry.input.idempotencyKey = entry.key;
  entry.seq = await (await db()).add("outbox", entry);
  await loadOutbox();
  void flush();
  return entry;
}

export async function dismiss(seq: number): Promise<void> {
  await (await db()).delete("outbox", seq);
  await loadOutbox();
}

async function prune(username: string): Promise<void> {
  const database = await db();
  const done = (await database.getAll("outbox")).filter((e) => e.username === username && e.status === "done");
  for (const old of done.slice(0, Math.max(0, done.length - KEEP_DONE))) {
    await database.delete("outbox", old.seq!);
  }
}

let flushing: Promise<void> | null = null;
let again = false;

/** Send pending entries in order. Concurrent calls coalesce; tabs take turns via a Web Lock. */
export function flush(): Promise<void> {
  if (flushing) {
    again = true;
    return flushing;
  }
  flushing = (async () => {
    do {
      again = false;
      await withLock("apotheca-outbox", sendPending);
    } while (again);
  })().finally(() => {
    flushing = null;
  });
  return flushing;
}

async function sendPending(): Promise<void> {
  const username = me.value?.username;
  if (!username) return;
  if (!navigator.onLine) {
    outboxBlocked.value = "offline";
    return;
  }
  const database = await db();
  // Read inside the lock: another tab may have sent some already.
  const pending = (await database.getAllFromIndex("outbox", "byStatus", "pending"))
    .filter((entry) => entry.username === username)
    .sort((a, b) => a.seq! - b.seq!);
  for (const entry of pending) {
    entry.attempts += 1;
    entry.lastAttemptAt = Date.now();
    let result: RecordScanMutation["recordScan"];
    try {
      result = (await request(RecordScanDocument, { input: entry.input })).recordScan;
    } catch (error) {
      if (error instanceof GraphQLRequestError && entry.attempts >= 3) {
        // The server keeps rejecting the request itself: show it as refused, go on.
        entry.status = "refused";
        entry.completedAt = Date.now();
        entry.errors = error.errors.map((e) => ({ code: e.extensions?.code ?? "ERROR", message: e.message }));
        await database.put("outbox", entry);
        await loadOutbox();
        for (const listener of listeners) listener(entry);
        continue;
      }
      await database.put("outbox", entry);
      // Not refused by the server: it stays pending and the order is kept, so stop here.
      outboxBlocked.value = error instanceof AuthError ? "signed-out" : error instanceof NetworkError ? "offline" : (error as Error).message;
      await loadOutbox();
      return;
    }
    if (hasUnauthenticated(result.errors)) {
      await database.put("outbox", entry);
      outboxBlocked.value = "signed-out";
      await loadOutbox();
      return;
    }
    entry.completedAt = Date.now();
    entry.replayed = result.replayed;
    if (result.errors.length) {
      entry.status = "refused";
      entry.errors = result.errors.map(({ code, message }) => ({ code, message }));
    } else {
      entry.status = "done";
      entry.balances = result.movements.map((m) => m.balanceAfter);
    }
    if (result.scan?.product) entry.label.product = `${result.scan.product.name} ${result.scan.product.strength}`;
    await database.put("outbox", entry);
    await loadOutbox();
    for (const listener of listeners) listener(entry, result);
  }
  outboxBlocked.value = null;
  await prune(username);
  await loadOutbox();
}

let started = false;

/** Wire the replay triggers once. */
export function startOutbox(): void {
  if (started) return;
  started = true;
  window.addEventListener("online", () => void flush());
  window.addEventListener("offline", () => {
    outboxBlocked.value = "offline";
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") void loadOutbox().then(flush);
  });
  setInterval(() => {
    if (outbox.value.some((e) => e.status === "pending") && navigator.onLine) void flush();
  }, 20_000);
  void loadOutbox().then(flush);
}

export const pendingCount = () => outbox.value.filter((e) => e.status === "pending").length;
