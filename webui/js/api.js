// The API client: bearer token in localStorage, JSON in and out, errors as ApiError.
import { lang } from "./i18n.js";

const TOKEN_KEY = "dispatchd.token";
const USER_KEY = "dispatchd.user";

export class ApiError extends Error {
  constructor(status, code, message, fields, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.fields = fields || {};
    this.body = body || {};
  }
}

export const session = {
  token() {
    return localStorage.getItem(TOKEN_KEY);
  },
  user() {
    try {
      return JSON.parse(localStorage.getItem(USER_KEY) || "null");
    } catch {
      return null;
    }
  },
  save(token, user) {
    localStorage.setItem(TOKEN_KEY, token);
    localStorage.setItem(USER_KEY, JSON.stringify(user));
  },
  clear() {
    localStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(USER_KEY);
  },
};

export function loginUrl() {
  const next = location.pathname + location.search;
  return `/login?next=${encodeURIComponent(next)}`;
}

function toLogin() {
  session.clear();
  if (location.pathname !== "/login") location.assign(loginUrl());
}

function buildUrl(path, query) {
  const url = new URL(path, location.origin);
  if (query) {
    for (const [k, v] of Object.entries(query)) {
      if (v === undefined || v === null || v === "") continue;
      url.searchParams.set(k, String(v));
    }
  }
  return url.pathname + url.search;
}

/**
 * Call the API. `body` is sent as JSON, `form` (a FormData) as multipart. Resolves to the parsed
 * JSON (or text for non-JSON answers); rejects with ApiError. A 401 sends the user to the login page.
 */
export async function api(method, path, { body, form, query, headers, signal, raw } = {}) {
  const h = { Accept: "application/json", "Accept-Language": lang() === "en" ? "en" : "zh-CN", ...headers };
  const token = session.token();
  if (token) h.Authorization = `Bearer ${token}`;
  let payload;
  if (form) payload = form;
  else if (body !== undefined) {
    h["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(buildUrl(path, query), { method, headers: h, body: payload, signal, cache: "no-store" });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", err.message || "network error");
  }
  if (raw) {
    if (!r.ok) throw await toError(r);
    return r;
  }
  if (r.status === 401 && !path.endsWith("/auth/login")) {
    toLogin();
    throw await toError(r);
  }
  if (!r.ok) throw await toError(r);
  if (r.status === 204) return null;
  const type = r.headers.get("Content-Type") || "";
  return type.includes("json") ? r.json() : r.text();
}

async function toError(r) {
  let body = {};
  try {
    body = await r.json();
  } catch {
    /* not JSON */
  }
  const e = body.error || {};
  return new ApiError(r.status, e.code || `http_${r.status}`, e.message || r.statusText, e.fields, body);
}

export const get = (path, query, opts) => api("GET", path, { ...opts, query });
export const post = (path, body, opts) => api("POST", path, { ...opts, body });

/** The user of the stored token, or a redirect to the login page. */
export async function requireSession() {
  if (!session.token()) {
    location.assign(loginUrl());
    return new Promise(() => {});
  }
  const me = await get("/api/v1/auth/me");
  session.save(session.token(), me);
  return me;
}

export async function logout() {
  try {
    await post("/api/v1/auth/logout");
  } catch {
    /* the token may already be gone */
  }
  session.clear();
  location.assign("/login");
}

/** A URL of a protected file that an <img> can load: the token goes in the query string. */
export function withToken(url) {
  if (!url) return url;
  const u = new URL(url, location.origin);
  if (u.origin !== location.origin) return "";
  u.searchParams.set("token", session.token() || "");
  return u.pathname + u.search;
}

let configPromise = null;

/** GET /api/v1/ui/config once: the map settings and which capabilities this server has. */
export function uiConfig() {
  if (!configPromise) configPromise = get("/api/v1/ui/config");
  return configPromise;
}

/** Where each role starts after logging in. */
export function homeFor(role) {
  switch (role) {
    case "squad_member":
      return "/squad";
    case "grid_worker":
      return "/grid";
    case "leader":
    case "ops":
      return "/board";
    default:
      return "/console";
  }
}
