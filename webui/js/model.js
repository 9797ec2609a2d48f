// How the pages read the API's objects: names in the current language, positions, steps, and the
// markers that draw cases, squads and meetings on the map.
import { ageSeconds } from "./dom.js";
import { has, lang, localName, t } from "./i18n.js";
import { arrowMarker, svg } from "./map.js";

export const PRIORITIES = ["P1", "P2", "P3", "P4"];
export const OPEN_STATES = ["reported", "accepted", "dispatched", "in_progress", "fed_back", "verified"];
export const ALL_STATES = [...OPEN_STATES, "closed", "evaluated", "rejected", "merged"];
export const CHANNELS = ["hotline", "grid_report", "open311", "officer", "walk_in", "video", "alarm", "squad"];
export const UNIT_STATUSES = ["available", "dispatched", "en_route", "on_scene", "returning", "off_duty"];

/** A name given as {"zh-CN": …, "en": …}, {name, name_en} or a plain string. */
export function pick(names, fallback = "") {
  if (!names) return fallback;
  if (typeof names === "string") return names;
  if (names["zh-CN"] !== undefined || names.en !== undefined) {
    return (lang() === "en" ? names.en : names["zh-CN"]) || names["zh-CN"] || names.en || fallback;
  }
  return localName(names) || fallback;
}

export function stateName(state) {
  return has(`state.${state}`) ? t(`state.${state}`) : state || "";
}

export function channelName(channel) {
  return has(`channel.${channel}`) ? t(`channel.${channel}`) : channel || "";
}

export function unitStatusName(status) {
  return has(`unit_status.${status}`) ? t(`unit_status.${status}`) : status || "";
}

export function categoryName(c) {
  return pick(c.category_name, c.category || "");
}

export function placeName(c) {
  const parts = [];
  if (c.address) parts.push(c.address);
  const where = c.grid || c.community || c.township;
  if (where) parts.push(pick(where, typeof where === "object" ? where.code : where));
  return parts.join(" · ");
}

export function isOpen(c) {
  return OPEN_STATES.includes(c.state);
}

/** The case's point as {lon, lat}, or nulls. */
export function casePoint(c) {
  const loc = c.location || {};
  return { lon: loc.lon ?? c.lon ?? null, lat: loc.lat ?? c.lat ?? null };
}

export function unitPoint(u) {
  const p = u.position || {};
  return { lon: p.lon ?? null, lat: p.lat ?? null };
}

/** Stale: the server says so, or the last fix is older than `staleAfter` seconds. */
export function unitStale(u, staleAfter = 300) {
  if (u.stale !== undefined && u.stale !== null && !u._moved) return Boolean(u.stale);
  const at = u.position && u.position.at;
  if (!at) return true;
  return ageSeconds(at) > staleAfter;
}

export function prioBadge(p) {
  const el = document.createElement("span");
  el.className = `prio prio-${p}`;
  el.textContent = p || "";
  return el;
}

export function stateBadge(state) {
  const el = document.createElement("span");
  el.className = `state state-${state}`;
  el.textContent = stateName(state);
  return el;
}

/** Urgency order: P1 first, then overdue, then oldest. */
export function byUrgency(a, b) {
  return (
    (a.priority || "P9").localeCompare(b.priority || "P9") ||
    Number(Boolean(b.overdue)) - Number(Boolean(a.overdue)) ||
    String(a.created_at || "").localeCompare(String(b.created_at || ""))
  );
}

// -- markers ------------------------------------------------------------------------------------

export function caseMarker(c, { size = 1, selected = false, ring = true } = {}) {
  const cls = ["mk", "mk-case", `mk-${c.priority}`, `mk-step-${c.state}`];
  if (c.overdue) cls.push("mk-overdue");
  if (selected) cls.push("mk-selected");
  const g = svg("g", { class: cls.join(" ") });
  const r = 8.5 * size;
  if (c.priority === "P1" && isOpen(c)) g.append(svg("circle", { r: r * 1.3, class: "mk-pulse" }));
  if (ring) g.append(svg("circle", { r: r * 1.55, class: "mk-ring" }));
  g.append(svg("circle", { r, class: "mk-body" }));
  // Sizes in the marker's own units, so that it scales as one piece (the board doubles it at 4K).
  g.append(svg("text", { class: "mk-glyph", "text-anchor": "middle", dy: "0.35em", "font-size": (r * 1.3).toFixed(1) }, (c.priority || "").slice(1)));
  const title = svg("title");
  title.textContent = `${c.number || ""} ${categoryName(c)} · ${stateName(c.state)}`;
  g.append(title);
  return g;
}

export function caseSignature(c, extra = "") {
  return `${c.priority}|${c.state}|${c.overdue}|${c.version}|${extra}`;
}

export function unitMarker(u, { size = 1, label = true, labelSize = 0, staleAfter } = {}) {
  const stale = unitStale(u, staleAfter);
  const g = arrowMarker({
    heading: u.position ? u.position.heading : null,
    cls: `us-${u.status}`,
    label: label ? u.name : "",
    stale,
    size,
    labelSize,
  });
  const title = svg("title");
  title.textContent = `${u.name} · ${unitStatusName(u.status)}${stale ? ` · ${t("unit.stale")}` : ""}`;
  g.append(title);
  return g;
}

export function unitSignature(u, staleAfter) {
  return `${u.status}|${u.position ? Math.round(u.position.heading ?? -1) : "x"}|${unitStale(u, staleAfter)}|${u.name}|${lang()}`;
}

export function meetingMarker(m, size = 1) {
  const g = svg("g", { class: "mk mk-meeting", transform: undefined });
  const inner = svg("g", { transform: `scale(${size})` });
  inner.append(svg("rect", { x: -11, y: -8, width: 16, height: 16, rx: 3 }));
  inner.append(svg("path", { d: "M6,-5 L12,-9 L12,9 L6,5 Z", fill: "#ede9fe" }));
  g.append(inner);
  const title = svg("title");
  title.textContent = m.title || "";
  g.append(title);
  return g;
}
