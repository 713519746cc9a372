// GraphiQL on our own origin (no CDN), for signed-in people only. The page itself holds no
// data; every query carries an access token kept in memory. It is obtained with the PWA's
// httpOnly refresh cookie (scoped to /auth, so it reaches /auth/token but never /graphql) or,
// when there is none, with the sign-in form. Refreshes share the PWA's Web Lock so two tabs
// never spend the same refresh token.
"use strict";
(function () {
  const COOKIE = { "X-Apotheca-Refresh-Cookie": "1" };
  let access = null;

  async function tokenRequest(form) {
    const response = await fetch("/auth/token", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", ...COOKIE },
      body: new URLSearchParams(form),
      credentials: "same-origin",
      cache: "no-store",
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok || !body.access_token) {
      throw new Error(body.error_description || body.error || `sign-in failed (${response.status})`);
    }
    access = { token: body.access_token, expires: Date.now() + body.expires_in * 1000 };
    return access.token;
  }

  function withLock(task) {
    return navigator.locks ? navigator.locks.request("apotheca-auth", task) : task();
  }

  function token() {
    if (access && access.expires - 30000 > Date.now()) return Promise.resolve(access.token);
    return withLock(() => tokenRequest({ grant_type: "refresh_token" }));
  }

  async function fetcher(params) {
    const response = await fetch("/graphql", {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/graphql-response+json, application/json",
        Authorization: `Bearer ${await token()}`,
      },
      body: JSON.stringify(params),
      cache: "no-store",
    });
    return response.json();
  }

  const form = document.getElementById("signin");

  function start() {
    form.hidden = true;
    const root = ReactDOM.createRoot(document.getElementById("graphiql"));
    root.render(React.createElement(GraphiQL, { fetcher, shouldPersistHeaders: false }));
    document.documentElement.dataset.ready = "graphiql";
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    try {
      await tokenRequest({ grant_type: "password", username: String(data.get("username")).trim(), password: String(data.get("password")) });
      start();
    } catch (error) {
      document.getElementById("signin-error").textContent = error.message;
    }
  });

  token().then(start, () => {
    form.hidden = false;
    document.documentElement.dataset.ready = "signin";
  });
})();
