// The outbox: every stock mutation the app makes (scans, transfer dispatch and receipt,
// shipment receipts, count lines and finalisation) is first written to IndexedDB with its
// idempotency key, then sent. Entries are replayed strictly in the order they were queued — on
// `online`, at start, when the app becomes visible, after the live socket reconnects, and every
// 20 s while something is pending. The server's idempotency makes each land exactly once,
// however often a lost response makes us resend. An action the server refuses is kept as
// `refused` and shown until the user dismisses it; nothing is dropped silently.
import { signal } from "@preact/signals";
import {
  DispatchTransferDocument,
  FinalizeCountDocument,
  ReceiveShipmentLineDocument,
  ReceiveTransferDocument,
  RecordCountLineDocument,
  RecordScanDocument,
  type DispatchTransferMutationVariables,
  type FinalizeCountMutationVariables,
  type ReceiveShipmentLineMutationVariables,
  type ReceiveTransferMutationVariables,
  type RecordCountLineMutationVariables,
  type RecordScanInput,
} from "../gql/graphql";
import { AuthError, me, withLock } from "./auth";
import { db, type OutboxEntry, type OutboxLabel, type OutboxOperation } from "./db";
import { GraphQLRequestError, NetworkError, hasUnauthenticated, request } from "./graphql";

/** What each queued operation takes, without its idempotency key (the outbox adds it). */
export interface OutboxVariables {
  recordScan: Omit<RecordScanInput, "idempotencyKey">;
  dispatchTransfer: Omit<DispatchTransferMutationVariables, "idempotencyKey">;
  receiveTransfer: Omit<ReceiveTransferMutationVariables, "idempotencyKey">;
  receiveShipmentLine: Omit<ReceiveShipmentLineMutationVariables, "idempotencyKey">;
  recordCountLine: RecordCountLineMutationVariables;
  finalizeCount: Omit<FinalizeCountMutationVariables, "idempotencyKey">;
}

/** The common part of every outbox mutation's answer. */
export interface SettledResult {
  errors: { code: string; field?: string | null; message: string }[];
  replayed?: boolean;
  movements?: { balanceAfter: number; lot?: { batchNumber: string } | null }[];
  /** recordScan: the product the server identified, for the label. */
  product?: string;
}

type Variables = Record<string, unknown>;
const SEND: Record<OutboxOperation, (variables: Variables) => Promise<SettledResult>> = {
  recordScan: async (v) => {
    const result = (await request(RecordScanDocument, v as never)).recordScan;
    const product = result.scan?.product;
    return { ...result, product: product ? `${product.name} ${product.strength}` : undefined };
  },
  dispatchTransfer: async (v) => (await request(DispatchTransferDocument, v as never)).dispatchTransfer,
  receiveTransfer: async (v) => (await request(ReceiveTransferDocument, v as never)).receiveTransfer,
  receiveShipmentLine: async (v) => (await request(ReceiveShipmentLineDocument, v as never)).receiveShipmentLine,
  recordCountLine: async (v) => (await request(RecordCountLineDocument, v as never)).recordCountLine,
  finalizeCount: async (v) => (await request(FinalizeCountDocument, v as never)).finalizeCount,
};

/** Where the key goes: in the scan's input, as a top-level argument, or nowhere (replaces). */
function withKey(operation: OutboxOperation, variables: object, key: string): Variables {
  if (operation === "recordScan") return { input: { ...variables, idempotencyKey: key } };
  if (operation === "recordCountLine") return { ...variables };
  return { ...variables, idempotencyKey: key };
}

/** The current user's entries, oldest first (pending, refused and the recent done ones). */
export const outbox = signal<OutboxEntry[]>([]);
/** Why the last flush stopped early (offline, signed out), or null. */
export const outboxBlocked = signal<string | null>(null);

const KEEP_DONE = 20;
type Listener = (entry: OutboxEntry, result?: SettledResult) => void;
const listeners = new Set<Listener>();

/** Called with each entry as it completes (done or refused). */
export function onSettled(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function newKey(): string {
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

/** Queue a stock action and try to send it at once. Resolves with the stored entry. */
export async function enqueue<K extends OutboxOperation>(
  operation: K,
  variables: OutboxVariables[K],
  label: OutboxLabel,
): Promise<OutboxEntry> {
  const username = me.value?.username;
  if (!username) throw new AuthError("not signed in");
  const key = newKey();
  const entry: OutboxEntry = {
    key,
    username,
    createdAt: Date.now(),
    status: "pending",
    operation,
    variables: withKey(operation, variables, key),
    label,
    attempts: 0,
  };
  entry.seq = await (await db()).add("outbox", entry);
  await loadOutbox();
  void flush();
  return entry;
}

/** The scan an entry carries (recordScan entries only). */
export function scanInput(entry: OutboxEntry): RecordScanInput | null {
  return entry.operation === "recordScan" ? (entry.variables.input as RecordScanInput) : null;
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
    let result: SettledResult;
    try {
      result = await SEND[entry.operation](entry.variables);
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
      entry.balances = result.movements?.map((m) => m.balanceAfter);
      // The lots the server took (FEFO when the barcode named none), to say so in the answer.
      entry.lots = result.movements?.flatMap((m) => (m.lot ? [m.lot.batchNumber] : []));
    }
    if (result.product) entry.label.product = result.product;
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
