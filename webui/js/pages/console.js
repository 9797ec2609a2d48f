// The duty console (/console): the case list with filters, a case with its timeline, photos and
// the actions of the closed loop, duplicates, dispatch with the nearest squads, and the call queue.
// Keyboard first: J/K move, / searches, N registers a case, the action keys are on the buttons.
import { ApiError, get, post, withToken } from "../api.js";
import { BoardState, LIVE_CALL_STATES } from "../boardstate.js";
import { debounce, errorText, fmtDateTime, fmtDistance, fmtDuration, fmtTime, h, toast } from "../dom.js";
import { applyI18n, has, localName, onLanguageChange, t } from "../i18n.js";
import { serverNow } from "../clock.js";
import { cameraMarker, cameraSignature, openCameraViewer } from "../cameras.js";
import { LiveSocket } from "../live.js";
import { MapView } from "../map.js";
import {
  OPEN_STATES,
  PRIORITIES,
  caseMarker,
  casePoint,
  categoryName,
  channelName,
  isOpen,
  pick,
  prioBadge,
  stateBadge,
  stateName,
  unitMarker,
  unitPoint,
  unitSignature,
  unitStatusName,
} from "../model.js";
import { liveIndicator, startPage, topBar } from "../shell.js";
import { chime, unlock } from "../alarm.js";
import { VoiceSession } from "../voice.js";
import { MyNotices, PLAN_KEY, planSection, startDialogFor, stepTimer, useDialog } from "../plans.js";

// The loop's actions as the console offers them: key, look, dialog. Which of them a case offers to
// this user is the server's to say (the case's allowed_actions), never a copy of its rules here.
const ACTIONS = [
  ["accept", "a", "btn-primary", null],
  ["reject", "r", "", "reason"],
  ["merge", "m", "", "merge"],
  ["dispatch", "d", "btn-primary", "dispatch"],
  ["start", "s", "btn-primary", null],
  ["feedback", "f", "btn-primary", "feedback"],
  ["verify", "v", "btn-ok", "note"],
  ["reopen", "o", "", "reason"],
  ["close", "c", "btn-ok", "note"],
  ["evaluate", "l", "btn-primary", "evaluate"],
  ["assign", "g", "", "assign"],
  ["escalate", "e", "btn-danger", "reason"],
  // The 12345 controls: a department's own queue, the command centre pressing, the call back.
  ["sign", "i", "btn-primary", null],
  ["return", "t", "", "reason"],
  ["extend_request", "x", "", "extendRequest"],
  ["extend_decide", "y", "btn-primary", "extendDecide"],
  ["urge", "u", "", "note"],
  ["supervise", "p", "btn-danger", "note"],
  ["callback", "b", "btn-primary", "callback"],
].map(([name, key, style, dialog]) => ({ name, key, style, dialog }));

// The list's tabs; a tab whose query is null is not this user's ("本部门" needs a department,
// "待回访" is the duty desk's).
const TABS = [
  ["department", (u) => (u.department ? { department: u.department, state: OPEN_STATES.join(",") } : null)],
  ["open", () => ({ state: OPEN_STATES.join(",") })],
  ["reported", () => ({ state: "reported" })],
  ["overdue", () => ({ overdue: true })],
  ["callback", (u) => (["duty_officer", "admin"].includes(u.role) ? { state: "closed" } : null)],
  ["closed", () => ({ state: "closed,evaluated" })],
  ["all", () => ({})],
];

function tabsOfUser() {
  return TABS.filter(([, q]) => q(S.user) !== null);
}

const S = {
  user: null,
  config: null,
  taxonomy: [],
  units: new Map(), // org code -> unit (with departments)
  above: new Map(), // org code -> the units above this user's, by name
  tab: "open",
  prios: new Set(),
  q: "",
  items: [],
  next: null,
  selected: null,
  detail: null,
  // The jurisdiction as the change feed tells it: calls, alerts, ... (boardstate.js).
  live: new BoardState(),
  categoryNames: new Map(),
  available: false,
  newSinceLoad: 0,
  fresh: new Set(),
  voice: null, // the call or call out on this console's headset: {kind, id, session, status, hold, keys}
  voiceConfig: null,
};

let detailMap = null;
let listRequest = 0;

// -- list --------------------------------------------------------------------------------------

function listQuery() {
  const [, q] = TABS.find(([k]) => k === S.tab);
  return { ...q(S.user), priority: [...S.prios].join(","), q: S.q, limit: 50 };
}

async function loadList({ keepSelection = true } = {}) {
  const mine = ++listRequest;
  try {
    const r = await get("/api/v1/incidents", listQuery());
    if (mine !== listRequest) return;
    S.items = r.items || [];
    S.next = r.next_cursor;
    S.newSinceLoad = 0;
    document.getElementById("new-pill").hidden = true;
    renderList();
    if (!keepSelection || !S.selected) {
      if (S.items.length && !S.selected) selectCase(S.items[0].id, { focusList: false });
    }
  } catch (err) {
    toast(errorText(err), "error");
  }
}

