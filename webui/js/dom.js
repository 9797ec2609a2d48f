// Small DOM and formatting helpers shared by the pages.
import { serverNow } from "./clock.js";
import { locale, t } from "./i18n.js";

/** h("div.card#id", {onclick, dataset, ...attrs}, ...children) */
export function h(spec, attrs, ...children) {
  if (attrs === null || typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs)) {
    if (attrs !== undefined) children.unshift(attrs);
    attrs = {};
  }
  const m = /^([a-z0-9-]+)?((?:[.#][\w-]+)*)$/i.exec(spec);
  const el = document.createElement((m && m[1]) || "div");
  if (m && m[2]) {
    for (const part of m[2].match(/[.#][\w-]+/g)) {
      if (part[0] === ".") el.classList.add(part.slice(1));
      else el.id = part.slice(1);
    }
  }
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "class") el.className = [el.className, v].filter(Boolean).join(" ");
    else if (k === "text") el.textContent = v;
    else if (k === "value" || k === "checked") el[k] = v; // the live property, not the default attribute
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function $(sel, root = document) {
  return root.querySelector(sel);
}

export function $$(sel, root = document) {
  return [...root.querySelectorAll(sel)];
}

export function parseTime(v) {
  if (!v) return null;
  const d = v instanceof Date ? v : new Date(v);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function fmtTime(v, { seconds = false } = {}) {
  const d = parseTime(v);
  if (!d) return "";
  return d.toLocaleTimeString(locale(), { hour: "2-digit", minute: "2-digit", second: seconds ? "2-digit" : undefined, hour12: false });
}

export function fmtDateTime(v) {
  const d = parseTime(v);
  if (!d) return "";
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  if (sameDay) return fmtTime(d);
  return d.toLocaleString(locale(), { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false });
}

export function fmtDate(v) {
  const d = parseTime(v);
  return d ? d.toLocaleDateString(locale(), { year: "numeric", month: "2-digit", day: "2-digit" }) : "";
}

/** "3 min", "2 h 5 min", "1 d 4 h" */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return t("dur.s", { n: s });
  const m = Math.floor(s / 60);
  if (m < 60) return t("dur.m", { n: m });
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return m % 60 ? t("dur.hm", { h: hrs, m: m % 60 }) : t("dur.h", { n: hrs });
  const d = Math.floor(hrs / 24);
  return hrs % 24 ? t("dur.dh", { d, h: hrs % 24 }) : t("dur.d", { n: d });
}

/** Seconds from `v` until now (positive in the past). */
export function ageSeconds(v, now = serverNow()) {
  const d = parseTime(v);
  return d ? (now - d.getTime()) / 1000 : null;
}

export function fmtAgo(v) {
  const s = ageSeconds(v);
  if (s === null) return "";
  if (s < 45) return t("ago.now");
  return t("ago.past", { d: fmtDuration(s) });
}

export function fmtNumber(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return "—";
  return Number(n).toLocaleString(locale(), { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function fmtPercent(x, digits = 1) {
  if (x === null || x === undefined || Number.isNaN(Number(x))) return "—";
  return `${(Number(x) * 100).toFixed(digits)}%`;
}

export function fmtDistance(m) {
  if (m === null || m === undefined) return "—";
  return m >= 1000 ? `${(m / 1000).toFixed(m >= 10000 ? 0 : 1)} km` : `${Math.round(m)} m`;
}

let toastBox = null;

/** A short message in the corner; kind: "info" | "ok" | "error". */
export function toast(message, kind = "info", ms = 4000) {
  if (!toastBox) {
    toastBox = h("div.toasts", { role: "status", "aria-live": "polite" });
    document.body.append(toastBox);
  }
  const el = h(`div.toast.toast-${kind}`, message);
  toastBox.append(el);
  setTimeout(() => el.remove(), ms);
}

export function debounce(fn, ms) {
  let timer = 0;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** A random id for Idempotency-Key headers and client-side dedupe. */
export function uid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** The message to show for an error from api(). */
export function errorText(err) {
  if (!err) return "";
  if (err.status === 0) return t("error.network");
  const fields = err.fields && Object.keys(err.fields).length ? ` (${Object.entries(err.fields).map(([k, v]) => `${k}: ${v}`).join("; ")})` : "";
  return (err.message || String(err)) + fields;
}
