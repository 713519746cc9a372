// Sign-in, tokens and the signed-in user.
//
// The access token (15 minutes) and the refresh token (rotated on every use) live in
// localStorage so every tab shares them and the app can start offline with the last user.
// Refreshing runs under a Web Lock: two tabs presenting the same refresh token would make the
// server revoke the whole sign-in (a spent refresh token is treated as stolen).
import { signal } from "@preact/signals";
import type { MeQuery } from "../gql/graphql";

export type Me = MeQuery["me"];

const ACCESS = "apotheca.access";
const ACCESS_EXPIRES = "apotheca.accessExpires";
const REFRESH = "apotheca.refresh";
const ME = "apotheca.me";

/** The signed-in user, or null. Set from storage at start so the app opens offline. */
export const me = signal<Me | null>(readMe());
/** True while signing out: nothing may be cached for the user any more. */
export const signingOut = signal(false);
/** Set when the server refused our refresh token: the user must sign in again. */
export const sessionExpired = signal(false);

function readMe(): Me | null {
  try {
    const raw = localStorage.getItem(ME);
    return raw && localStorage.getItem(REFRESH) ? (JSON.parse(raw) as Me) : null;
  } catch {
    return null;
  }
}

export class AuthError extends Error {}
export class NetworkError extends Error {}

interface TokenResponse {
  access_token: string;
  refresh_token: string;
  expires_in: number;
}

async function tokenRequest(form: Record<string, string>): Promise<TokenResponse> {
  let response: Response;
  try {
    response = await fetch("/auth/token", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(form),
      cache: "no-store",
    });
  } catch (error) {
    throw new NetworkError(`cannot reach the server: ${(error as Error).message}`);
  }
  if (response.status >= 500) throw new NetworkError(`server error ${response.status}`);
  const body = (await response.json().catch(() => ({}))) as Partial<TokenResponse> & {
    error?: string;
    error_description?: string;
  };
  if (!response.ok || !body.access_token) {
    throw new AuthError(body.error_description || body.error || `sign-in failed (${response.status})`);
  }
  return body as TokenResponse;
}

function store(tokens: TokenResponse): void {
  localStorage.setItem(ACCESS, tokens.access_token);
  localStorage.setItem(ACCESS_EXPIRES, String(Date.now() + tokens.expires_in * 1000));
  localStorage.setItem(REFRESH, tokens.refresh_token);
}

function freshAccessToken(): string | null {
  const token = localStorage.getItem(ACCESS);
  const expires = Number(localStorage.getItem(ACCESS_EXPIRES) || 0);
  return token && expires - 30_000 > Date.now() ? token : null;
}

/** Run `task` holding a lock shared by all tabs (falls back to no lock without Web Locks). */
export function withLock<T>(name: string, task: () => Promise<T>): Promise<T> {
  if (typeof navigator !== "undefined" && navigator.locks) {
    return navigator.locks.request(name, task) as Promise<T>;
  }
  return task();
}

let refreshing: Promise<string> | null = null;

/** Trade the refresh token for a new pair. Throws AuthError when the sign-in is over. */
export function refreshAccessToken(stale?: string): Promise<string> {
  refreshing ??= withLock("apotheca-auth", async () => {
    // Another tab may have refreshed while we waited for the lock.
    const current = freshAccessToken();
    if (current && current !== stale) return current;
    const refreshToken = localStorage.getItem(REFRESH);
    if (!refreshToken) throw new AuthError("not signed in");
    try {
      const tokens = await tokenRequest({ grant_type: "refresh_token", refresh_token: refreshToken });
      store(tokens);
      sessionExpired.value = false;
      return tokens.access_token;
    } catch (error) {
      if (error instanceof AuthError) sessionExpired.value = true;
      throw error;
    }
  }).finally(() => {
    refreshing = null;
  });
  return refreshing;
}

/** A valid access token, refreshed when it is about to expire. */
export async function accessToken(): Promise<string> {
  return freshAccessToken() ?? refreshAccessToken();
}

export async function signIn(username: string, password: string, loadMe: () => Promise<Me>): Promise<Me> {
  const tokens = await tokenRequest({ grant_type: "password", username, password });
  const previous = me.value?.username;
  store(tokens);
  const user = await loadMe();
  localStorage.setItem(ME, JSON.stringify(user));
  sessionExpired.value = false;
  if (previous && previous !== user.username) me.value = null;
  me.value = user;
  return user;
}

/** Keep the cached user up to date (roles or locations may have changed). */
export function rememberMe(user: Me): void {
  // Not after sign-out, nor for someone else than who is signed in now.
  if (!localStorage.getItem(REFRESH) || me.value?.username !== user.username) return;
  localStorage.setItem(ME, JSON.stringify(user));
  me.value = user;
}

/** Revoke the refresh token (best effort) and forget the user and every token. */
export async function forgetSession(): Promise<void> {
  const refreshToken = localStorage.getItem(REFRESH);
  for (const key of [ACCESS, ACCESS_EXPIRES, REFRESH, ME]) localStorage.removeItem(key);
  me.value = null;
  sessionExpired.value = false;
  if (refreshToken) {
    await fetch("/auth/revoke", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ token: refreshToken }),
    }).catch(() => undefined);
  }
}
