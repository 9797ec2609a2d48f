// Emergency plans (应急预案) on the screens: a case's plan on the console (proposal with one key,
// checklist with timers, groups, orders, notices with delivery and acknowledgement, raise and stand
// down), the person's own notices (叫应), and the board's lists of running plans and warnings.
// What the server sent decides what is shown (docs/plans.md); nothing here repeats its rules.
import { get, post } from "./api.js";
import { serverNow } from "./clock.js";
import { errorText, fmtDateTime, fmtDuration, h, toast } from "./dom.js";
import { t } from "./i18n.js";
import { pick } from "./model.js";

export const PLAN_KEY = "q";

function levelName(p) {
  return pick(p.level_name, p.level);
}

/** A step's timer: time left, or how long it is overdue, or when it was done. */
export function stepTimer(s) {
  if (s.done_at) return h("span.plan-timer.plan-done", t("plan.done_at", { when: fmtDateTime(s.done_at) }));
  if (s.cancelled) return h("span.plan-timer.muted", t("plan.step_cancelled"));
  const left = Math.round((new Date(s.due_at).getTime() - serverNow()) / 1000);
  if (left < 0) return h("span.plan-timer.plan-overdue", t("plan.overdue_by", { d: fmtDuration(-left) }));
  return h("span.plan-timer.plan-left", t("plan.time_left", { d: fmtDuration(left) }));
}

function deliveryTag(via, d) {
  const state = (d && d.state) || "pending";
  return h(
    `span.plan-via.pv-${state}`,
    { title: d && d.detail ? d.detail : "" },
    `${t(`plan.via_${via}`)}·${t(`plan.delivery_${state}`)}`,
  );
}

function noticeRow(n) {
  return h(
    "li.plan-notice",
    { dataset: { id: n.id, state: n.state } },
    h("strong", n.name || n.label),
    h(`span.plan-nstate.pn-${n.state}`, t(`plan.notice_${n.state}`)),
    ...(n.via || []).map((v) => deliveryTag(v, (n.deliveries || {})[v])),
    n.acknowledged_at ? h("span.muted", t("plan.acked_at", { when: fmtDateTime(n.acknowledged_at) })) : null,
    n.escalates ? h("span.muted", t("plan.escalated_from")) : null,
  );
}

/**
 * The plan section of a case on the console. ``act(path, body)`` posts to the activation and
 * reloads the case; ``ask(title, onReason)`` asks for a reason; ``join(meeting)`` joins it.
 */