async function loadMore() {
  if (!S.next) return;
  try {
    const r = await get("/api/v1/incidents", { ...listQuery(), cursor: S.next });
    S.items.push(...(r.items || []));
    S.next = r.next_cursor;
    renderList();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

function caseListItem(c) {
  const li = h(
    "li.case-item",
    { dataset: { id: c.id }, onclick: () => selectCase(c.id), role: "option", "aria-selected": String(String(c.id) === String(S.selected)) },
    prioBadge(c.priority),
    h("span.ci-title", categoryName(c)),
    h("span.ci-side", ...controlTags(c), c.overdue ? h("span.tag-overdue", t("case.overdue")) : null, stateBadge(c.state)),
    h("span.ci-meta", `${c.number} · ${placeOf(c)} · ${fmtDateTime(c.created_at)}`),
  );
  if (String(c.id) === String(S.selected)) li.classList.add("selected");
  if (S.fresh.has(String(c.id))) li.classList.add("fresh");
  return li;
}

/** The marks of the 12345 controls a case carries: under supervision, urged, a request for more time. */
function controlTags(c) {
  return [
    c.supervised ? h("span.tag-control.tag-supervised", t("console.tag_supervised")) : null,
    c.urged ? h("span.tag-control.tag-urged", t("console.tag_urged", { n: c.urged })) : null,
    c.extension ? h("span.tag-control", t("console.tag_extension")) : null,
  ].filter(Boolean);
}

function placeOf(c) {
  const where = c.grid || c.community || c.township;
  return c.address || (where ? pick(where, where.code || "") : "") || t("board.no_place");
}

function renderList() {
  const ul = document.getElementById("case-list");
  const els = S.items.map(caseListItem);
  if (!els.length) els.push(h("li.empty", t("console.no_cases")));
  if (S.next) els.push(h("li", h("button.btn.btn-small.load-more", { type: "button", onclick: loadMore }, t("console.load_more"))));
  ul.replaceChildren(...els);
  document.getElementById("case-total").textContent = S.items.length + (S.next ? "+" : "");
  S.fresh.clear();
}

function renderFilters() {
  const tabs = document.getElementById("state-tabs");
  tabs.replaceChildren(
    ...tabsOfUser().map(([key]) =>
      h(
        "button.tab",
        {
          type: "button",
          role: "tab",
          dataset: { tab: key },
          "aria-selected": String(S.tab === key),
          onclick: () => {
            S.tab = key;
            renderFilters();
            loadList();
          },
        },
        t(`console.tab_${key}`),
      ),
    ),
  );
  const chips = document.getElementById("prio-chips");
  chips.replaceChildren(
    ...PRIORITIES.map((p) =>
      h(
        "button.chip.prio-chip",
        {
          type: "button",
          dataset: { p },
          "aria-pressed": String(S.prios.has(p)),
          onclick: () => {
            if (S.prios.has(p)) S.prios.delete(p);
            else S.prios.add(p);
            renderFilters();
            loadList();
          },
        },
        p,
      ),
    ),
  );
}

function moveSelection(delta) {
  if (!S.items.length) return;
  let i = S.items.findIndex((c) => String(c.id) === String(S.selected));
  i = i < 0 ? 0 : Math.max(0, Math.min(S.items.length - 1, i + delta));
  selectCase(S.items[i].id);
}

// -- detail ------------------------------------------------------------------------------------

async function selectCase(id, { focusList = true } = {}) {
  S.selected = String(id);
  for (const li of document.querySelectorAll(".case-item")) {
    const on = li.dataset.id === S.selected;
    li.classList.toggle("selected", on);
    li.setAttribute("aria-selected", String(on));
    if (on && focusList) li.scrollIntoView({ block: "nearest" });
  }
  try {
    const c = await get(`/api/v1/incidents/${id}`);
    if (String(c.id) !== S.selected) return;
    S.detail = c;
    renderDetail();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

function allowed(action, c) {
  return Array.isArray(c.allowed_actions) && c.allowed_actions.includes(action.name);
}

function deadlineText(c) {
  const d = c.deadline;
  if (!d || !d.due_at) return null;
  const left = (Date.parse(d.due_at) - serverNow()) / 1000;
  const step = t(`step.${d.step}`);
  if (left < 0) return h("span.d-deadline.bad", t("console.deadline_over", { step, d: fmtDuration(-left) }));
  return h(`span.d-deadline${d.warned ? ".warn" : ""}`, t("console.deadline_left", { step, d: fmtDuration(left) }));
}

function renderDetail() {
  const c = S.detail;
  const box = document.getElementById("detail");
  if (!c) return;
  const actions = ACTIONS.filter((a) => allowed(a, c)).map((a) =>
    h(
      `button.btn${a.style ? `.${a.style}` : ""}`,
      { type: "button", dataset: { action: a.name }, onclick: () => runAction(a) },
      t(`action.${a.name}`),
      h("kbd", a.key.toUpperCase()),
    ),
  );
  const info = [
    ["console.f_place", placeFull(c)],
    ["console.f_reported", fmtDateTime(c.created_at)],
    ["console.f_channels", (c.channels && c.channels.length ? c.channels : [c.channel]).map(channelName).join("、")],
    ["console.f_caller", c.caller || null],
    ["console.f_owner", pick(c.owner, c.owner_unit)],
    ["console.f_lead", c.lead_department_name ? localName(c.lead_department_name) : null],
    ["console.f_departments", (c.handling_departments || []).map((d) => localName(d) || d.code).join("、") || null],
    ["console.f_signed", (c.signed || []).map((d) => localName(d) || d.code).join("、") || null],
    ["console.f_squad", c.squad_unit ? c.squad_unit_name || t("console.squad_unknown") : null],
    ["console.f_escalations", c.escalations ? String(c.escalations) : null],
    ["console.f_returns", c.returns ? t("console.times", { n: c.returns }) : null],
    ["console.f_extension", c.extension ? t("console.extension_waiting", { hours: c.extension.hours, department: localName(c.extension.department) }) : null],
    ["console.f_extensions", c.extensions ? t("console.times", { n: c.extensions }) : null],
    ["console.f_urged", c.urged ? t("console.times", { n: c.urged }) : null],
    ["console.f_supervised", c.supervised ? t("console.yes") : null],
    ["console.f_callback", callbackText(c)],
    ["console.f_satisfaction", c.satisfaction ? "★".repeat(c.satisfaction) : null],
  ].filter(([, v]) => v);
  const dl = h("dl.d-info", info.flatMap(([k, v]) => [h("dt", t(k)), h("dd", v)]));
  const mapBox = h("div.d-map");
  const sections = [];
  const photos = (c.attachments || []).filter(Boolean);
  if (photos.length) {
    sections.push(
      h(
        "section.d-section",
        h("h3", t("console.photos")),
        h("div.photos", photos.map((p) => {
          const src = photoUrl(p);
          return h("a", { href: src, target: "_blank", rel: "noopener" }, h("img", { src, alt: "", loading: "lazy" }));
        })),
      ),
    );
  }
  if (c.duplicates && c.duplicates.length && allowed(ACTIONS.find((a) => a.name === "merge"), c)) {
    sections.push(
      h(
        "section.d-section",
        h("h3", t("console.duplicates")),
        h(
          "ul.dups",
          c.duplicates.map((d) =>
            h(
              "li",
              prioBadge(d.priority),
              h("span.grow", `${d.number} · ${categoryName(d)} · ${placeOf(d)}${d.distance_m !== undefined && d.distance_m !== null ? ` · ${fmtDistance(d.distance_m)}` : ""}`),
              stateBadge(d.state),
              h("button.btn.btn-small", { type: "button", onclick: () => selectCase(d.id) }, t("console.open")),
              h("button.btn.btn-small.btn-primary", { type: "button", onclick: () => doAction("merge", { merge_into: d.id }) }, t("console.merge_into")),
            ),
          ),
        ),
      ),
    );
  }
  if (c.merged && c.merged.length) {
    sections.push(
      h(
        "section.d-section",
        h("h3", t("console.merged")),
        h("div.muted", c.merged.map((m) => m.number || `#${m.id}`).join("、")),
      ),
    );
  }
  if (S.config.features.orders && c.squad_unit !== null && c.squad_unit !== undefined) sections.push(ordersSection(c));
  if (c.plan !== undefined) sections.push(planSection(c, { act: planAct, ask: reasonAsk, join: joinMeeting, canRun: canRunPlans() }));
  if (S.config.features.meetings) sections.push(meetingsSection(c));
  if (S.config.features.hotline) sections.push(voiceSection(c));
  if (S.config.features.cameras) sections.push(camerasSection(c));
  sections.push(
    h(
      "section.d-section",
      h("h3", t("console.timeline")),
      h(
        "ol.timeline",
        [...(c.timeline || [])].reverse().map((e) =>
          h(
            `li${e.actor === "system" || e.actor_role === null ? ".sys" : ""}`,
            h(
              "div.tl-head",
              h("strong", e.action_name ? pick(e.action_name, e.action) : actionName(e.action)),
              e.from_state && e.to_state && e.from_state !== e.to_state ? h("span.muted", transitionText(e)) : null,
              h("span", e.actor === "system" ? t("console.system") : e.actor || ""),
              e.actor_role ? h("span.muted", t(`role.${e.actor_role}`)) : null,
              h("span.tl-time", fmtDateTime(e.at)),
            ),
            e.note ? h("div.tl-note", e.note) : null,
            e.data && e.data.reason ? h("div.tl-note", e.data.reason) : null,
            timelineDetail(e),
          ),
        ),
      ),
    ),
  );
  box.replaceChildren(
    h(
      "div.d-head",
      prioBadge(c.priority),
      h("span.d-number", c.number),
      stateBadge(c.state),
      c.overdue ? h("span.tag-overdue", t("case.overdue")) : null,
      ...controlTags(c),
      deadlineText(c),
    ),
    h("h2.d-title", categoryName(c)),
    h("p.d-desc", c.description || ""),
    h("div.d-body", dl, mapBox),
    ...(actions.length ? [h("div.d-actions", actions)] : []),
    ...sections,
  );
  drawDetailMap(mapBox, c);
}

// -- emergency plans (docs/plans.md) -----------------------------------------------------------

function canRunPlans() {
  return ["duty_officer", "leader"].includes(S.user.role);
}

/** Post to a plan of the open case (confirm, raise, stand down, a step) and show the case after it. */
async function planAct(path, body) {
  const id = S.detail && S.detail.id;
  try {
    await post(path, body);
  } catch (err) {
    toast(errorText(err), "error", 8000);
  }
  if (id) await selectCase(id, { focusList: false });
}

function reasonAsk(title, onReason) {
  openDialog({
    title: `${title} · ${S.detail.number}`,
    body: [textField("reason", "plan.reason")],
    submit: title,
    onSubmit: (f) => onReason(f.reason.value.trim() || null),
  });
}

/** Q: confirm the case's proposed plan, or choose one to start. */
function planKey() {
  const p = S.detail && S.detail.plan;
  if (p && p.state === "proposed") return planAct(`/api/v1/plan-activations/${p.id}/confirm`, {});
  if (!p || !["proposed", "active"].includes(p.state)) return startDialogFor(S.detail, planAct);
  return null;
}

/** The jurisdiction's proposed and running plans: a proposal waits for the duty officer's key. */
let plansTimer = 0;

function loadPlans() {
  clearTimeout(plansTimer);
  plansTimer = setTimeout(async () => {
    try {
      S.plans = (await get("/api/v1/plan-activations")).activations || [];
    } catch {
      return; // keep what is shown
    }
    renderPlans();
  }, 300);
}

function renderPlans() {
  const panel = document.getElementById("plans-panel");
  if (!panel) return;
  const list = (S.plans || []).slice().sort((a, b) => Number(b.state === "proposed") - Number(a.state === "proposed") || b.id - a.id);
  panel.hidden = !list.length;
  document.getElementById("plan-count").textContent = list.length;
  document.getElementById("plan-list").replaceChildren(
    ...list.map((p) =>
      h(
        "li",
        { dataset: { id: p.id, state: p.state } },
        h(`span.plan-level.pl-${p.level}`, p.level),
        h("strong.grow", pick(p.plan_name, p.plan_code)),
        h(`span.plan-state.ps-${p.state}`, t(`plan.state_${p.state}`)),
        p.overdue_steps ? h("span.plan-overdue", t("plan.n_overdue", { n: p.overdue_steps })) : null,
        p.incident_id ? h("button.btn.btn-small", { type: "button", onclick: () => selectCase(p.incident_id) }, t("console.open")) : null,
      ),
    ),
  );
}

function renderNotices() {
  const panel = document.getElementById("notices-panel");
  if (!panel || !S.notices) return;
  const n = S.notices.render(document.getElementById("notice-list"));
  document.getElementById("notice-count").textContent = n;
  panel.hidden = !n;
}

function transitionText(e) {
  // An order's step moves the order (待送达 → 已接受), a case's step the case.
  const name = e.source === "order" ? (s) => t(`order.${s}`) : stateName;
  return `${name(e.from_state)} → ${name(e.to_state)}`;
}

function callbackText(c) {
  const cb = c.callback;
  if (!cb) return null;
  const when = fmtDateTime(cb.at);
  return cb.reached ? t("console.callback_reached", { when }) : t("console.callback_not_reached", { when, n: cb.attempts });
}

/** What a timeline step decided, in words: hours asked or granted, a callback's outcome. */
function timelineDetail(e) {
  const d = e.data || {};
  if (e.action === "extend_request") return h("div.tl-note", t("console.tl_extend_request", { hours: d.hours }));
  if (e.action === "extend_decide") return h("div.tl-note", t(d.granted ? "console.tl_extend_granted" : "console.tl_extend_refused", { hours: d.hours }));
  if (e.action === "callback") {
    if (!d.reached) return h("div.tl-note", t("console.tl_callback_not_reached"));
    return h("div.tl-note", `${"★".repeat(d.satisfaction || 0)} ${t(d.satisfied ? "console.satisfied" : "console.not_satisfied")}${d.reopen ? ` · ${t("console.tl_reopened")}` : ""}`);
  }
  if (e.action === "order.handled" && d.photos && d.photos.length) {
    return h("div.photos", d.photos.map((p) => {
      const src = photoUrl(p);
      return src ? h("a", { href: src, target: "_blank", rel: "noopener" }, h("img", { src, alt: "", loading: "lazy" })) : null;
    }));
  }
  return null;
}

/** The case's orders to squads: which unit, how far it got on site, what it reported. */
function ordersSection(c) {
  const list = h("div.orders-of-case", h("span.muted", t("console.loading")));
  get("/api/v1/orders", { incident_id: String(c.id) })
    .then((r) => {
      const orders = (r.orders || []).slice().reverse();
      list.replaceChildren(
        ...(orders.length
          ? orders.map((o) =>
              h(
                "div.order-row",
                { dataset: { id: o.id, state: o.state } },
                h("strong", o.unit_name || t("console.squad_unknown")),
                h("span", { class: `order-state os-${o.state}` }, t(`order.${o.state}`)),
                o.progress ? h("span", { class: `unit-status us-${o.progress}` }, pick(o.progress_name, o.progress)) : null,
                h("span.muted", fmtDateTime(o.created_at)),
                o.handled_note ? h("div.tl-note", o.handled_note) : null,
              ),
            )
          : [h("span.muted", t("console.no_orders"))]),
      );
    })
    .catch(() => list.replaceChildren(h("span.muted", t("console.no_orders"))));
  return h("section.d-section", h("h3", t("console.orders")), list);
}

/** The case's video consultations (综治视联网), and convening one. */
function meetingsSection(c) {
  const list = h("div.meetings-of-case", h("span.muted", t("console.loading")));
  get("/api/v1/meetings", { incident_id: String(c.id) })
    .then((r) => {
      const meetings = r.meetings || [];
      list.replaceChildren(
        ...(meetings.length
          ? meetings.map((m) =>
              h(
                "div.meeting-row",
                h("span", { class: m.status === "running" ? "prio prio-P1" : "prio prio-P4" }, t(m.status === "running" ? "meeting.live" : m.status === "ended" ? "meeting.ended" : "meeting.soon")),
                h("span", m.title),
                m.participants_online !== undefined && m.status === "running" ? h("span.muted", t("meeting.online", { n: m.participants_online })) : null,
              ),
            )
          : [h("span.muted", t("console.no_meetings"))]),
      );
    })
    .catch(() => list.replaceChildren(h("span.muted", t("console.no_meetings"))));
  const canConvene = (c.allowed_actions || []).includes("convene");
  return h(
    "section.d-section",
    h(
      "h3",
      t("console.meetings"),
      " ",
      canConvene ? h("button.btn.btn-small", { type: "button", id: "convene", onclick: () => conveneDialog(c) }, t("console.convene")) : null,
    ),
    list,
  );
}

function conveneDialog(c) {
  // Invite the owning unit by default; the officer may add the units above and below it they see.
  const candidates = [...S.units.values()].filter((u) => u.level !== "grid" && u.level !== "community" && u.code !== S.user.org);
  const body = [
    h("label.field", h("span", t("console.meeting_title")), h("input", { name: "title", required: true, value: `${categoryName(c)} · ${c.number}` })),
    h(
      "fieldset.field",
      h("legend", t("console.invite")),
      h(
        "div.checks",
        candidates.map((u) => h("label", h("input", { type: "checkbox", name: "invite", value: u.code, checked: u.code === c.owner_unit }), ` ${localName(u)}`)),
      ),
    ),
    h("label.field-inline", h("input", { type: "checkbox", name: "below" }), ` ${t("console.invite_below")}`),
    // Cameras send H.264 and forwarding never transcodes: a consultation that may show them is convened in H.264.
    S.config.features.cameras
      ? h("label.field-inline", h("input", { type: "checkbox", name: "h264", checked: caseCameras(c).length > 0 }), ` ${t("console.convene_h264")}`)
      : null,
  ];
  openDialog({
    title: `${t("console.convene")} · ${c.number}`,
    body,
    wide: true,
    submit: t("console.convene"),
    onSubmit: async (f) => {
      const invite = [...f.querySelectorAll("input[name=invite]:checked")].map((x) => x.value);
      if (!invite.length) throw new Error(t("console.pick_units"));
      const codec = f.h264 && f.h264.checked ? "H264" : undefined;
      const m = await post("/api/v1/meetings", { title: f.title.value.trim(), invite, include_descendants: f.below.checked, incident_id: String(c.id), codec });
      toast(t("console.meeting_created", { n: (m.links || []).length }), "ok", 8000);
      // The chair's own link opens the meeting page in a new tab.
      if (m.chair_link && m.chair_link.url) window.open(m.chair_link.url, "_blank", "noopener");
      renderDetail();
    },
  });
}

/** The cameras nearest to the case: view one, or add it to the case's consultation as a source. */
function camerasSection(c) {
  const list = h("div.cameras-of-case", h("span.muted", t("console.loading")));
  Promise.all([
    get(`/api/v1/incidents/${c.id}/cameras`, { limit: 6 }),
    S.config.features.meetings ? get("/api/v1/meetings", { incident_id: String(c.id) }) : Promise.resolve({ meetings: [] }),
  ])
    .then(([r, m]) => {
      const cameras = r.items || [];
      S.caseCameras = { id: c.id, items: cameras };
      const meeting = (m.meetings || []).find((x) => x.status !== "ended");
      const canAdd = meeting && S.desk;
      list.replaceChildren(
        ...(cameras.length
          ? cameras.map((cam) =>
              h(
                "div.camera-row",
                h("span", { class: cam.status === "online" ? "prio prio-P4" : "prio" }, t(cam.status === "online" ? "camera.online" : "camera.offline")),
                h("span.grow", `${cam.name || cam.id} · ${fmtDistance(cam.distance_m)}`),
                h("button.btn.btn-small", { type: "button", disabled: cam.status !== "online", onclick: () => openCameraViewer(cam) }, t("camera.view")),
                canAdd
                  ? h(
                      "button.btn.btn-small",
                      {
                        type: "button",
                        onclick: async () => {
                          try {
                            await post(`/api/v1/meetings/${meeting.id}/cameras`, { camera: cam.id });
                            toast(t("camera.added"), "ok");
                          } catch (err) {
                            toast(errorText(err), "error", 8000);
                          }
                        },
                      },
                      t("camera.add_to_meeting"),
                    )
                  : null,
              ),
            )
          : [h("span.muted", t("console.no_cameras"))]),
      );
      drawCameraMarkers();
    })
    .catch(() => list.replaceChildren(h("span.muted", t("console.no_cameras"))));
  return h("section.d-section", h("h3", t("console.cameras")), list);
}

function caseCameras(c) {
  return S.caseCameras && S.caseCameras.id === c.id ? S.caseCameras.items : [];
}

/** The case's nearest cameras on its map (whichever of the map and the list comes last draws them). */
function drawCameraMarkers() {
  if (!detailMap || !S.detail) return;
  detailMap.setMarkers("cameras", caseCameras(S.detail), {
    render: (x) => cameraMarker(x, 1.1),
    signature: (x) => cameraSignature(x),
    onClick: openCameraViewer,
  });
}

function actionName(action) {
  const key = `action.${action}`;
  return has(key) ? t(key) : action;
}

function placeFull(c) {
  const parts = [];
  if (c.address) parts.push(c.address);
  const units = [c.township, c.community, c.grid].filter(Boolean).map((u) => pick(u, u.code || ""));
  if (units.length) parts.push(units.join(" / "));
  const p = casePoint(c);
  if (p.lat !== null) parts.push(`${p.lat.toFixed(5)}, ${p.lon.toFixed(5)}`);
  return parts.join(" · ") || t("board.no_place");
}

function photoUrl(p) {
  const url = typeof p === "string" ? p : p.url || p.href || "";
  if (url.startsWith("/")) return withToken(url);
  if (/^[0-9a-f]{16,}$/i.test(url)) return withToken(`/api/v1/photos/${url}`);
  return "";
}

let geojson = null;

async function drawDetailMap(box, c) {
  if (detailMap) detailMap.destroy();
  detailMap = new MapView(box, { tiles: S.config.map.tiles, minZoom: S.config.map.min_zoom, maxZoom: S.config.map.max_zoom, theme: "dark" });
  if (!geojson) geojson = await get("/api/v1/orgs/geojson");
  detailMap.setBoundaries(geojson);
  const p = casePoint(c);
  if (p.lat === null) return;
  detailMap.centerOn(p.lon, p.lat, 15);
  drawCameraMarkers();
  detailMap.setMarkers("case", [{ ...c, ...p }], { render: (x) => caseMarker(x, { size: 1.2 }) });
  if (S.config.features.nearest) {
    try {
      const units = await get("/api/v1/units/nearest", { lat: p.lat, lon: p.lon, limit: 5, all: true });
      const list = Array.isArray(units) ? units : units.items || units.units || [];
      detailMap.setMarkers(
        "units",
        list.map((u) => ({ ...u, ...unitPoint(u) })),
        { render: (u) => unitMarker(u, { staleAfter: S.config.units_stale_after }), signature: (u) => unitSignature(u, S.config.units_stale_after) },
      );
    } catch {
      /* the map still shows the case */
    }
  }
}

// -- actions -----------------------------------------------------------------------------------

async function doAction(name, fields = {}) {
  const c = S.detail;
  try {
    const after = await post(`/api/v1/incidents/${c.id}/actions/${name}`, { version: c.version, ...fields });
    S.detail = after;
    replaceInList(after);
    renderDetail();
    toast(t("console.done", { action: t(`action.${name}`), number: after.number }), "ok");
    return after;
  } catch (err) {
    if (err instanceof ApiError && err.status === 409 && err.body.error && err.body.error.incident) {
      S.detail = err.body.error.incident;
      replaceInList(S.detail);
      renderDetail();
    }
    throw err;
  }
}

function replaceInList(c) {
  const i = S.items.findIndex((x) => String(x.id) === String(c.id));
  if (i >= 0) {
    // A case that left the tab's filter (returned by this department, closed, ...) leaves the list.
    if (inTab(c)) S.items[i] = { ...S.items[i], ...c };
    else S.items.splice(i, 1);
    renderList();
  }
}

/** Whether a case (as changed) still belongs in the list of the current tab. */
function inTab(c) {
  const [, q] = TABS.find(([k]) => k === S.tab);
  const query = q(S.user) || {};
  if (query.state && !query.state.split(",").includes(c.state)) return false;
  if (query.overdue && !c.overdue) return false;
  if (query.department && !(c.handling_departments || []).some((d) => (d.code || d) === query.department)) return false;
  return true;
}

async function runAction(a) {
  if (!S.detail || !allowed(a, S.detail)) return;
  if (!a.dialog) {
    try {
      await doAction(a.name);
    } catch (err) {
      toast(errorText(err), "error");
    }
    return;
  }
  const builders = {
    reason: reasonDialog,
    note: noteDialog,
    merge: mergeDialog,
    dispatch: dispatchDialog,
    feedback: feedbackDialog,
    evaluate: evaluateDialog,
    assign: assignDialog,
    extendRequest: extendRequestDialog,
    extendDecide: extendDecideDialog,
    callback: callbackDialog,
  };
  await builders[a.dialog](a);
}

/** A modal form; `onSubmit(form)` may throw an ApiError, shown in the form. */
function openDialog({ title, body, submit, onSubmit, wide = false }) {
  const dialog = document.getElementById("dialog");
  const error = h("p.field-error", { role: "alert", hidden: true });
  const ok = h("button.btn.btn-primary", { type: "submit" }, submit || t("console.confirm"));
  const form = h(
    "form",
    { method: "dialog" },
    h("h2", title),
    ...body,
    error,
    h("div.buttons", h("button.btn", { type: "button", onclick: () => dialog.close() }, t("console.cancel")), ok),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    ok.disabled = true;
    try {
      await onSubmit(form);
      dialog.close();
    } catch (err) {
      error.textContent = errorText(err);
      error.hidden = false;
    } finally {
      ok.disabled = false;
    }
  });
  dialog.style.width = wide ? "min(52rem, calc(100vw - 2rem))" : "";
  dialog.replaceChildren(form);
  dialog.showModal();
  const first = form.querySelector("textarea, input:not([type=radio]):not([type=checkbox]), select");
  if (first) first.focus();
  return form;
}

function textField(name, labelKey, { required = false, rows = 3, value = "" } = {}) {
  return h("label.field", h("span", t(labelKey)), h("textarea", { name, rows, required, value }));
}

function reasonDialog(a) {
  openDialog({
    title: `${t(`action.${a.name}`)} · ${S.detail.number}`,
    body: [textField("reason", "console.reason", { required: true })],
    submit: t(`action.${a.name}`),
    onSubmit: (f) => doAction(a.name, { reason: f.reason.value.trim() }),
  });
}

function noteDialog(a) {
  openDialog({
    title: `${t(`action.${a.name}`)} · ${S.detail.number}`,
    body: [textField("note", "console.note")],
    submit: t(`action.${a.name}`),
    onSubmit: (f) => doAction(a.name, f.note.value.trim() ? { note: f.note.value.trim() } : {}),
  });
}

function feedbackDialog(a) {
  const c = S.detail;
  const pending = c.pending_feedback && c.pending_feedback.length ? c.pending_feedback : (c.handling_departments || []).map((d) => d.code || d);
  const body = [textField("note", "console.feedback_note", { required: true, rows: 4 })];
  if (S.user.role !== "department_handler" && pending.length) {
    body.unshift(
      h(
        "label.field",
        h("span", t("console.on_behalf")),
        h("select", { name: "department" }, pending.map((code) => h("option", { value: code }, departmentName(code)))),
      ),
    );
  }
  openDialog({
    title: `${t("action.feedback")} · ${c.number}`,
    body,
    submit: t("action.feedback"),
    onSubmit: (f) => doAction("feedback", { note: f.note.value.trim(), ...(f.department ? { department: f.department.value } : {}) }),
  });
}

function extendRequestDialog() {
  const c = S.detail;
  const max = (S.config.incidents && S.config.incidents.max_extension_hours) || 720;
  openDialog({
    title: `${t("action.extend_request")} · ${c.number}`,
    body: [
      deadlineText(c) || h("span"),
      h("label.field", h("span", t("console.extend_hours", { max })), h("input", { name: "hours", type: "number", min: 1, max, step: 1, required: true, value: 24 })),
      textField("reason", "console.reason", { required: true }),
    ],
    submit: t("action.extend_request"),
    onSubmit: (f) => doAction("extend_request", { hours: Number(f.hours.value), reason: f.reason.value.trim() }),
  });
}

function extendDecideDialog() {
  const c = S.detail;
  const ask = c.extension || {};
  const reason = [...(c.timeline || [])].reverse().find((e) => e.action === "extend_request");
  openDialog({
    title: `${t("action.extend_decide")} · ${c.number}`,
    body: [
      h("p", t("console.extension_waiting", { hours: ask.hours, department: localName(ask.department || {}) })),
      reason && reason.data && reason.data.reason ? h("p.muted", reason.data.reason) : null,
      h(
        "div.field.radio-row",
        h("label", h("input", { type: "radio", name: "grant", value: "yes", checked: true }), ` ${t("console.grant")}`),
        h("label", h("input", { type: "radio", name: "grant", value: "no" }), ` ${t("console.refuse")}`),
      ),
      textField("note", "console.note", { rows: 2 }),
    ],
    submit: t("action.extend_decide"),
    onSubmit: (f) => doAction("extend_decide", { grant: f.grant.value === "yes", ...(f.note.value.trim() ? { note: f.note.value.trim() } : {}) }),
  });
}

/** 回访: was the reporter reached; if so how satisfied; not satisfied may send it back (发回重办). */
function callbackDialog() {
  const c = S.detail;
  const stars = h(
    "div.stars",
    [1, 2, 3, 4, 5].map((n) => h("label", { title: String(n) }, h("input", { type: "radio", name: "satisfaction", value: n, checked: n === 5 }), "★")),
  );
  const reopen = h("label.field-inline", h("input", { type: "checkbox", name: "reopen" }), ` ${t("console.callback_reopen")}`);
  const scored = h("div", stars, reopen);
  const form = openDialog({
    title: `${t("action.callback")} · ${c.number}`,
    body: [
      c.caller
        ? h(
            "p",
            t("console.callback_number", { number: c.caller }),
            " ",
            // The reporter is called on the officer's headset (a call out), then the outcome recorded here.
            S.config.features.hotline && (c.allowed_actions || []).includes("call_out")
              ? h("button.btn.btn-small", { type: "button", onclick: () => callBack(c) }, t("voice.call_back"))
              : null,
          )
        : h("p.muted", t("console.callback_no_number")),
      h(
        "div.field.radio-row",
        h("label", h("input", { type: "radio", name: "reached", value: "yes", checked: true }), ` ${t("console.reached")}`),
        h("label", h("input", { type: "radio", name: "reached", value: "no" }), ` ${t("console.not_reached")}`),
      ),
      scored,
      textField("note", "console.note", { rows: 2 }),
    ],
    submit: t("action.callback"),
    onSubmit: (f) => {
      const reached = f.reached.value === "yes";
      const body = { reached };
      if (reached) {
        body.satisfaction = Number(f.satisfaction.value);
        if (f.reopen.checked) body.reopen = true;
      }
      if (f.note.value.trim()) body.note = f.note.value.trim();
      return doAction("callback", body);
    },
  });
  const sync = () => {
    const reached = form.reached.value === "yes";
    scored.hidden = !reached;
    const low = Number(form.satisfaction.value) < ((S.config.incidents && S.config.incidents.satisfied_from) || 4);
    reopen.hidden = !low;
    if (!low) form.reopen.checked = false;
  };
  form.addEventListener("change", sync);
  sync();
}

function evaluateDialog() {
  const stars = h(
    "div.stars",
    [1, 2, 3, 4, 5].map((n) => h("label", h("input", { type: "radio", name: "satisfaction", value: n, required: true, checked: n === 5 }), "★".repeat(1))),
  );
  openDialog({
    title: `${t("action.evaluate")} · ${S.detail.number}`,
    body: [h("p.muted", t("console.evaluate_hint")), stars, textField("note", "console.note", { rows: 2 })],
    submit: t("action.evaluate"),
    onSubmit: (f) => doAction("evaluate", { satisfaction: Number(f.satisfaction.value), ...(f.note.value.trim() ? { note: f.note.value.trim() } : {}) }),
  });
}

function mergeDialog() {
  const c = S.detail;
  const dups = c.duplicates || [];
  const options = dups.map((d, i) =>
    h(
      "li",
      h(
        "label",
        h("input", { type: "radio", name: "into", value: d.id, checked: i === 0 }),
        h("span", `${d.number} · ${categoryName(d)} · ${placeOf(d)}`),
        stateBadge(d.state),
      ),
    ),
  );
  openDialog({
    title: `${t("action.merge")} · ${c.number}`,
    body: [
      h("p.muted", t("console.merge_hint")),
      dups.length ? h("ul.suggest", options) : h("p.muted", t("console.no_duplicates")),
      h("label.field", h("span", t("console.merge_other")), h("input", { name: "other", inputmode: "numeric", placeholder: "RA20260503-0007 / 123" })),
    ],
    submit: t("action.merge"),
    onSubmit: async (f) => {
      let into = f.other.value.trim();
      if (into && !/^\d+$/.test(into)) {
        const r = await get("/api/v1/incidents", { q: into, limit: 1, state: "" });
        const hit = (r.items || []).find((x) => x.number === into);
        if (!hit) throw new Error(t("console.not_found", { number: into }));
        into = hit.id;
      }
      if (!into) into = f.into ? f.into.value : "";
      if (!into) throw new Error(t("console.pick_one"));
      await doAction("merge", { merge_into: Number(into) });
    },
  });
}

function departmentName(code) {
  for (const u of S.units.values()) {
    const d = (u.departments || []).find((x) => x.code === code);
    if (d) return localName(d);
  }
  return code;
}

/** Departments of the owning unit and every unit above it that this user can see. */
function departmentsFor(ownerCode) {
  const out = [];
  let code = ownerCode;
  const seen = new Set();
  while (code && S.units.has(code) && !seen.has(code)) {
    seen.add(code);
    const u = S.units.get(code);
    for (const d of u.departments || []) out.push({ ...d, unit: localName(u) });
    code = u.parent;
  }
  return out;
}

async function dispatchDialog() {
  const c = S.detail;
  const depts = departmentsFor(c.owner_unit);
  const p = casePoint(c);
  const squads = h("ul.suggest", h("li.muted", t("console.loading")));
  const body = [
    h(
      "div.row",
      h(
        "label.field",
        h("span", t("console.lead_department")),
        h(
          "select",
          { name: "department" },
          h("option", { value: "" }, t("console.default_department")),
          depts.map((d) => h("option", { value: d.code }, `${localName(d)}`)),
        ),
      ),
      h("label.field", h("span", t("console.note")), h("input", { name: "note" })),
    ),
    depts.length
      ? h(
          "fieldset.field",
          h("legend", t("console.co_departments")),
          h("div.checks", depts.map((d) => h("label", h("input", { type: "checkbox", name: "co", value: d.code }), ` ${localName(d)}`))),
        )
      : null,
    h("div.field", h("span", t("console.nearest_squads")), squads),
    textField("instructions", "console.instructions", { rows: 2, value: `${categoryName(c)} · ${placeFull(c)}\n${c.description || ""}`.slice(0, 500) }),
    dispatchDeadline(c),
  ];
  openDialog({
    title: `${t("action.dispatch")} · ${c.number}`,
    body,
    wide: true,
    submit: t("action.dispatch"),
    onSubmit: async (f) => {
      const co = [...f.querySelectorAll("input[name=co]:checked")].map((x) => x.value).filter((x) => x !== f.department.value);
      const squad = f.querySelector("input[name=squad]:checked");
      const unitId = squad && squad.value ? Number(squad.value) : null;
      const fields = {};
      if (f.department.value) fields.department = f.department.value;
      if (co.length) fields.co_departments = co;
      if (unitId) fields.squad_unit = unitId;
      if (f.note.value.trim()) fields.note = f.note.value.trim();
      const after = await doAction("dispatch", fields);
      if (unitId && S.config.features.orders && !after.order_id) {
        try {
          const order = await post("/api/v1/orders", { incident_id: after.id, unit_id: unitId, instructions: f.instructions.value.trim() });
          toast(t("console.order_sent", { unit: order.unit_name || "" }), "ok");
        } catch (err) {
          toast(`${t("console.order_failed")}: ${errorText(err)}`, "error", 8000);
        }
      }
    },
  });
  if (!S.config.features.nearest || p.lat === null) {
    squads.replaceChildren(h("li.muted", t(p.lat === null ? "console.no_location" : "console.units_off")));
    return;
  }
  try {
    const r = await get("/api/v1/units/nearest", { lat: p.lat, lon: p.lon, limit: 6 });
    const list = Array.isArray(r) ? r : r.items || r.units || [];
    const none = h("li", h("label", h("input", { type: "radio", name: "squad", value: "" }), h("span", t("console.no_squad")), h("span")));
    squads.replaceChildren(
      ...list.map((u, i) =>
        h(
          "li",
          h(
            "label",
            h("input", { type: "radio", name: "squad", value: u.id, checked: i === 0 }),
            h("span", h("strong", u.name), " ", h("span", { class: `unit-status us-${u.status}` }, unitStatusName(u.status)), u.stale ? h("span.stale-mark", ` ? ${t("unit.stale")}`) : null),
            h("span.eta", `${fmtDistance(u.distance_m)} · ${t("console.eta", { d: fmtDuration(u.eta_s) })}`),
          ),
        ),
      ),
      none,
    );
    if (!list.length) squads.prepend(h("li.muted", t("console.no_available")));
  } catch (err) {
    squads.replaceChildren(h("li.field-error", errorText(err)));
  }
}

/** The clocks a dispatch starts: the department must respond (签收/开始处置) and then feed back. */
function dispatchDeadline(c) {
  const limits = c.limits;
  if (!limits || !limits.start) return null;
  const due = new Date(serverNow() + limits.start * 1000);
  return h(
    "p.dispatch-deadline",
    { role: "note" },
    t("console.dispatch_deadline", {
      start: fmtDuration(limits.start),
      at: fmtTime(due.toISOString()),
      feedback: fmtDuration(limits.feedback || 0),
    }),
  );
}

function assignDialog() {
  const c = S.detail;
  const below = [...S.units.values()].filter((u) => u.code !== c.owner_unit && isBelow(u.code, c.owner_unit) && u.level !== "grid");
  openDialog({
    title: `${t("action.assign")} · ${c.number}`,
    body: [
      h("label.field", h("span", t("console.target_unit")), h("select", { name: "unit", required: true }, below.map((u) => h("option", { value: u.code }, localName(u))))),
      textField("note", "console.note", { rows: 2 }),
    ],
    submit: t("action.assign"),
    onSubmit: (f) => doAction("assign", { target_unit: f.unit.value, ...(f.note.value.trim() ? { note: f.note.value.trim() } : {}) }),
  });
}

function isBelow(code, root) {
  let u = S.units.get(code);
  while (u && u.parent) {
    if (u.parent === root) return true;
    u = S.units.get(u.parent);
  }
  return false;
}

// -- new case ----------------------------------------------------------------------------------

function categoryOptions() {
  return S.taxonomy.map((top) =>
    h(
      "optgroup",
      { label: pick(top.name) },
      h("option", { value: top.code, dataset: { p: top.default_priority } }, pick(top.name)),
      (top.children || []).map((sub) => h("option", { value: sub.code, dataset: { p: sub.default_priority } }, `　${pick(sub.name)}`)),
    ),
  );
}

function newCaseDialog(call = null) {
  let point = null;
  const mapBox = h("div.pick-map");
  const where = h("span.muted", t("console.pick_on_map"));
  const category = h("select", { name: "category", required: true }, h("option", { value: "" }, t("console.choose")), categoryOptions());
  const priority = h("select", { name: "priority" }, PRIORITIES.map((p) => h("option", { value: p }, `${p} · ${t(`priority.${p}`)}`)));
  category.addEventListener("change", () => {
    const opt = category.selectedOptions[0];
    if (opt && opt.dataset.p) priority.value = opt.dataset.p;
  });
  if (call && call.category) {
    // The line dialled says what the call is likely about (config/hotlines.toml).
    category.value = call.category;
    category.dispatchEvent(new Event("change"));
  }
  const form = openDialog({
    title: call ? t("console.case_from_call", { caller: call.caller || "" }) : t("console.new_case"),
    wide: true,
    body: [
      h("div.row", h("label.field", h("span", t("console.category")), category), h("label.field", h("span", t("console.priority")), priority)),
      textField("description", "console.description", { required: true, rows: 3 }),
      h(
        "div.row",
        h("label.field", h("span", t("console.address")), h("input", { name: "address" })),
        h("label.field", h("span", t("console.f_caller")), h("input", { name: "caller", value: call ? call.caller || "" : "", inputmode: "tel" })),
      ),
      h("div.field", h("span", t("console.location"), " ", where), mapBox),
    ],
    submit: t("console.create"),
    onSubmit: async (f) => {
      if (!point && !f.address.value.trim()) throw new Error(t("console.need_place"));
      const body = {
        category: f.category.value,
        priority: f.priority.value,
        description: f.description.value.trim(),
        ...(f.address.value.trim() ? { address: f.address.value.trim() } : {}),
        ...(point ? { location: { lat: point.lat, lon: point.lon } } : {}),
        ...(f.caller.value.trim() ? { caller: f.caller.value.trim() } : {}),
      };
      let created;
      if (call) {
        const { caller: _caller, ...fields } = body; // the call knows its caller
        const r = await post(`/api/v1/hotline/calls/${call.id}/incident`, fields);
        created = r.incident || r;
        loadCalls();
      } else {
        created = await post("/api/v1/incidents", body);
      }
      toast(t("console.created", { number: created.number || "" }), "ok");
      S.tab = "open";
      renderFilters();
      await loadList();
      if (created.id) selectCase(created.id);
    },
  });
  const m = new MapView(mapBox, {
    tiles: S.config.map.tiles,
    minZoom: S.config.map.min_zoom,
    maxZoom: S.config.map.max_zoom,
    theme: "dark",
    onClick: ({ lon, lat }) => {
      point = { lon, lat };
      where.textContent = `${lat.toFixed(5)}, ${lon.toFixed(5)}`;
      m.setMarkers("pick", [{ id: "p", lon, lat }], { render: () => caseMarker({ priority: form.priority.value, state: "reported" }, { size: 1.2 }) });
    },
  });
  get("/api/v1/orgs/geojson").then((fc) => m.setBoundaries(fc));
  document.getElementById("dialog").addEventListener("close", () => m.destroy(), { once: true });
}

// -- calls -------------------------------------------------------------------------------------

const LIVE_CALLS = LIVE_CALL_STATES;

async function loadCalls() {
  if (!S.config.features.hotline) {
    renderCalls();
    return;
  }
  try {
    const r = await get("/api/v1/hotline/calls", { state: LIVE_CALLS.join(","), limit: 100 });
    const list = Array.isArray(r) ? r : r.calls || r.items || [];
    S.live.calls = new Map(list.filter((c) => LIVE_CALLS.includes(c.state)).map((c) => [String(c.id), c]));
    renderCalls();
  } catch (err) {
    toast(errorText(err), "error");
  }
  loadPresence();
}

async function loadPresence() {
  if (!S.config.features.hotline || S.user.role !== "duty_officer") return;
  try {
    const r = await get("/api/v1/hotline/presence");
    const me = (r.officers || []).find((o) => o.user_id === S.user.id);
    S.available = Boolean(me && me.available);
  } catch {
    S.available = false;
  }
  renderPresence();
}

function renderPresence() {
  const slot = document.getElementById("presence");
  if (!slot) return;
  if (!S.config.features.hotline || S.user.role !== "duty_officer") {
    slot.replaceChildren();
    return;
  }
  slot.replaceChildren(
    h(
      `button.btn.btn-small${S.available ? ".btn-ok" : ""}`,
      {
        type: "button",
        id: "presence-toggle",
        "aria-pressed": String(Boolean(S.available)),
        title: t("call.presence_hint"),
        onclick: async () => {
          try {
            const r = await post("/api/v1/hotline/presence", { available: !S.available });
            S.available = r.available;
            renderPresence();
          } catch (err) {
            toast(errorText(err), "error");
          }
        },
      },
      t(S.available ? "call.available" : "call.away"),
    ),
  );
}

function historyOf(call) {
  // The call carries its caller's earlier cases in brief (GET /hotline/calls and the board).
  const hist = call.history || {};
  return { previous: hist.previous_calls || 0, cases: hist.cases || [] };
}

function renderCalls() {
  const ul = document.getElementById("call-list");
  const calls = [...S.live.calls.values()].sort(
    (a, b) => Number(b.ringing_user_id === S.user.id) - Number(a.ringing_user_id === S.user.id) || String(a.offered_at).localeCompare(String(b.offered_at)),
  );
  document.getElementById("call-count").textContent = calls.filter((c) => c.state !== "answered").length;
  if (!S.config.features.hotline) {
    ul.replaceChildren(h("li.empty", t("board.hotline_off")));
    return;
  }
  if (!calls.length) {
    ul.replaceChildren(h("li.empty", t("board.none_calls")));
    return;
  }
  ul.replaceChildren(
    ...calls.map((call) => {
      const since = call.answered_at || call.offered_at;
      const wait = since ? fmtDuration((serverNow() - Date.parse(since)) / 1000) : "";
      const { previous, cases } = historyOf(call);
      const history = h(
        "div.call-history",
        h("span.muted", previous ? t("console.caller_history_n", { n: previous }) : t("console.caller_history")),
        cases.length
          ? cases.slice(0, 5).map((c) =>
              h("a", { href: "#", onclick: (ev) => (ev.preventDefault(), selectCase(c.id)) }, `${c.number} · ${S.categoryNames.get(c.category) || c.category} · ${stateName(c.state)}`),
            )
          : h("span.muted", t("console.no_history")),
      );
      const act = (path, body) => async () => {
        try {
          const r = await post(`/api/v1/hotline/calls/${call.id}/${path}`, body);
          if (r && r.call) S.live.calls.set(String(call.id), { ...call, ...r.call });
          if (r && r.state && !LIVE_CALLS.includes(r.state)) S.live.calls.delete(String(call.id));
          loadCalls();
        } catch (err) {
          toast(errorText(err), "error");
        }
      };
      const mine = call.ringing_user_id === S.user.id && call.state === "ringing";
      const answeredByMe = call.state === "answered" && call.agent_user_id === S.user.id;
      return h(
        `li.call${call.state === "answered" ? "" : ".ringing"}${mine ? ".mine" : ""}`,
        { dataset: { id: call.id } },
        h(
          "div.call-top",
          h("span.call-number", call.caller || t("board.unknown_caller")),
          h("span.state", mine ? t("call.ringing_here") : t(`call.${call.state}`)),
          h("span.call-wait", wait),
        ),
        h("div.call-line", [pick(call.line, call.dialled), call.dialled, pick(call.department_name, call.department || "")].filter(Boolean).join(" · ")),
        call.incident_id ? h("div.call-line", t("call.linked", { id: call.incident_id })) : null,
        history,
        h(
          "div.call-actions",
          call.state !== "answered" && S.user.role === "duty_officer" ? h("button.btn.btn-small.btn-ok.answer", { type: "button", onclick: () => answerWithVoice(call) }, t("call.answer")) : null,
          !call.incident_id ? h("button.btn.btn-small.btn-primary", { type: "button", onclick: () => newCaseDialog(call) }, t("call.create_case")) : null,
          S.detail && !call.incident_id ? h("button.btn.btn-small", { type: "button", onclick: act("attach", { incident_id: S.detail.id }) }, t("call.attach", { number: S.detail.number })) : null,
          answeredByMe || call.state !== "answered" ? h("button.btn.btn-small.btn-ghost.hangup", { type: "button", onclick: async () => { await act("hangup")(); if (S.voice && S.voice.kind === "call" && S.voice.id === String(call.id)) endVoice(); } }, t("call.hangup")) : null,
        ),
      );
    }),
  );
}

// -- voice: answering on the headset, hold, transfer, keys, calls out (回访), recordings ------

async function voiceConfig() {
  if (!S.voiceConfig) {
    try {
      S.voiceConfig = await get("/api/v1/hotline/voice");
    } catch {
      S.voiceConfig = { ice_servers: [], calls_out: false };
    }
  }
  return S.voiceConfig;
}

async function startVoice(kind) {
  if (S.voice) {
    toast(t("voice.busy"), "error");
    return null;
  }
  const cfg = await voiceConfig();
  const session = new VoiceSession({
    iceServers: cfg.ice_servers || [],
    onMessage: onVoiceMessage,
    onState: (state) => {
      if (S.voice && S.voice.session === session && (state === "failed" || state === "closed")) endVoice();
    },
  });
  let offer;
  try {
    offer = await session.offer();
  } catch {
    session.close();
    toast(t("voice.no_microphone"), "error");
    return null;
  }
  S.voice = { kind, id: null, session, status: kind === "call" ? "connecting" : "dialling", hold: false, keys: [] };
  return offer;
}

/** The call ringing at this console, else the one waiting longest: answered on the headset. */
function answerNext() {
  const waiting = [...S.live.calls.values()].filter((c) => c.state !== "answered");
  const call =
    waiting.find((c) => c.state === "ringing" && c.ringing_user_id === S.user.id) ||
    waiting.sort((a, b) => String(a.offered_at).localeCompare(String(b.offered_at)))[0];
  if (call) answerWithVoice(call);
}

async function answerWithVoice(call) {
  const offer = await startVoice("call");
  if (!offer) return;
  S.voice.id = String(call.id);
  renderVoice();
  try {
    const r = await post(`/api/v1/hotline/calls/${call.id}/answer`, { offer });
    await S.voice.session.accept(r.answer);
    S.voice.status = "talking";
    const { answer: _answer, ...fresh } = r;
    S.live.calls.set(String(call.id), { ...call, ...fresh });
  } catch (err) {
    endVoice();
    toast(errorText(err), "error");
  }
  renderCalls();
  renderVoice();
}

async function callBack(c, number = null) {
  const offer = await startVoice("callout");
  if (!offer) return;
  renderVoice();
  try {
    const body = { incident_id: c.id, offer, kind: number ? "department" : "callback" };
    if (number) body.number = number;
    const r = await post("/api/v1/hotline/callouts", body);
    S.voice.id = String(r.id);
    S.voice.number = r.number;
    await S.voice.session.accept(r.answer);
  } catch (err) {
    endVoice();
    toast(errorText(err), "error");
  }
  renderVoice();
}

function onVoiceMessage(m) {
  if (!S.voice) return;
  if (m.type === "dtmf") S.voice.keys.push(m.key);
  else if (m.type === "hold") S.voice.hold = Boolean(m.on);
  else if (m.type === "ringing") S.voice.status = "ringing";
  else if (m.type === "answered") S.voice.status = "talking";
  else if (m.type === "transferring") S.voice.status = "transferring";
  else if (m.type === "transfer_failed") {
    S.voice.status = "talking";
    toast(t("voice.transfer_failed"), "error");
  }
  else if (m.type === "ended" || m.type === "transferred") {
    const wasCallout = S.voice.kind === "callout";
    endVoice();
    if (wasCallout && S.detail) renderDetail();
    return;
  }
  renderVoice();
}

function endVoice() {
  if (S.voice) S.voice.session.close();
  S.voice = null;
  renderVoice();
}

async function voiceHangup() {
  const v = S.voice;
  if (!v) return;
  try {
    if (v.id) await post(v.kind === "call" ? `/api/v1/hotline/calls/${v.id}/hangup` : `/api/v1/hotline/callouts/${v.id}/hangup`);
  } catch (err) {
    toast(errorText(err), "error");
  }
  endVoice();
  loadCalls();
}

async function voiceHold() {
  const v = S.voice;
  if (!v || v.kind !== "call" || !v.id) return;
  try {
    const r = await post(`/api/v1/hotline/calls/${v.id}/hold`, { hold: !v.hold });
    v.hold = Boolean(r.on_hold);
  } catch (err) {
    toast(errorText(err), "error");
  }
  renderVoice();
}

async function transferDialog() {
  const v = S.voice;
  if (!v || v.kind !== "call") return;
  let officers = [];
  try {
    officers = ((await get("/api/v1/hotline/presence")).officers || []).filter((o) => o.user_id !== S.user.id);
  } catch (err) {
    toast(errorText(err), "error");
    return;
  }
  const select = h("select", { name: "user_id" }, [h("option", { value: "" }, "—"), ...officers.map((o) => h("option", { value: o.user_id }, `${o.display_name || o.username}${o.available ? "" : ` (${t("call.away")})`}`))]);
  const number = h("input", { name: "number", inputmode: "tel", placeholder: "0577-6589 0101" });
  const cfg = await voiceConfig();
  openDialog({
    title: t("voice.transfer"),
    body: [
      officers.length ? h("label.field", h("span", t("voice.transfer_to")), select) : h("p.muted", t("voice.nobody")),
      cfg.calls_out ? h("label.field", h("span", t("voice.transfer_number")), number) : null,
    ],
    submit: t("voice.transfer"),
    onSubmit: async () => {
      if (number.value.trim()) {
        // A department's number: the caller waits with music; answered, the officer's console is free.
        await post(`/api/v1/hotline/calls/${v.id}/transfer`, { number: number.value.trim() });
        v.status = "transferring";
        renderVoice();
        return;
      }
      if (!select.value) return;
      await post(`/api/v1/hotline/calls/${v.id}/transfer`, { user_id: Number(select.value) });
      endVoice();
      loadCalls();
    },
  });
}

function renderVoice() {
  let bar = document.getElementById("voice-bar");
  if (!bar) {
    const list = document.getElementById("call-list");
    if (!list) return;
    bar = h("div.voice-bar#voice-bar", { hidden: true, role: "status", "aria-live": "polite" });
    list.before(bar);
  }
  const v = S.voice;
  if (!v) {
    bar.hidden = true;
    bar.replaceChildren();
    return;
  }
  const keypad = h(
    "div.keypad",
    [..."123456789*0#"].map((k) => h("button.btn.btn-small", { type: "button", dataset: { key: k }, onclick: () => v.session.sendKey(k) }, k)),
  );
  bar.hidden = false;
  bar.dataset.status = v.hold ? "hold" : v.status;
  bar.replaceChildren(
    h(
      "div.voice-top",
      h("span.voice-dot"),
      h("strong", t(v.hold ? "voice.on_hold" : `voice.${v.status}`)),
      v.number ? h("span.muted", v.number) : null,
      h("span.spacer"),
      v.kind === "call" ? h("button.btn.btn-small.hold", { type: "button", onclick: voiceHold, "aria-pressed": String(v.hold) }, t(v.hold ? "voice.resume" : "voice.hold")) : null,
      v.kind === "call" ? h("button.btn.btn-small.transfer", { type: "button", onclick: transferDialog }, t("voice.transfer")) : null,
      h("button.btn.btn-small.btn-danger.voice-hangup", { type: "button", onclick: voiceHangup }, t("call.hangup")),
    ),
    h("div.voice-keys", h("span.muted", t("voice.keys")), h("span.keys", v.keys.join(" ") || "—")),
    keypad,
  );
}

/** Calls about the case: calling the reporter back (回访) and the recordings of its calls. */
function voiceSection(c) {
  const list = h("div.recordings", h("span.muted", t("console.loading")));
  get("/api/v1/hotline/recordings", { incident_id: String(c.id) })
    .then((r) => {
      const items = r.recordings || [];
      list.replaceChildren(
        ...(items.length
          ? items.map((item) =>
              h(
                "div.recording",
                h("span", t(`voice.kind_${item.kind}`)),
                h("span.muted", `${item.number || ""} · ${fmtDateTime(item.at)}`),
                h("audio", { controls: true, preload: "none", src: withToken(item.url) }),
              ),
            )
          : [h("span.muted", t("voice.no_recordings"))]),
      );
    })
    .catch(() => list.replaceChildren(h("span.muted", t("voice.no_recordings"))));
  const canCall = (c.allowed_actions || []).includes("call_out");
  return h(
    "section.d-section",
    h(
      "h3",
      t("voice.calls"),
      " ",
      canCall && c.caller ? h("button.btn.btn-small#call-back", { type: "button", onclick: () => callBack(c) }, t("voice.call_back")) : null,
    ),
    list,
  );
}

// -- alerts: orders not accepted in time or declined ------------------------------------------

async function loadAlerts() {
  if (!S.config.features.orders) return;
  try {
    const r = await get("/api/v1/alerts");
    const list = Array.isArray(r) ? r : r.alerts || r.items || [];
    S.live.alerts = new Map(list.map((a) => [String(a.id), a]));
  } catch {
    /* the board feed brings them too */
  }
  renderAlerts();
}

function renderAlerts() {
  const panel = document.getElementById("alerts-panel");
  const alerts = S.desk ? [...S.live.alerts.values()].filter((a) => !a.resolved_at) : [];
  panel.hidden = !alerts.length;
  document.getElementById("alert-count").textContent = alerts.length;
  document.getElementById("alert-list").replaceChildren(
    ...alerts.map((a) => {
      const s = a.suggestion;
      const act = (fn) => async () => {
        try {
          await fn();
          S.live.alerts.delete(String(a.id));
          renderAlerts();
        } catch (err) {
          toast(errorText(err), "error");
        }
      };
      return h(
        "li",
        { dataset: { id: a.id } },
        h("strong", pick(a.message, `#${a.order_id}`)),
        s ? h("span.muted", t("console.suggest_unit", { name: s.name, d: fmtDistance(s.distance_m), eta: fmtDuration(s.eta_s) })) : null,
        h(
          "div.alert-actions",
          a.incident_id ? h("button.btn.btn-small", { type: "button", onclick: () => selectCase(a.incident_id) }, t("console.open")) : null,
          h(
            "button.btn.btn-small.btn-primary",
            { type: "button", onclick: act(() => post(`/api/v1/orders/${a.order_id}/reassign`, s ? { unit_id: s.unit_id } : {})) },
            s ? t("console.reassign_to", { name: s.name }) : t("console.reassign"),
          ),
          h("button.btn.btn-small.btn-ghost", { type: "button", onclick: act(() => post(`/api/v1/alerts/${a.id}/resolve`, {})) }, t("console.dismiss")),
        ),
      );
    }),
  );
}

// -- meetings this unit is in: convened here or invited, joined with one click ----------------

function meetingsForMe() {
  return [...S.live.meetings.values()]
    .filter((m) => m.status !== "ended" && ((Array.isArray(m.invited) && m.invited.includes(S.user.org)) || m.org === S.user.org))
    .sort((a, b) => String(b.started_at || b.created_at).localeCompare(String(a.started_at || a.created_at)));
}

function renderMeetings() {
  const panel = document.getElementById("meetings-panel");
  if (!panel) return;
  const list = S.config.features.meetings ? meetingsForMe() : [];
  panel.hidden = !list.length;
  document.getElementById("meeting-count").textContent = list.length;
  document.getElementById("meeting-list").replaceChildren(
    ...list.map((m) =>
      h(
        "li",
        { dataset: { id: m.id } },
        h("span", { class: m.status === "running" ? "prio prio-P1" : "prio prio-P4" }, t(m.status === "running" ? "meeting.live" : "meeting.soon")),
        h("strong.grow", m.title || ""),
        h("span.muted", t("console.convened_by", { org: unitName(m.org) })),
        h("button.btn.btn-small.btn-primary.join", { type: "button", onclick: () => joinMeeting(m) }, t("console.join")),
      ),
    ),
  );
}

function unitName(code) {
  const u = S.units.get(code) || S.above.get(code);
  return u ? localName(u) : code || "";
}

/** This user's own link to the meeting (the server makes one per user of an invited unit). */
async function joinMeeting(m) {
  // Open the tab inside the click, so no pop-up blocker stops it; the link follows.
  const tab = window.open("about:blank", "_blank");
  try {
    const r = await post(`/api/v1/meetings/${m.id}/join`, {});
    if (tab) tab.location.href = r.url;
    else location.href = r.url;
  } catch (err) {
    if (tab) tab.close();
    toast(errorText(err), "error", 8000);
  }
}

// -- live --------------------------------------------------------------------------------------

function onLive(msg) {
  // The board's state is the one handler of the feed; the console adds its own effects.
  const r = S.live.apply(msg);
  if (msg.type === "snapshot") {
    // The server's clock is known now: countdowns follow it.
    const old = document.querySelector(".d-deadline");
    const fresh = S.detail && deadlineText(S.detail);
    if (old && fresh) old.replaceWith(fresh);
    renderAlerts();
    renderCalls();
    renderMeetings();
    return;
  }
  if (!r) return;
  if (r.entity === "incident") {
    const c = r.item;
    const i = S.items.findIndex((x) => String(x.id) === String(c.id));
    if (i >= 0) {
      if (inTab(c)) {
        S.items[i] = { ...S.items[i], ...c };
        S.fresh.add(String(c.id));
      } else {
        S.items.splice(i, 1);
      }
      renderList();
    } else if (r.reported) {
      S.newSinceLoad += 1;
      const pill = document.getElementById("new-pill");
      pill.textContent = t("console.new_cases", { n: S.newSinceLoad });
      pill.hidden = false;
      if (c.priority === "P1") beep();
    }
    if (S.detail && String(S.detail.id) === String(c.id) && c.version !== S.detail.version) selectCase(c.id, { focusList: false });
    if (r.kept && (r.action === "urge" || r.action === "supervise") && handledByMe(c)) {
      // 催办/督办 of a case this department handles: said at once, with a sound.
      toast(t(r.action === "urge" ? "console.urged_here" : "console.supervised_here", { number: c.number }), "error", 15000);
      chime();
    }
  } else if (r.entity === "order") {
    // An order's step (accepted, on scene, handled) shows in the open case's orders and timeline.
    if (S.detail && String(r.item.incident_id) === String(S.detail.id)) selectCase(S.detail.id, { focusList: false });
  } else if (r.entity === "meeting") {
    const m = r.item;
    renderMeetings();
    if (r.kept && (r.action === "created" || r.action === "started") && Array.isArray(m.invited) && m.invited.includes(S.user.org) && m.org !== S.user.org) {
      toast(t("console.meeting_invited", { title: m.title || "", org: unitName(m.org) }), "ok", 15000);
      chime();
    }
  } else if (r.entity === "plan_activation") {
    const a = r.item;
    loadPlans();
    if (S.detail && String(a.incident_id) === String(S.detail.id)) selectCase(S.detail.id, { focusList: false });
    if (r.action === "proposed" && canRunPlans()) {
      toast(t("plan.proposed_toast", { name: pick(a.plan_name, a.plan_code || ""), area: pick({ name: a.area && a.area.name, name_en: a.area && a.area.name_en }, "") }), "error", 15000);
      beep();
    }
  } else if (r.entity === "plan_notice") {
    if (S.notices && S.notices.apply(r.item)) {
      toast(r.item.text, "error", 15000);
      chime();
    }
  } else if (r.entity === "warning") {
    if (r.action === "received") toast(t("plan.warning_toast", { event: r.item.event || "", headline: r.item.headline || "" }), "error", 15000);
  } else if (r.entity === "alert") {
    if (r.kept && !r.previous) beep();
    renderAlerts();
  } else if (r.entity === "call") {
    const call = r.item;
    const known = r.previous;
    // Rings here: this officer's console is the one the queue chose.
    if (r.kept && call.state === "ringing" && call.ringing_user_id === S.user.id && (!known || known.ringing_user_id !== S.user.id)) beep();
    // The call is over, or went to another officer: the headset lets it go.
    // (A ring that was on its way while this console answered is not a transfer: only once talking.)
    const v = S.voice;
    if (v && v.kind === "call" && v.id === String(call.id)) {
      const gone = !LIVE_CALLS.includes(call.state);
      const elsewhere = call.state === "answered" && call.agent_user_id !== S.user.id;
      const transferred = call.state === "ringing" && v.status === "talking" && call.ringing_user_id !== S.user.id;
      if (gone || elsewhere || transferred) endVoice();
    }
    renderCalls();
  }
}

function handledByMe(c) {
  if (!S.user.department) return false;
  return (c.handling_departments || []).some((d) => (d.code || d) === S.user.department);
}

let audio = null;

function beep() {
  try {
    audio = audio || new AudioContext();
    if (audio.state !== "running") return;
    const o = audio.createOscillator();
    const g = audio.createGain();
    o.frequency.value = 880;
    g.gain.setValueAtTime(0.15, audio.currentTime);
    g.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.4);
    o.connect(g).connect(audio.destination);
    o.start();
    o.stop(audio.currentTime + 0.4);
  } catch {
    /* no sound: fine */
  }
}

// -- keyboard ----------------------------------------------------------------------------------

function helpDialog() {
  const rows = [
    ["J / ↓", "console.k_next"],
    ["K / ↑", "console.k_prev"],
    ["/", "console.keys_search"],
    ["N", "console.new_case"],
    ["W", "console.k_answer"],
    ["H", "console.k_hangup"],
    ["Q", "plan.k_plan"],
    ...ACTIONS.map((a) => [a.key.toUpperCase(), `action.${a.name}`]),
    ["Esc", "console.cancel"],
  ];
  openDialog({
    title: t("console.keys_help"),
    body: [h("div.help-keys", rows.flatMap(([k, key]) => [h("kbd", k), h("span", t(key))]))],
    submit: t("console.ok"),
    onSubmit: async () => {},
  });
}

function onKey(ev) {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const tag = (ev.target.tagName || "").toLowerCase();
  if (tag === "input" || tag === "textarea" || tag === "select" || document.getElementById("dialog").open) {
    if (ev.key === "Escape" && tag === "input" && ev.target.id === "q") ev.target.blur();
    return;
  }
  const key = ev.key.toLowerCase();
  const go = (fn) => {
    ev.preventDefault();
    fn();
  };
  if (key === "j" || ev.key === "ArrowDown") return go(() => moveSelection(1));
  if (key === "k" || ev.key === "ArrowUp") return go(() => moveSelection(-1));
  if (ev.key === "/") return go(() => document.getElementById("q").focus());
  if (ev.key === "?") return go(helpDialog);
  if (key === "n") return go(() => newCaseDialog());
  // The headset: W answers the call ringing here (or the longest waiting), H hangs up.
  if (key === "w" && S.desk && S.user.role === "duty_officer" && S.config.features.hotline && !S.voice) return go(answerNext);
  if (key === "h" && S.voice) return go(voiceHangup);
  if (key === PLAN_KEY && S.detail && S.detail.plan !== undefined && canRunPlans() && isOpen(S.detail)) return go(planKey);
  const a = ACTIONS.find((x) => x.key === key);
  if (a && S.detail && allowed(a, S.detail)) go(() => runAction(a));
}

// -- start -------------------------------------------------------------------------------------

async function main() {
  const { user, config } = await startPage({ roles: ["duty_officer", "leader", "admin", "department_handler"] });
  S.user = user;
  S.config = config;
  // The duty desk's panels (the call queue, order alerts) are the command centre's, not a department's.
  S.desk = ["duty_officer", "leader", "admin"].includes(user.role);
  if (user.department) S.tab = "department";
  if (!S.desk) document.getElementById("calls-panel").hidden = true;
  const live = liveIndicator();
  document.getElementById("top").replaceWith(topBar(user, { current: "/console", extra: [live.el] }));
  renderFilters();
  document.getElementById("q").addEventListener(
    "input",
    debounce((ev) => {
      S.q = ev.target.value.trim();
      loadList();
    }, 250),
  );
  document.getElementById("new-case").addEventListener("click", () => newCaseDialog());
  document.getElementById("new-pill").addEventListener("click", () => loadList());
  document.addEventListener("keydown", onKey);
  document.addEventListener("click", () => {
    if (!audio) audio = new AudioContext();
    if (audio.state === "suspended") audio.resume();
  }, { once: true });
  document.addEventListener("pointerdown", () => unlock(), { once: true });
  onLanguageChange(() => {
    // Everything on the screen is drawn again in the new language; nothing waits for a reload.
    renderFilters();
    renderList();
    renderDetail();
    renderCalls();
    renderAlerts();
    renderMeetings();
    renderPresence();
    renderNotices();
    renderPlans();
    applyI18n(document);
  });
  const [taxonomy, orgs] = await Promise.all([
    config.features.taxonomy ? get("/api/v1/taxonomy") : Promise.resolve([]),
    get("/api/v1/orgs", { depth: 3 }),
  ]);
  S.taxonomy = Array.isArray(taxonomy) ? taxonomy : taxonomy.categories || [];
  const names = (list) => {
    for (const c of list) {
      S.categoryNames.set(c.code, pick(c.name, c.code));
      names(c.children || []);
    }
  };
  names(S.taxonomy);
  for (const u of orgs.units || []) S.units.set(u.code, u);
  for (const u of orgs.above || []) S.above.set(u.code, u);
  if (!config.features.incidents) {
    document.getElementById("case-list").replaceChildren(h("li.empty", t("console.incidents_off")));
  } else {
    await loadList({ keepSelection: false });
  }
  if (S.desk) {
    await loadCalls();
    await loadAlerts();
  }
  useDialog(openDialog);
  S.notices = new MyNotices(user.id, renderNotices);
  await S.notices.load();
  if (S.desk) loadPlans();
  setInterval(() => {
    renderCalls();
    loadPresence();
    if (S.detail && isOpen(S.detail)) {
      const old = document.querySelector(".d-deadline");
      const fresh = deadlineText(S.detail);
      if (old && fresh) old.replaceWith(fresh);
    }
  }, 10000);
  if (config.features.board_ws) {
    const socket = new LiveSocket("/ws/board?console=1", { onMessage: onLive, onStatus: live.set });
    socket.start();
  } else {
    live.set("unavailable");
  }
  const wanted = new URLSearchParams(location.search).get("case");
  if (wanted) selectCase(wanted);
  setInterval(() => {
    // The checklist's timers count down with the server's clock (only the timers are redrawn).
    const p = S.detail && S.detail.plan;
    if (!p || p.state !== "active") return;
    for (const s of p.checklist || []) {
      const old = document.querySelector(`.plan-checklist li[data-step="${s.id}"] .plan-timer`);
      if (old) old.replaceWith(stepTimer(s));
    }
  }, 5000);
  window.dispatchdConsole = { S, voiceInbound: () => (S.voice ? S.voice.session.inbound() : null) };
}

main();
