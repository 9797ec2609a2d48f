// i18n: zh-CN first, English on request. Every visible string lives in the two dictionaries
// /ui/i18n/zh-CN.json and /ui/i18n/en.json (a test checks they hold the same keys).
//
// In HTML: data-i18n="key" sets textContent; data-i18n-placeholder, data-i18n-title and
// data-i18n-aria-label set those attributes. In script: t("key", {name: value}).

const STORAGE_KEY = "dispatchd.lang";
export const LANGUAGES = ["zh-CN", "en"];

let current = "zh-CN";
let dict = {};
const listeners = new Set();

function initialLanguage() {
  const stored = localStorage.getItem(STORAGE_KEY);
  if (LANGUAGES.includes(stored)) return stored;
  const query = new URLSearchParams(location.search).get("lang");
  if (LANGUAGES.includes(query)) return query;
  return "zh-CN";
}

async function load(lang) {
  const r = await fetch(`/ui/i18n/${lang}.json`, { cache: "no-cache" });
  if (!r.ok) throw new Error(`dictionary ${lang}: HTTP ${r.status}`);
  return r.json();
}

export async function initI18n() {
  current = initialLanguage();
  dict = await load(current);
  document.documentElement.lang = current;
  applyI18n(document);
  return current;
}

export function lang() {
  return current;
}

export function isEnglish() {
  return current === "en";
}

/** The text for `key`, with {name} placeholders filled from `vars`; the key itself if missing. */
export function t(key, vars) {
  let s = dict[key];
  if (s === undefined) {
    console.warn(`i18n: missing key ${key}`);
    s = key;
  }
  if (vars) s = s.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
  return s;
}

/** True when the dictionary has `key` (for optional, data-driven keys such as categories). */
export function has(key) {
  return key in dict;
}

export function applyI18n(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const [attr, data] of [
    ["placeholder", "i18nPlaceholder"],
    ["title", "i18nTitle"],
    ["aria-label", "i18nAriaLabel"],
  ]) {
    for (const el of root.querySelectorAll(`[data-i18n-${attr}]`)) el.setAttribute(attr, t(el.dataset[data]));
  }
  const title = document.querySelector("title[data-i18n]");
  if (title) document.title = title.textContent;
}

/** Switch language without a reload; pages re-render through onLanguageChange. */
export async function setLanguage(next) {
  if (!LANGUAGES.includes(next) || next === current) return;
  dict = await load(next);
  current = next;
  localStorage.setItem(STORAGE_KEY, next);
  document.documentElement.lang = next;
  applyI18n(document);
  for (const fn of listeners) fn(next);
}

export function onLanguageChange(fn) {
  listeners.add(fn);
}

/** The name of an org unit, category or department in the current language. */
export function localName(obj) {
  if (!obj) return "";
  if (typeof obj === "string") return obj;
  if (current === "en") return obj.name_en || obj.en || obj.name || obj.zh || obj.code || "";
  return obj.name || obj.zh || obj.name_en || obj.code || "";
}

const LOCALE = { "zh-CN": "zh-CN", en: "en-GB" };

export function locale() {
  return LOCALE[current];
}