export function planSection(c, { act, ask, join, canRun }) {
  const p = c.plan;
  const head = [
    h("span", t("plan.section")),
    p ? h("strong", ` · ${pick(p.plan_name, p.plan_code)}`) : null,
    p ? h(`span.plan-level.pl-${p.level}`, levelName(p)) : null,
    p ? h(`span.plan-state.ps-${p.state}`, t(`plan.state_${p.state}`)) : null,
  ];
  const body = [];
  if (p && p.state === "proposed" && canRun) {
    body.push(
      h(
        "div.plan-proposal",
        h("span", t("plan.proposed_text", { name: pick(p.plan_name, p.plan_code), level: levelName(p) })),
        h("button.btn.btn-primary#plan-confirm", { type: "button", onclick: () => act(`/api/v1/plan-activations/${p.id}/confirm`, {}) }, t("plan.confirm"), h("kbd", "Q")),
        h("button.btn.btn-ghost", { type: "button", onclick: () => ask(t("plan.dismiss"), (reason) => act(`/api/v1/plan-activations/${p.id}/dismiss`, { reason })) }, t("plan.dismiss")),
      ),
    );
  }
  if (p && p.state === "active" && canRun) {
    body.push(
      h(
        "div.plan-controls",
        ...(p.can_raise_to || []).map((lv) =>
          h("button.btn.btn-small.btn-danger", { type: "button", dataset: { raise: lv }, onclick: () => act(`/api/v1/plan-activations/${p.id}/raise`, { level: lv }) }, t("plan.raise_to", { level: pick((p.levels.find((x) => x.code === lv) || {}).name, lv) })),
        ),
        h("button.btn.btn-small#plan-stand-down", { type: "button", onclick: () => ask(t("plan.stand_down"), (reason) => act(`/api/v1/plan-activations/${p.id}/stand-down`, { reason })) }, t("plan.stand_down")),
      ),
    );
  }
  if (p && (p.state === "active" || p.state === "stood_down")) {
    body.push(
      h("h4", t("plan.checklist"), p.overdue_steps ? h("span.plan-overdue", ` ${t("plan.n_overdue", { n: p.overdue_steps })}`) : null),
      h(
        "ol.plan-checklist",
        (p.checklist || []).map((s) =>
          h(
            `li${s.overdue ? ".overdue" : ""}${s.done_at ? ".done" : ""}`,
            { dataset: { step: s.id } },
            h("span.plan-steptype", pick(s.type_name, s.type)),
            h("span.grow", pick({ name: s.title, name_en: s.title_en }, s.title)),
            stepTimer(s),
            p.state === "active" && !s.done_at && !s.cancelled && canRun
              ? h("button.btn.btn-small", { type: "button", onclick: () => act(`/api/v1/plan-activations/${p.id}/steps/${s.id}/done`, {}) }, t("plan.step_done"))
              : null,
          ),
        ),
      ),
      h("h4", t("plan.groups")),
      h(
        "ul.plan-groups",
        (p.groups || []).map((g) =>
          h(
            "li",
            h("strong", pick({ name: g.name, name_en: g.name_en }, g.name)),
            h(
              "span",
              (g.members || []).map((m) =>
                h(`span.plan-member${m.vacant ? ".vacant" : ""}`, `${pick({ name: m.label, name_en: m.label_en }, m.label)}：${m.vacant ? t("plan.vacant", { who: pick({ name: m.name, name_en: m.name_en }, m.name) }) : m.name}`),
              ),
            ),
          ),
        ),
      ),
      h("h4", t("plan.orders")),
      h(
        "ul.plan-orders",
        (p.orders || []).length
          ? p.orders.map((o) => h("li", h("strong", o.unit_name), h(`span.order-state.os-${o.state}`, t(`order.${o.state}`)), h("span.muted", t(`plan.kind_${o.kind}`))))
          : [h("li.muted", t("plan.no_orders"))],
        (p.shortfalls || []).map((s) => h("li.plan-short", t("plan.shortfall", { kind: t(`plan.kind_${s.kind}`), n: s.missing }))),
      ),
      p.meeting
        ? h(
            "div.plan-meeting",
            h("strong", t("plan.meeting")),
            h("span", p.meeting.title),
            h("span.muted", t(p.meeting.status === "running" ? "meeting.live" : "meeting.ended")),
            p.meeting.status === "running" ? h("button.btn.btn-small.btn-primary", { type: "button", onclick: () => join(p.meeting) }, t("console.join")) : null,
          )
        : null,
      h("h4", t("plan.notices")),
      h("ul.plan-notices", (p.notices || []).map(noticeRow)),
    );
  }
  if ((!p || !["proposed", "active"].includes(p.state)) && canRun) {
    body.push(h("button.btn.btn-small#plan-start", { type: "button", onclick: () => startDialogFor(c, act) }, t("plan.start"), h("kbd", "Q")));
  }
  return h("section.d-section.plan-section", h("h3", ...head), ...body);
}

let dialogOpener = null;

/** The console gives its dialog helper (one dialog element per page). */
export function useDialog(open) {
  dialogOpener = open;
}

/** Start a plan on a case by hand: choose the plan and the level. */
export async function startDialogFor(c, act) {
  let plans = [];
  try {
    plans = (await get("/api/v1/plans")).plans || [];
  } catch (err) {
    toast(errorText(err), "error");
    return;
  }
  if (!plans.length) {
    toast(t("plan.none_defined"), "error");
    return;
  }
  const select = h("select", { name: "plan", required: true }, plans.map((p) => h("option", { value: p.id }, pick({ name: p.name, name_en: p.name_en }, p.code))));
  const level = h("select", { name: "level" }, ["IV", "III", "II", "I"].map((lv) => h("option", { value: lv }, t(`plan.level_${lv}`))));
  dialogOpener({
    title: `${t("plan.start")} · ${c.number}`,
    body: [h("label.field", h("span", t("plan.choose")), select), h("label.field", h("span", t("plan.level")), level)],
    submit: t("plan.start"),
    onSubmit: (f) => act(`/api/v1/incidents/${c.id}/plan`, { plan: Number(f.plan.value), level: f.level.value }),
  });
}

