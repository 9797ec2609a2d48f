// What every page does first: load the dictionary, check the session, fetch the UI settings, and
// draw the top bar (title, navigation, user, language switch, live indicator).
import { homeFor, logout, requireSession, uiConfig } from "./api.js";
import { h } from "./dom.js";
import { applyI18n, initI18n, lang, localName, onLanguageChange, setLanguage, t } from "./i18n.js";

const NAV = [
  ["/board", "nav.board", ["duty_officer", "leader", "admin", "ops", "department_handler"]],
  ["/console", "nav.console", ["duty_officer", "leader", "admin", "department_handler"]],
  ["/stats", "nav.stats", ["duty_officer", "leader", "admin", "ops", "department_handler"]],
  ["/grid", "nav.grid", ["grid_worker", "admin"]],
  ["/squad", "nav.squad", ["squad_member", "admin"]],
  ["/admin", "nav.admin", ["admin"]],
];

/**
 * Start a page: returns {user, config}. With `roles`, a user of another role is told so and
 * offered their own page instead of a screen full of 403s.
 */
export async function startPage({ roles } = {}) {
  await initI18n();
  const user = await requireSession();
  const config = await uiConfig();
  if (roles && !roles.includes(user.role) && user.role !== "admin") {
    document.body.replaceChildren(
      h(
        "main.wrong-role",
        h("h1", t("shell.wrong_role")),
        h("p", t("shell.wrong_role_hint", { role: t(`role.${user.role}`) })),
        h("p", h("a.btn.btn-primary", { href: homeFor(user.role) }, t("shell.go_home"))),
        h("p", h("button.btn", { type: "button", onclick: logout }, t("shell.logout"))),
      ),
    );
    return new Promise(() => {}); // this page does nothing more for this user
  }
  return { user, config };
}

/** The live indicator: a dot and a word; the page calls set(status). */
export function liveIndicator() {
  const dot = h("span.live-dot");
  const label = h("span.live-label");
  const el = h("div.live", { role: "status", "aria-live": "polite", dataset: { status: "connecting" } }, dot, label);
  const set = (status) => {
    el.dataset.status = status;
    label.textContent = t(`live.${status}`);
  };
  set("connecting");
  onLanguageChange(() => set(el.dataset.status));
  return { el, set };
}

export function languageSwitch() {
  const b = h("button.lang-switch", { type: "button", title: "中文 / English" });
  const label = () => (b.textContent = lang() === "en" ? "中文" : "EN");
  label();
  b.addEventListener("click", async () => {
    await setLanguage(lang() === "en" ? "zh-CN" : "en");
    label();
  });
  return b;
}

/** The top bar of the officer pages. `extra` elements go before the user block. */
export function topBar(user, { current, titleKey, extra = [] } = {}) {
  const nav = h(
    "nav.nav",
    NAV.filter(([, , roles]) => roles.includes(user.role)).map(([href, key]) =>
      h("a", { href, class: href === current ? "active" : "", dataset: { i18n: key } }, t(key)),
    ),
  );
  // Where the person works, by name: the department for a department handler, else the unit.
  const place = () =>
    user.department_name ? localName({ name: user.department_name, name_en: user.department_name_en }) : localName({ name: user.org_name, name_en: user.org_name_en });
  const who = h("span.who", `${user.display_name || user.name || user.username} · `, h("span.who-org", place()));
  onLanguageChange(() => {
    who.lastChild.textContent = place();
  });
  const bar = h(
    "header.topbar",
    h("div.brand", h("img.brand-mark", { src: "/ui/img/icon.svg", alt: "" }), h("span", { dataset: { i18n: titleKey || "app.name" } }, t(titleKey || "app.name"))),
    nav,
    h("div.spacer"),
    ...extra,
    who,
    languageSwitch(),
    h("button.btn.btn-ghost", { type: "button", onclick: logout, dataset: { i18n: "shell.logout" } }, t("shell.logout")),
  );
  applyI18n(bar);
  return bar;
}
