// The login page: username and password → bearer token in localStorage → the user's own screen.
import { ApiError, homeFor, post, session } from "../api.js";
import { errorText } from "../dom.js";
import { initI18n, t } from "../i18n.js";
import { languageSwitch } from "../shell.js";

function safeNext(next) {
  // Only a path on this server: never an absolute URL (no open redirect).
  // "/" is the launcher: after a login the user's own screen serves better.
  if (!next || next === "/" || !next.startsWith("/") || next.startsWith("//") || next.startsWith("/login")) return null;
  return next;
}

async function main() {
  await initI18n();
  document.getElementById("lang-slot").append(languageSwitch());
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  const submit = document.getElementById("login-submit");
  const next = safeNext(new URLSearchParams(location.search).get("next"));
  if (session.token()) {
    // Still logged in (a wall PC after a restart): straight on, if the token is still good.
    try {
      const me = await fetch("/api/v1/auth/me", { headers: { Authorization: `Bearer ${session.token()}` } });
      if (me.ok) {
        const user = await me.json();
        session.save(session.token(), user);
        location.replace(next || homeFor(user.role));
        return;
      }
    } catch {
      /* offline: show the form */
    }
    session.clear();
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    const username = form.username.value.trim();
    const password = form.password.value;
    if (!username || !password) {
      error.textContent = t("login.missing");
      error.hidden = false;
      return;
    }
    submit.disabled = true;
    try {
      const r = await post("/api/v1/auth/login", { username, password });
      session.save(r.token, r.user);
      location.assign(next || homeFor(r.user.role));
    } catch (err) {
      error.textContent = err instanceof ApiError && err.status === 401 ? t("login.bad_credentials") : errorText(err);
      error.hidden = false;
      form.password.select();
    } finally {
      submit.disabled = false;
    }
  });
}

main();
