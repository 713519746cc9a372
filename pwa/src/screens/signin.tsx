import { useSignal } from "@preact/signals";
import { MeDocument } from "../gql/graphql";
import { AuthError, NetworkError, me, sessionExpired, signIn } from "../lib/auth";
import { request } from "../lib/graphql";

export function SignIn() {
  const username = useSignal(me.value?.username ?? "");
  const password = useSignal("");
  const error = useSignal<string | null>(null);
  const busy = useSignal(false);

  async function submit(event: Event) {
    event.preventDefault();
    busy.value = true;
    error.value = null;
    try {
      await signIn(username.value.trim(), password.value, async () => (await request(MeDocument)).me);
      password.value = "";
    } catch (e) {
      error.value =
        e instanceof AuthError
          ? "Wrong username or password."
          : e instanceof NetworkError
            ? "Cannot reach the server. Signing in needs a connection."
            : (e as Error).message;
    } finally {
      busy.value = false;
    }
  }

  return (
    <main id="main" class="signin">
      <img class="logo" src="/icons/icon-192.png" alt="" width={72} height={72} />
      <h1 class="center">Sign in to Apotheca</h1>
      {sessionExpired.value && (
        <p class="notice pending" role="status">
          Your session has ended. Sign in again; scans waiting on this device will then be sent.
        </p>
      )}
      <form onSubmit={submit} class="card">
        <label for="username">
          Username
          <input
            id="username"
            name="username"
            autoComplete="username"
            autoCapitalize="none"
            spellcheck={false}
            required
            value={username.value}
            onInput={(e) => (username.value = (e.target as HTMLInputElement).value)}
          />
        </label>
        <label for="password">
          Password
          <input
            id="password"
            name="password"
            type="password"
            autoComplete="current-password"
            required
            value={password.value}
            onInput={(e) => (password.value = (e.target as HTMLInputElement).value)}
          />
        </label>
        {error.value && (
          <p class="error" role="alert">
            {error.value}
          </p>
        )}
        <button type="submit" class="primary big" disabled={busy.value}>
          {busy.value ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
