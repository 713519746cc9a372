// The app's IndexedDB: the outbox of stock mutations, and a small cache of what the screens
// last showed (so they open offline). Sign-out deletes both.
import { openDB, type DBSchema, type IDBPDatabase } from "idb";
import { me, signingOut } from "./auth";

export type OutboxStatus = "pending" | "done" | "refused";

/** What the user sees of a queued action while it waits (the server's answer replaces it). */
export interface OutboxLabel {
  /** Non-scan actions: what was done, e.g. "Dispatch TR-2026-00012". */
  title?: string;
  product?: string;
  gtin?: string | null;
  batch?: string | null;
  expiry?: string | null;
  serial?: string | null;
  location?: string;
}

/** The stock-moving mutations that go through the outbox (see lib/outbox.ts). */
export type OutboxOperation =
  | "recordScan"
  | "dispatchTransfer"
  | "receiveTransfer"
  | "receiveShipmentLine"
  | "recordCountLine"
  | "finalizeCount";

export interface OutboxEntry {
  seq?: number;
  /** The idempotency key, created once when the action is queued and sent with every attempt. */
  key: string;
  username: string;
  createdAt: number;
  status: OutboxStatus;
  operation: OutboxOperation;
  /** The mutation's variables, key included, exactly as they are sent on every attempt. */
  variables: Record<string, unknown>;
  label: OutboxLabel;
  attempts: number;
  lastAttemptAt?: number;
  completedAt?: number;
  replayed?: boolean;
  /** When done: the balance the movement left, per movement. */
  balances?: number[];
  /** When done: the batch of each movement's lot (in the order of `balances`). */
  lots?: string[];
  errors?: { code: string; message: string }[];
}

export interface CacheEntry {
  key: string;
  username: string;
  savedAt: number;
  value: unknown;
}

interface ApothecaDB extends DBSchema {
  outbox: { key: number; value: OutboxEntry; indexes: { byStatus: string } };
  cache: { key: string; value: CacheEntry };
}

const NAME = "apotheca";
let opening: Promise<IDBPDatabase<ApothecaDB>> | null = null;

export function db(): Promise<IDBPDatabase<ApothecaDB>> {
  opening ??= openDB<ApothecaDB>(NAME, 2, {
    async upgrade(database, oldVersion, _newVersion, transaction) {
      if (oldVersion < 1) {
        const outbox = database.createObjectStore("outbox", { keyPath: "seq", autoIncrement: true });
        outbox.createIndex("byStatus", "status");
        database.createObjectStore("cache", { keyPath: "key" });
      }
      if (oldVersion === 1) {
        // Version 1 queued only scans, as `input`: keep them, in the general shape.
        const store = transaction.objectStore("outbox");
        for (let cursor = await store.openCursor(); cursor; cursor = await cursor.continue()) {
          const { input, ...rest } = cursor.value as OutboxEntry & { input?: unknown };
          if (input) await cursor.update({ ...rest, operation: "recordScan", variables: { input } });
        }
      }
    },
    blocking() {
      // Another tab wants a newer version (or to delete): let it.
      void opening?.then((d) => d.close());
      opening = null;
    },
  });
  return opening;
}

export async function cacheGet<T>(key: string, username: string): Promise<T | undefined> {
  try {
    const entry = await (await db()).get("cache", key);
    return entry && entry.username === username ? (entry.value as T) : undefined;
  } catch {
    return undefined;
  }
}

export async function cachePut(key: string, username: string, value: unknown): Promise<void> {
  try {
    const database = await db();
    // A request that finishes after sign-out must not leave the old user's data behind: checked
    // right before the write's transaction starts, so it is ordered after sign-out's clear.
    if (me.value?.username !== username || signingOut.value) return;
    await database.put("cache", { key, username, savedAt: Date.now(), value });
  } catch {
    // A full or unavailable store only costs the offline copy.
  }
}

/** Sign-out: forget everything this device kept for the user. */
export async function clearAll(): Promise<void> {
  const database = await db();
  const tx = database.transaction(["outbox", "cache"], "readwrite");
  await Promise.all([tx.objectStore("outbox").clear(), tx.objectStore("cache").clear(), tx.done]);
}