// -- the person's own notices (叫应) -------------------------------------------------------------

/** Notices to this user, open ones first; each acknowledged with one click; a receipt once shown. */
export class MyNotices {
  constructor(userId, onChange) {
    this.userId = userId;
    this.items = new Map();
    this.receipted = new Set();
    this.onChange = onChange;
  }

  async load() {
    try {
      const r = await get("/api/v1/plan-notices");
      for (const n of r.notices || []) this.items.set(String(n.id), n);
    } catch {
      /* the feed brings them too */
    }
    this.onChange();
  }

  /** A change of a notice from the feed; true when it is a new one for this user. */
  apply(n) {
    if (!n || n.user_id !== this.userId) return false;
    const fresh = !this.items.has(String(n.id));
    this.items.set(String(n.id), n);
    this.onChange();
    return fresh && n.state === "sent";
  }

  open() {
    return [...this.items.values()].filter((n) => ["sent", "delivered"].includes(n.state)).sort((a, b) => b.id - a.id);
  }

  render(list) {
    const items = this.open();
    for (const n of items) {
      if (n.deliveries && n.deliveries.console && n.deliveries.console.state === "sent" && !this.receipted.has(n.id)) {
        this.receipted.add(n.id);
        post(`/api/v1/plan-notices/${n.id}/receipt`, {}).catch(() => this.receipted.delete(n.id));
      }
    }
    list.replaceChildren(
      ...items.map((n) =>
        h(
          "li.my-notice",
          { dataset: { id: n.id } },
          h("div.grow", n.text),
          h("span.muted", fmtDateTime(n.created_at)),
          h(
            "button.btn.btn-small.btn-primary.ack",
            {
              type: "button",
              onclick: async () => {
                try {
                  const done = await post(`/api/v1/plan-notices/${n.id}/ack`, {});
                  this.items.set(String(n.id), done);
                  this.onChange();
                } catch (err) {
                  toast(errorText(err), "error");
                }
              },
            },
            t("plan.ack"),
          ),
        ),
      ),
    );
    return items.length;
  }
}

// -- the board -----------------------------------------------------------------------------------

export function planBoardItem(p) {
  return h(
    "li",
    { dataset: { id: p.id } },
    h(`span.plan-level.pl-${p.level}`, p.level),
    h("span.grow", `${pick(p.plan_name, p.plan_code)} · ${pick({ name: p.area.name, name_en: p.area.name_en }, p.area.code)}`),
    p.state === "proposed" ? h("span.muted", t("plan.state_proposed")) : null,
    p.overdue_steps ? h("span.plan-overdue", t("plan.n_overdue", { n: p.overdue_steps })) : null,
  );
}

export function warningBoardItem(w) {
  const acks = w.acks || { asked: 0, acknowledged: 0 };
  // Who has answered (叫应), by name: the wall shows it next to the count.
  const who = (acks.people || []).filter((p) => p.state === "acknowledged").map((p) => p.name).filter(Boolean);
  return h(
    "li",
    { dataset: { id: w.id } },
    h("span.warn-badge", w.event),
    h("span.grow", `${w.headline || w.event} · ${(w.units || []).map((u) => pick({ name: u.name, name_en: u.name_en }, u.code)).join("、")}`),
    h(`span${acks.acknowledged < acks.asked ? ".plan-overdue" : ".plan-done"}`, t("plan.acks", { done: acks.acknowledged, asked: acks.asked })),
    who.length ? h("span.plan-who", who.join("、")) : null,
  );
}

/** A warning's areas as rings of [lon, lat] (circles drawn as 48-gons). */
export function warningRings(w) {
  const out = [];
  for (const a of w.areas || []) {
    if (a.type === "polygon") out.push(a.ring);
    else if (a.type === "circle") {
      const dlat = a.radius_km / 111.32;
      const dlon = a.radius_km / (111.32 * Math.max(Math.cos((a.lat * Math.PI) / 180), 1e-6));
      const ring = [];
      for (let i = 0; i <= 48; i += 1) ring.push([a.lon + dlon * Math.cos((2 * Math.PI * i) / 48), a.lat + dlat * Math.sin((2 * Math.PI * i) / 48)]);
      out.push(ring);
    }
  }
  return out;
}
