// Sign-in, tokens and the signed-in user.
//
// The refresh token (rotated on every use) lives only in an httpOnly, Secure, SameSite=Strict
// cookie scoped to /auth that the server sets when we send REFRESH_COOKIE_HEADER: no script
// can read it. The access token (15 minutes) lives in memory only, so a reload or a new tab
// starts with a refresh through the cookie. Only the signed-in user's profile (no token) is in
// localStorage, so the app can open offline with the last user.
// Refreshing runs under a Web Lock: two tabs presenting the same refresh cookie would make the
// server revoke the whole sign-in (a spent refresh token is treated as stolen).
import { signal } from "@preact/signals";
import type { MeQuery } from "../gql/graphql";

export type Me = MeQuery["me"];

const ME = "apotheca.me";
/** Asks /auth/token and /auth/revoke to use the refresh cookie instead of the JSON body. */
const REFRESH_COOKIE_HEADER = { "X-Apotheca-Refresh-Cookie": "1" };

/** The access token, in memory only (never in any storage). */
let access: { token: string; expires: number } | null = null;

/** The signed-in user, or null. Set from storage at start so the app opens offline. */
export const me = signal<Me | null>(readMe());
/** True while signing out: nothing may be cached for the user any more. */
export const signingOut = signal(false);
/** Set when the server refused our refresh token: the user must sign in again. */
export const sessionExpired = signal(false);

function readMe(): Me | null {
  try {
    const raw = localStorage.getItem(ME);
    return raw ? (JSON.parse(raw) as Me) : null;
  } catch {
    return null;
  }
}

export class AuthError extends Error {}
export class NetworkError extends Error {}

interface TokenResponse {
  access_token: string;
  expires_in: number;
}

async function tokenRequest(form: Record<string, string>): Promise<TokenResponse> {
  let response: Response;
  try {
    response = await fetch("/auth/token", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", ...REFRESH_COOKIE_HEADER },
      body: new URLSearchParams(form),
      cache: "no-store",
      credentials: "same-origin",
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
  access = { token: tokens.access_token, expires: Date.now() + tokens.expires_in * 1000 };
}

function freshAccessToken(): string | null {
  return access && access.expires - 30_000 > Date.now() ? access.token : null;
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
    // An earlier call in this tab may have refreshed while we waited for the lock.
    const current = freshAccessToken();
    if (current && current !== stale) return current;
    if (!me.value && !localStorage.getItem(ME)) throw new AuthError("not signed in");
    try {
      // No refresh_token field: the server reads the httpOnly cookie.
      const tokens = await tokenRequest({ grant_type: "refresh_token" });
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
  if (!localStorage.getItem(ME) || me.value?.username !== user.username) return;
  localStorage.setItem(ME, JSON.stringify(user));
  me.value = user;
}

/** Revoke the refresh cookie (best effort; the server clears it) and forget the user. */
export async function forgetSession(): Promise<void> {
  localStorage.removeItem(ME);
  access = null;
  me.value = null;
  sessionExpired.value = false;
  await fetch("/auth/revoke", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", ...REFRESH_COOKIE_HEADER },
    body: new URLSearchParams({}),
    credentials: "same-origin",
  }).catch(() => undefined);
}
