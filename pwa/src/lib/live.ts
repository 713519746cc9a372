// Live data over graphql-transport-ws (graphql-ws). The access token goes in connection_init's
// payload as {token}. The client reconnects forever with exponential backoff (with jitter,
// capped at 30 s); every reconnect bumps `reconnects`, which screens watch to refetch what they
// may have missed while the socket was down.
import { signal } from "@preact/signals";
import { createClient, type Client } from "graphql-ws/client";
import type { TypedDocumentString } from "../gql/graphql";
import { accessToken } from "./auth";

export type LiveStatus = "idle" | "connecting" | "connected" | "offline";
export const liveStatus = signal<LiveStatus>("idle");
/** Incremented after every successful reconnect (not the first connect). */
export const reconnects = signal(0);

let client: Client | null = null;
let everConnected = false;

function backoff(retries: number): number {
  const base = Math.min(30_000, 500 * 2 ** retries);
  return base / 2 + Math.random() * (base / 2);
}

function url(): string {
  const { protocol, host } = window.location;
  return `${protocol === "https:" ? "wss:" : "ws:"}//${host}/graphql`;
}

function live(): Client {
  client ??= createClient({
    url: url(),
    lazy: true,
    lazyCloseTimeout: 3_000,
    keepAlive: 15_000,
    retryAttempts: Number.POSITIVE_INFINITY,
    shouldRetry: () => true,
    retryWait: (retries) => new Promise((resolve) => setTimeout(resolve, backoff(retries))),
    connectionParams: async () => {
      try {
        return { token: await accessToken() };
      } catch {
        return { token: "" }; // refused by the server; we retry with backoff
      }
    },
    on: {
      connecting: () => {
        liveStatus.value = everConnected ? "connecting" : "idle";
      },
      connected: (_socket, _payload, wasRetry) => {
        everConnected = true;
        liveStatus.value = "connected";
        if (wasRetry) reconnects.value++;
      },
      closed: (event) => {
        // 1000: closed on purpose (no subscriptions left, or sign-out); anything else: lost.
        const code = (event as CloseEvent | undefined)?.code;
        if (code === 1000 || !everConnected) liveStatus.value = "idle";
        else liveStatus.value = navigator.onLine ? "connecting" : "offline";
      },
    },
  });
  return client;
}

/** Subscribe; returns the unsubscribe function. Errors are reported, then retried by reconnect. */
export function subscribe<TResult, TVariables>(
  document: TypedDocumentString<TResult, TVariables>,
  variables: TVariables,
  next: (data: TResult) => void,
): () => void {
  return live().subscribe<TResult>(
    { query: document.toString(), variables: variables as Record<string, unknown> },
    {
      next: (result) => {
        if (result.data) next(result.data as TResult);
      },
      error: (error) => console.warn("subscription error", error),
      complete: () => undefined,
    },
  );
}

/** Close the socket (sign-out): the next subscribe opens a new one with the new user's token. */
export async function closeLive(): Promise<void> {
  const current = client;
  client = null;
  everConnected = false;
  liveStatus.value = "idle";
  if (current) await current.dispose();
}
