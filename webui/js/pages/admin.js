// Administration (/admin, admins): the emergency plans of the jurisdiction (read as a person reads a
// plan, edited as the JSON the API takes, each save a new version) and the contacts a plan's notices
// reach (mobile for SMS and calls, deputy for escalation). The server checks every rule; this page
// shows what it says, field by field.
import { api, get } from "../api.js";
import { debounce, errorText, fmtDateTime, h, toast } from "../dom.js";
import { isEnglish, onLanguageChange, t } from "../i18n.js";
import { pick } from "../model.js";
import { startPage, topBar } from "../shell.js";

const LEVELS = ["IV", "III", "II", "I"];
// What the API adds to a plan; the editor shows only what an admin writes.
const SERVER_FIELDS = ["id", "version", "source", "created_at", "updated_at", "versions", "org_name", "org_name_en"];
const S = { user: null, tab: "plans", plans: [], plan: null, editing: null, taxonomy: new Map(), units: [], contacts: [], after: null, q: "" };
// The department kinds of dispatchd.domain.orgs.DEPARTMENT_KINDS, as a plan's members name them.
const DEPARTMENT_KINDS = [
  "police", "justice", "work_safety", "fire", "environment", "market", "enforcement", "social_security", "petition",
  "emergency_squad", "civil_affairs", "health", "transport", "water", "housing", "education", "other",
];

// -- tabs ---------------------------------------------------------------------------------------

// A tab chosen before the page has started is shown once it has.
for (const tab of ["plans", "contacts"]) {
  document.getElementById(`tab-${tab}`).addEventListener("click", () => {
    if (!S.user) S.tab = tab;
  });
}

function showTab(name) {
  for (const tab of ["plans", "contacts"]) {
    document.getElementById(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    document.getElementById(`pane-${tab}`).hidden = tab !== name;
  }
  if (name === "contacts" && !S.contacts.length) loadContacts(true);
}

// -- plans --------------------------------------------------------------------------------------

const names = (o) => pick({ name: o.name, name_en: o.name_en }, o.code || "");
// Punctuation of the language shown: 、（）：in Chinese, ", ( ):" in English.
const joined = (items) => items.join(isEnglish() ? ", " : "、");
const paren = (text) => (isEnglish() ? ` (${text})` : `（${text}）`);
const colon = () => (isEnglish() ? ": " : "：");

// Names are picked when drawn, so that a change of language renames them too.
const category = (code) => pick(S.taxonomy.get(code), code);

async function loadPlans() {
  try {
    S.plans = (await get("/api/v1/plans")).plans || [];
  } catch (err) {
    toast(errorText(err), "error");
    return;
  }
  renderPlans();
}

// The unit a plan belongs to, by name (the server adds the names to the plan).
const orgName = (p) => pick({ name: p.org_name, name_en: p.org_name_en }, p.org);

function renderPlans() {
  const table = document.getElementById("plans-table");
  if (!S.plans.length) {
    table.replaceChildren(h("tbody", h("tr", h("td.muted", { colspan: 5 }, t("admin.no_plans")))));
    return;
  }
  table.replaceChildren(
    h("thead", h("tr", ["admin.plan_name", "admin.plan_org", "admin.plan_trigger", "admin.plan_version", "admin.plan_updated"].map((k) => h("th", t(k))))),
    h(
      "tbody",
      S.plans.map((p) =>
        h(
          "tr.plan-row",
          { dataset: { code: p.code }, "aria-selected": String(S.plan?.code === p.code), onclick: () => openPlan(p.id) },
          h("td", h("strong", names(p)), h("div.muted", p.code)),
          h("td", orgName(p)),
          h("td", triggerText(p.trigger)),
          h("td", `v${p.version}`, " ", h("span.muted", t(`admin.source_${p.source}`))),
          h("td", fmtDateTime(p.updated_at)),
        ),
      ),
    ),
  );
}

function triggerText(trigger) {
  if (!trigger) return t("admin.by_hand");
  const parts = [];
  if (trigger.categories?.length) parts.push(joined(trigger.categories.map(category)));
  if (trigger.warning_events?.length) parts.push(t("admin.on_warning", { events: joined(eventNames(trigger.warning_events)) }));
  if (trigger.level) parts.push(t(`plan.level_${trigger.level}`));
  return parts.join(" · ") || t("admin.by_hand");
}

/** A trigger's warning events as this language names them (a plan lists Chinese and English names
 * and GB/T 35965.1 codes alike; the codes are shown only when no name is). */
function eventNames(events) {
  const named = events.filter((e) => !/^\d/.test(e));
  const cjk = named.filter((e) => /[\u4e00-\u9fff]/.test(e));
  const latin = named.filter((e) => !/[\u4e00-\u9fff]/.test(e));
  const mine = isEnglish() ? latin : cjk;
  return mine.length ? mine : named.length ? named : events;
}

async function openPlan(id) {
  try {
    S.plan = await get(`/api/v1/plans/${id}`);
  } catch (err) {
    toast(errorText(err), "error");
    return;
  }
  S.editing = null;
  renderPlans();
  renderDetail();
}

function who(sel) {
  const whom = sel.user || (sel.role ? t(`role.${sel.role}`) : sel.department ? t(`admin.dept_${sel.department}`) : "");
  return sel.at ? `${t(`admin.at_${sel.at}`)} ${whom}` : whom;
}

function levelView(lv, level) {
  const list = (title, items) => (items.length ? h("div.plan-part", h("h4", title), h("ul", items.map((x) => h("li", x)))) : null);
  return h(
    "section.plan-tier",
    { dataset: { lv } },
    h("h3", t(`plan.level_${lv}`)),
    level.description ? h("p", level.description) : null,
    list(
      t("plan.groups"),
      (level.groups || []).map((g) => [h("strong", pick({ name: g.name, name_en: g.name_en })), colon(), joined((g.members || []).map((m) => `${pick({ name: m.label, name_en: m.label_en })}${paren(who(m))}`))]),
    ),
    list(
      t("plan.orders"),
      (level.forces || []).map((f) => `${t(`plan.kind_${f.kind}`)} × ${f.count}${f.instructions ? ` — ${f.instructions}` : ""}`),
    ),
    level.consult ? list(t("plan.meeting"), [`${level.consult.title}${paren(joined((level.consult.invite || []).map((x) => t(`admin.at_${x}`))))}`]) : null,
    list(
      t("plan.notices"),
      (level.notices || []).map((n) => `${who(n)}${colon()}${n.text}${paren(joined((n.via || []).map((v) => t(`plan.via_${v}`))))}${n.deputy ? ` · ${t("admin.deputy")} ${who(n.deputy)}` : ""}`),
    ),
    list(
      t("plan.checklist"),
      (level.steps || []).map((s) => `${s.title}${paren(t("admin.within", { d: s.within }))}`),
    ),
  );
}

// The order a person reads a plan in; what the server added is left out.
const FIELD_ORDER = ["code", "name", "name_en", "org", "description", "trigger", "levels"];

function definition(plan) {
  const body = {};
  for (const k of FIELD_ORDER) if (plan[k] !== undefined) body[k] = plan[k];
  for (const [k, v] of Object.entries(plan)) if (!(k in body) && !SERVER_FIELDS.includes(k)) body[k] = v;
  if (body.levels) {
    // The first response level first (Ⅳ, the one a plan usually starts at), then the higher ones.
    const levels = {};
    for (const lv of LEVELS) if (body.levels[lv] !== undefined) levels[lv] = body.levels[lv];
    for (const [lv, v] of Object.entries(body.levels)) if (!(lv in levels)) levels[lv] = v;
    body.levels = levels;
  }
  return body;
}

function renderDetail() {
  const box = document.getElementById("plan-detail");
  const p = S.plan;
  if (S.editing) {
    box.hidden = false;
    box.replaceChildren(editorView());
    return;
  }
  if (!p) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  box.replaceChildren(
    h(
      "div.panel-head",
      h("span", names(p)),
      h("span.muted", `v${p.version}`),
      h("div.spacer"),
      h("button.btn.btn-small#plan-edit", { type: "button", onclick: () => edit(p) }, t("admin.edit")),
    ),
    h(
      "div.panel-body",
      p.description ? h("p", p.description) : null,
      h("p", h("strong", t("admin.plan_org")), colon(), orgName(p)),
      h("p", h("strong", t("admin.plan_trigger")), colon(), triggerText(p.trigger)),
      ...LEVELS.filter((lv) => p.levels?.[lv]).map((lv) => levelView(lv, p.levels[lv])),
      h(
        "details.plan-versions",
        h("summary", t("admin.versions", { n: (p.versions || []).length })),
        h("ul", (p.versions || []).map((v) => h("li", `v${v.version} · ${t(`admin.source_${v.source}`)} · ${fmtDateTime(v.created_at)}`))),
      ),
    ),
  );
}

const TEMPLATE = {
  code: "new-plan",
  name: "新预案",
  name_en: "new plan",
  org: "",
  trigger: { categories: [], priorities: ["P1"], min_reports: 1, level: "IV" },
  levels: {
    IV: {
      groups: [{ name: "现场处置组", members: [{ label: "组长", role: "leader", at: "township" }] }],
      forces: [{ kind: "team", count: 1, instructions: "前往现场处置" }],
      notices: [{ role: "leader", at: "township", via: ["console", "sms"], text: "预案已启动，请到指挥室" }],
      steps: [{ type: "report", title: "报告县指挥中心", within: "10m" }],
    },
  },
};

function edit(plan) {
  const body = plan ? definition(plan) : { ...TEMPLATE, org: S.user.org };
  S.editing = { text: JSON.stringify(body, null, 2), errors: null, creating: !plan };
  renderDetail();
  document.getElementById("plan-json").focus();
}

function editorView() {
  const e = S.editing;
  const area = h("textarea#plan-json", { spellcheck: "false", rows: 28, "aria-label": t("admin.plan_json") }, e.text);
  area.addEventListener("input", () => (e.text = area.value));
  const errors = h("div#plan-errors", { role: "alert", hidden: !e.errors }, e.errors ? renderErrors(e.errors) : null);
  return h(
    "form.plan-editor",
    { onsubmit: (ev) => (ev.preventDefault(), save()) },
    h("div.panel-head", h("span", e.creating ? t("admin.plan_new") : t("admin.edit_plan", { name: names(S.plan) })), h("div.spacer")),
    h(
      "div.panel-body.plan-editor-body",
      h("p.muted", t("admin.json_hint")),
      area,
      codeReference(),
      errors,
      h(
        "div.editor-actions",
        h("button.btn.btn-primary#plan-save", { type: "submit" }, t("admin.save")),
        h("button.btn", { type: "button", onclick: () => ((S.editing = null), renderDetail()) }, t("admin.cancel")),
      ),
    ),
  );
}

/** What the JSON's codes mean: case categories, the jurisdiction's units (to the villages), the
 * levels, roles, department kinds, squad kinds and step types — looked up, not remembered. */
function codeReference() {
  const list = (title, rows) =>
    h("details.code-ref-part", h("summary", title), h("table.admin-table", h("tbody", rows.map(([code, name]) => h("tr", h("td", h("code", code)), h("td", name))))));
  const levels = ["province", "city", "county", "township", "community", "grid"];
  return h(
    "div.code-ref#code-ref",
    h("h4", t("admin.codes")),
    list(t("admin.codes_categories"), [...S.taxonomy.keys()].map((code) => [code, category(code)])),
    list(t("admin.codes_units"), S.units.map((u) => [u.code, `${pick({ name: u.name, name_en: u.name_en }, u.code)} · ${t(`admin.at_${u.level}`)}`])),
    list(t("admin.codes_levels"), levels.map((lv) => [lv, t(`admin.at_${lv}`)])),
    list(t("admin.codes_roles"), ["leader", "duty_officer", "department_handler", "grid_worker", "squad_member"].map((r) => [r, t(`role.${r}`)])),
    list(t("admin.codes_departments"), DEPARTMENT_KINDS.map((k) => [k, t(`admin.dept_${k}`)])),
    list(t("admin.codes_kinds"), ["team", "vehicle", "motorbike", "ebike", "person"].map((k) => [k, t(`plan.kind_${k}`)])),
  );
}

function renderErrors(errors) {
  if (typeof errors === "string") return h("p.field-error", errors);
  return [h("p.field-error", errors.message), h("ul.field-error", Object.entries(errors.fields || {}).map(([k, v]) => h("li", h("code", k), colon(), String(v))))];
}

async function save() {
  const e = S.editing;
  let body;
  try {
    body = JSON.parse(e.text);
  } catch (err) {
    e.errors = t("admin.bad_json", { error: err.message });
    renderDetail();
    return;
  }
  const button = document.getElementById("plan-save");
  button.disabled = true;
  try {
    const saved = await api("POST", "/api/v1/plans", { body });
    toast(t("admin.saved", { name: names(saved), version: saved.version }), "ok");
    S.editing = null;
    await loadPlans();
    await openPlan(saved.id);
  } catch (err) {
    e.errors = err.fields ? { message: err.message, fields: err.fields } : errorText(err);
    renderDetail();
  }
}

// -- contacts -----------------------------------------------------------------------------------

async function loadContacts(fresh) {
  if (fresh) {
    S.contacts = [];
    S.after = null;
  }
  try {
    const r = await get("/api/v1/plan-contacts", { q: S.q || undefined, after: S.after ?? undefined });
    S.contacts = [...S.contacts, ...(r.contacts || [])];
    S.after = r.next_after;
  } catch (err) {
    toast(errorText(err), "error");
    return;
  }
  renderContacts();
}

function placeOf(c) {
  const org = pick({ name: c.org_name, name_en: c.org_name_en }, c.org);
  return c.department_name ? `${org} · ${pick({ name: c.department_name, name_en: c.department_name_en })}` : org;
}

function renderContacts() {
  const table = document.getElementById("contacts-table");
  document.getElementById("contacts-more").hidden = S.after === null || S.after === undefined;
  if (!S.contacts.length) {
    table.replaceChildren(h("tbody", h("tr", h("td.muted", { colspan: 5 }, t("admin.no_people")))));
    return;
  }
  table.replaceChildren(
    h("thead", h("tr", ["admin.person", "admin.role", "admin.place", "admin.mobile", "admin.deputy", ""].map((k) => h("th", k ? t(k) : "")))),
    h("tbody", S.contacts.map((c) => contactRow(c))),
  );
}

function contactRow(c) {
  return h(
    "tr.contact-row",
    { dataset: { user: c.user_id } },
    h("td", h("strong", c.name), c.name !== c.username ? h("div.muted", c.username) : null),
    h("td", t(`role.${c.role}`)),
    h("td", placeOf(c)),
    h("td.mobile", c.mobile || h("span.muted", t("admin.none"))),
    h("td.deputy", c.deputy_name || h("span.muted", t("admin.none"))),
    h("td", h("button.btn.btn-small.contact-edit", { type: "button", onclick: (ev) => editContact(c, ev.target.closest("tr")) }, t("admin.edit"))),
  );
}

function editContact(c, row) {
  const mobile = h("input.contact-mobile", { type: "tel", inputmode: "tel", maxlength: 20, placeholder: c.mobile ? t("admin.mobile_keep", { mobile: c.mobile }) : t("admin.mobile_hint"), "aria-label": t("admin.mobile") });
  const clear = h("label.check", h("input.contact-clear", { type: "checkbox" }), t("admin.mobile_clear"));
  // The deputy is found by name among all the jurisdiction's people, not only those on this page.
  const deputy = h("select.contact-deputy", { "aria-label": t("admin.deputy") });
  const find = h("input.contact-deputy-q", { type: "search", maxlength: 64, placeholder: t("admin.deputy_search"), "aria-label": t("admin.deputy_search") });
  let chosenName = c.deputy_name;
  let selected = c.deputy_user_id ?? null;
  const fillDeputies = async (q) => {
    let people = [];
    try {
      people = ((await get("/api/v1/plan-contacts", { q: q || undefined, limit: 50 })).contacts || []).filter((x) => x.user_id !== c.user_id);
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
    }
    const current = selected;
    const options = [h("option", { value: "" }, t("admin.no_deputy"))];
    if (current && !people.some((x) => x.user_id === current)) options.push(h("option", { value: current }, chosenName || `#${current}`));
    for (const x of people) options.push(h("option", { value: x.user_id }, `${x.name} · ${t(`role.${x.role}`)} · ${placeOf(x)}`));
    deputy.replaceChildren(...options);
    deputy.value = current ? String(current) : "";
    deputy.dataset.loaded = "true";
  };
  deputy.addEventListener("change", () => {
    selected = deputy.value ? Number(deputy.value) : null;
    chosenName = deputy.selectedOptions[0]?.textContent.split(" · ")[0] || null;
  });
  find.addEventListener("input", debounce(() => fillDeputies(find.value.trim()), 250));
  const error = h("p.field-error", { role: "alert", hidden: true });
  const form = h(
    "form.contact-form",
    {
      onsubmit: async (ev) => {
        ev.preventDefault();
        // Only what changed is sent: an empty mobile box keeps the number on record.
        const change = {};
        if (clear.querySelector("input").checked) change.mobile = null;
        else if (mobile.value.trim()) change.mobile = mobile.value.trim();
        if (selected !== (c.deputy_user_id ?? null)) change.deputy_user_id = selected;
        if (!Object.keys(change).length) {
          renderContacts();
          return;
        }
        try {
          const saved = await api("PUT", `/api/v1/plan-contacts/${c.user_id}`, { body: change });
          Object.assign(c, { mobile: saved.mobile, deputy_user_id: saved.deputy_user_id, deputy_name: saved.deputy_user_id ? chosenName : null });
          toast(t("admin.contact_saved", { name: c.name }), "ok");
          renderContacts();
        } catch (err) {
          error.textContent = errorText(err);
          error.hidden = false;
        }
      },
    },
    h("label.field", h("span", t("admin.mobile")), mobile),
    clear,
    h("label.field", h("span", t("admin.deputy")), find, deputy),
    h("div.editor-actions", h("button.btn.btn-primary.btn-small.contact-save", { type: "submit" }, t("admin.save")), h("button.btn.btn-small", { type: "button", onclick: renderContacts }, t("admin.cancel"))),
    error,
  );
  row.replaceChildren(h("td", { colspan: 6 }, h("strong", c.name), form));
  fillDeputies("");
  mobile.focus();
}

// -- start --------------------------------------------------------------------------------------

function flattenTaxonomy(list) {
  for (const c of list) {
    S.taxonomy.set(c.code, c.name);
    flattenTaxonomy(c.children || []);
  }
}

async function main() {
  const { user, config } = await startPage({ roles: ["admin"] });
  S.user = user;
  document.getElementById("top").replaceWith(topBar(user, { current: "/admin", titleKey: "admin.heading" }));
  for (const tab of ["plans", "contacts"]) document.getElementById(`tab-${tab}`).addEventListener("click", () => showTab(tab));
  if (S.tab === "contacts") showTab("contacts"); // chosen while the page was starting
  document.getElementById("plan-new").addEventListener("click", () => edit(null));
  document.getElementById("contacts-more").addEventListener("click", () => loadContacts(false));
  const search = debounce(() => loadContacts(true), 300);
  document.getElementById("contact-q").addEventListener("input", (ev) => {
    S.q = ev.target.value.trim();
    search();
  });
  if (config.features.taxonomy) {
    try {
      flattenTaxonomy(await get("/api/v1/taxonomy"));
    } catch (err) {
      toast(errorText(err), "error");
    }
  }
  try {
    S.units = ((await get("/api/v1/orgs", { depth: 2 })).units || []).filter((u) => u.level !== "grid");
  } catch (err) {
    toast(errorText(err), "error");
  }
  await loadPlans();
  onLanguageChange(() => {
    renderPlans();
    renderDetail();
    renderContacts();
  });
}

main();
