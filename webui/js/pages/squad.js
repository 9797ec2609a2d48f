// The squad app (/squad), mobile first and installable: orders arrive on /ws/squad with a sound and
// a vibration; receipt is acknowledged to the server at once (so it stops resending), and the member
// accepts or declines; status buttons and position sharing go over the same socket.
//
// Correct after a reconnect: the server sends again every order this device has not acknowledged,
// and the page keeps orders by id, so an order shows once however often it arrives; on every
// connection the open orders are read again over HTTP, so a reload also shows accepted ones.
import { audioReady, isRinging, startRinging, stopRinging, unlock } from "../alarm.js";
import { api, get, logout } from "../api.js";
import { shrink } from "../photos.js";
import { errorText, fmtDateTime, fmtDuration, h, toast } from "../dom.js";
import { applyI18n, onLanguageChange, t } from "../i18n.js";
import { noteServerTime, serverNow } from "../clock.js";
import { LiveSocket } from "../live.js";
import { MapView } from "../map.js";
import { caseMarker, categoryName, pick, prioBadge, unitStatusName } from "../model.js";
import { languageSwitch, liveIndicator, startPage } from "../shell.js";

const OPEN = ["pending", "delivered", "accepted"];
const DEVICE_STATUSES = ["en_route", "on_scene", "returning", "available", "off_duty"];

const S = {
  user: null,
  config: null,
  units: new Map(),
  orders: new Map(), // id -> order
  unseen: new Set(), // orders not yet looked at (ringing)
  me: null, // my last position
  socket: null,
  watch: null,
  lastSent: null,
  pending: new Map(), // requests waiting for ok/error: key -> {resolve, reject}
  notices: new Map(), // notices to this person (plans, warnings' 叫应): id -> notice
};

let orderMap = null;

function currentOrder() {
  const open = [...S.orders.values()].filter((o) => OPEN.includes(o.state));
  // Not yet accepted first (it needs an answer), then the newest.
  open.sort((a, b) => Number(a.state === "accepted") - Number(b.state === "accepted") || String(b.created_at).localeCompare(String(a.created_at)));
  return open[0] || null;
}

function orderPoint(o) {
  const loc = (o.place && o.place.location) || (o.incident && o.incident.place && o.incident.place.location);
  return loc && loc.lat !== null && loc.lat !== undefined ? { lat: loc.lat, lon: loc.lon } : null;
}

function orderState(o) {
  return t(`order.${o.state}`);
}

function navLinks(o) {
  const p = orderPoint(o);
  if (!p) return null;
  const label = encodeURIComponent((o.incident && o.incident.number) || "");
  // geo: opens the phone's own map or navigation app with WGS-84 coordinates (RFC 5870);
  // AMap's link is told the coordinates are WGS-84 and converts them itself.
  return h(
    "div.order-nav",
    h("a.btn.btn-primary.big-btn", { href: `geo:${p.lat},${p.lon}?q=${p.lat},${p.lon}(${label})` }, t("squad.navigate")),
    h(
      "a.btn.big-btn",
      { href: `https://uri.amap.com/navigation?to=${p.lon},${p.lat},${label}&mode=car&coordinate=wgs84&callnative=1`, rel: "noopener noreferrer", target: "_blank" },
      t("squad.navigate_amap"),
    ),
  );
}

function renderOrder() {
  const box = document.getElementById("order");
  const idle = document.getElementById("idle");
  const o = currentOrder();
  if (!o) {
    box.hidden = true;
    idle.hidden = false;
    // Not in any unit (the server said so): nothing will come until the centre adds this member.
    idle.classList.toggle("no-unit", Boolean(S.noUnit));
    idle.querySelector(".idle-icon").textContent = S.noUnit ? "!" : "✓";
    idle.querySelector("h2").textContent = t(S.noUnit ? "squad.no_unit" : "squad.no_order");
    idle.querySelector("p").textContent = t(S.noUnit ? "squad.no_unit_hint" : "squad.no_order_hint");
    if (orderMap) orderMap.destroy();
    orderMap = null;
    return;
  }
  const inc = o.incident || {};
  const place = o.place || inc.place || {};
  const mapBox = h("div.order-map");
  const isNew = S.unseen.has(String(o.id));
  const buttons = [];
  if (o.state !== "accepted") {
    buttons.push(
      h("button.btn.btn-ok.big-btn", { type: "button", id: "accept", onclick: () => answer(o, "accept") }, t("squad.accept")),
      h("button.btn.btn-danger.big-btn", { type: "button", id: "decline", onclick: () => declineDialog(o) }, t("squad.decline")),
    );
  }
  if (isNew) {
    buttons.push(h("button.btn.big-btn.wide", { type: "button", id: "ack", onclick: () => silence(o) }, t("squad.acknowledge")));
  }
  if (o.state === "accepted") {
    buttons.push(
      h("button.btn.btn-primary.big-btn", { type: "button", id: "en-route", onclick: () => setStatus("en_route") }, t("unit_status.en_route")),
      h("button.btn.btn-primary.big-btn", { type: "button", id: "on-scene", onclick: () => setStatus("on_scene") }, t("unit_status.on_scene")),
      h("button.btn.btn-ok.big-btn.wide", { type: "button", id: "handled", onclick: () => handledForm(o) }, t("squad.handled")),
    );
  }
  box.className = `order-card panel o-${o.priority || inc.priority}${isNew ? " order-new" : ""}`;
  box.dataset.id = o.id;
  box.replaceChildren(
    h(
      "div.order-band",
      prioBadge(o.priority || inc.priority),
      h("span", t("squad.order_no", { number: inc.number || "" })),
      h("span.o-state", { id: "order-state" }, orderState(o)),
    ),
    h(
      "div.order-body",
      h("h2", categoryName(inc) || t("squad.order")),
      o.instructions ? h("p.order-instr", o.instructions) : null,
      h("div.order-place", h("span.muted", `${t("console.f_place")}：`), [place.address, pick(place.area, "")].filter(Boolean).join(" · ") || t("board.no_place")),
      inc.description ? h("p.order-desc", inc.description) : null,
      h("div.order-meta", `${inc.number || ""} · ${t("squad.sent_at", { at: fmtDateTime(o.created_at) })}${S.me && orderPoint(o) ? ` · ${t("squad.distance", { d: distanceText(o) })}` : ""}`),
      orderPoint(o) ? mapBox : null,
      navLinks(o),
    ),
    h("div.order-actions", buttons),
  );
  idle.hidden = true;
  box.hidden = false;
  if (orderPoint(o)) drawOrderMap(mapBox, o);
}

function distanceText(o) {
  const p = orderPoint(o);
  const R = 6371008.8;
  const rad = (d) => (d * Math.PI) / 180;
  const a = Math.sin(rad(p.lat - S.me.lat) / 2) ** 2 + Math.cos(rad(S.me.lat)) * Math.cos(rad(p.lat)) * Math.sin(rad(p.lon - S.me.lon) / 2) ** 2;
  const m = 2 * R * Math.asin(Math.sqrt(a));
  return m >= 1000 ? `${(m / 1000).toFixed(1)} km` : `${Math.round(m)} m`;
}

let geojson = null;

async function drawOrderMap(box, o) {
  if (orderMap) orderMap.destroy();
  orderMap = new MapView(box, { tiles: S.config.map.tiles, minZoom: S.config.map.min_zoom, maxZoom: S.config.map.max_zoom, theme: "light" });
  const p = orderPoint(o);
  const inc = o.incident || {};
  orderMap.setMarkers("target", [{ id: "t", ...p, priority: o.priority || inc.priority, state: "dispatched" }], {
    render: (x) => caseMarker(x, { size: 1.3 }),
  });
  drawMe();
  const pts = [[p.lon, p.lat]];
  if (S.me) pts.push([S.me.lon, S.me.lat]);
  orderMap.fitPoints(pts, 16);
  if (!geojson) {
    try {
      geojson = await get("/api/v1/orgs/geojson");
    } catch {
      geojson = { features: [] };
    }
  }
  orderMap.setBoundaries(geojson);
  orderMap.fitPoints(pts, 16);
}

function drawMe() {
  if (!orderMap || !S.me) return;
  orderMap.setMarkers("me", [{ id: "me", lat: S.me.lat, lon: S.me.lon }], {
    render: () => {
      const g = document.createElementNS("http://www.w3.org/2000/svg", "g");
      g.setAttribute("class", "mk mk-unit mk-me");
      g.innerHTML = '<circle r="14" class="mk-halo"/><circle r="7" class="mk-body"/>';
      return g;
    },
  });
}

function renderRecent() {
  const ul = document.getElementById("recent");
  const orders = [...S.orders.values()].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  if (!orders.length) {
    ul.replaceChildren(h("li.empty.muted", t("squad.none_today")));
    return;
  }
  ul.replaceChildren(
    ...orders.slice(0, 10).map((o) =>
      h(
        "li",
        prioBadge(o.priority || (o.incident || {}).priority),
        h("span.t1", categoryName(o.incident || {}) || (o.incident || {}).number || t("squad.order")),
        h("span.state", orderState(o)),
        h("span.t2", `${(o.incident || {}).number || ""} · ${fmtDateTime(o.created_at)}`),
      ),
    ),
  );
}

function myUnits() {
  return [...S.units.values()];
}

function renderUnit() {
  const units = myUnits();
  const u = units[0];
  document.getElementById("unit-name").textContent = u ? units.map((x) => x.name).join("、") : t("squad.title_short");
  const st = document.getElementById("unit-status");
  st.className = `unit-status${u ? ` us-${u.status}` : ""}`;
  st.textContent = u ? unitStatusName(u.status) : t("squad.no_unit");
  const grid = document.getElementById("status-buttons");
  grid.replaceChildren(
    ...DEVICE_STATUSES.map((s) =>
      h(
        `button.btn.unit-status.us-${s}`,
        { type: "button", dataset: { status: s }, "aria-pressed": String(Boolean(u && u.status === s)), disabled: !u, onclick: () => setStatus(s) },
        unitStatusName(s),
      ),
    ),
  );
}

/** Notices to this person still waiting for 叫应, each acknowledged with one tap. */
function renderNotices() {
  const box = document.getElementById("notices");
  if (!box) return;
  const open = [...S.notices.values()].filter((n) => ["sent", "delivered"].includes(n.state)).sort((a, b) => b.id - a.id);
  box.hidden = !open.length;
  box.replaceChildren(
    ...open.map((n) =>
      h(
        "div.notice-card",
        { dataset: { id: n.id } },
        h("p", n.text || ""),
        h(
          "button.btn.btn-primary.big-btn.ack",
          {
            type: "button",
            onclick: async () => {
              try {
                const done = await api("POST", `/api/v1/plan-notices/${n.id}/ack`, { body: {} });
                S.notices.set(String(n.id), done);
                if (!S.unseen.size) stopRinging();
                renderNotices();
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
}

function render() {
  renderNotices();
  renderUnit();
  renderOrder();
  renderRecent();
}

// -- talking to the server ---------------------------------------------------------------------

function request(msg) {
  // The server answers each message with ok/error naming it ("for" and, for orders, order_id).
  const key = `${msg.type}:${msg.order_id ?? msg.status ?? ""}`;
  return new Promise((resolve, reject) => {
    S.pending.set(key, { resolve, reject });
    S.socket.send(msg);
    setTimeout(() => {
      if (S.pending.get(key)) {
        S.pending.delete(key);
        reject(new Error(t("squad.no_answer")));
      }
    }, 15000);
  });
}

function settle(msg) {
  const kind = msg.for;
  const key = `${kind}:${msg.order_id ?? (kind === "status" ? msg.status ?? "" : "")}`;
  let entry = S.pending.get(key);
  let found = key;
  if (!entry) {
    // An error about a status carries no status: match the oldest request of that kind.
    for (const [k, v] of S.pending) {
      if (k.startsWith(`${kind}:`)) {
        entry = v;
        found = k;
        break;
      }
    }
  }
  if (!entry) return;
  S.pending.delete(found);
  if (msg.type === "ok") entry.resolve(msg);
  else entry.reject(new Error(msg.message || msg.code));
}

function upsertOrder(o) {
  const key = String(o.id);
  const known = S.orders.get(key);
  S.orders.set(key, { ...(known || {}), ...o });
  return !known;
}

function onMessage(msg) {
  switch (msg.type) {
    case "hello":
      if (msg.at) noteServerTime(msg.at);
      S.noUnit = false;
      S.units = new Map((msg.units || []).map((u) => [String(u.id), u]));
      refreshOrders();
      render();
      break;
    case "order": {
      const o = msg.order;
      const isNew = upsertOrder(o);
      // Receipt first, whatever the person does: the server stops sending it again.
      S.socket.send({ type: "ack", order_id: o.id });
      if (isNew && OPEN.includes(o.state) && o.state !== "accepted") {
        S.unseen.add(String(o.id));
        startRinging();
        notify(o);
      }
      render();
      break;
    }
    case "order_update": {
      const o = msg.order;
      upsertOrder(o);
      if (!OPEN.includes(o.state) || o.state === "accepted") {
        S.unseen.delete(String(o.id));
        if (!S.unseen.size) stopRinging();
      }
      if (o.state === "cancelled" || o.state === "reassigned") {
        toast(t("squad.order_withdrawn", { number: (o.incident || {}).number || "" }), "info", 8000);
      }
      render();
      break;
    }
    case "notice": {
      // A plan's or a warning's notice to this person: shown until acknowledged (叫应).
      const n = msg.notice || {};
      const known = S.notices.get(String(n.id));
      S.notices.set(String(n.id), n);
      if (!known && ["sent", "delivered"].includes(n.state)) {
        startRinging();
        toast(n.text || "", "error", 15000);
      }
      renderNotices();
      break;
    }
    case "unit_status": {
      const u = S.units.get(String(msg.unit_id));
      if (u) u.status = msg.status;
      renderUnit();
      break;
    }
    case "ok":
      if (msg.order) upsertOrder(msg.order);
      if (msg.for === "status" && msg.unit_id !== undefined) {
        const u = S.units.get(String(msg.unit_id));
        if (u) u.status = msg.status;
      }
      settle(msg);
      if (msg.for !== "position" && msg.for !== "ack") render();
      break;
    case "error":
      if (msg.code === "no_unit") {
        S.units = new Map();
        S.noUnit = true;
        render();
      }
      if (msg.for) settle(msg);
      break;
    default:
      break;
  }
}

async function refreshOrders() {
  try {
    const r = await get("/api/v1/orders", { open: true, limit: 50 });
    for (const o of r.orders || []) upsertOrder(o);
    render();
  } catch {
    /* the socket still brings new orders */
  }
}

function notify(o) {
  // A system notification when the app is in the background (permission asked on the first tap).
  if (document.visibilityState === "visible" || !("Notification" in window) || Notification.permission !== "granted") return;
  const inc = o.incident || {};
  try {
    new Notification(t("squad.new_order"), { body: `${o.priority || ""} ${categoryName(inc)} ${o.instructions || ""}`.trim(), tag: `order-${o.id}`, requireInteraction: true });
  } catch {
    /* notifications may be unavailable */
  }
}

function silence(o) {
  S.unseen.delete(String(o.id));
  if (!S.unseen.size) stopRinging();
  renderOrder();
}

async function answer(o, kind, reason) {
  unlock();
  const msg = { type: kind, order_id: o.id };
  if (reason) msg.reason = reason;
  try {
    const r = await request(msg);
    if (r.order) upsertOrder(r.order);
    else upsertOrder({ id: o.id, state: r.state });
    S.unseen.delete(String(o.id));
    if (!S.unseen.size) stopRinging();
    toast(t(kind === "accept" ? "squad.accepted" : "squad.declined"), "ok");
    if (kind === "accept") setStatus("en_route", { quiet: true });
    render();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

/** The squad is done on site: what it did, with photos; the order is completed (and the case fed
 * back when the squad handles it). */
function handledForm(o) {
  const box = document.querySelector(".order-actions");
  const note = h("textarea#handled-note", { rows: 3, placeholder: t("squad.handled_note_hint") });
  const files = h("input#handled-photos", { type: "file", accept: "image/*", capture: "environment", multiple: true });
  const send = h("button.btn.btn-ok.big-btn", { type: "submit" }, t("squad.handled_send"));
  const form = h(
    "form.handled-form",
    { onsubmit: (ev) => sendHandled(ev, o, note, files, send) },
    h("label", t("squad.handled_note"), note),
    h("label", t("squad.handled_photos"), files),
    h("div.order-actions", send, h("button.btn.big-btn", { type: "button", onclick: () => renderOrder() }, t("console.cancel"))),
  );
  box.replaceWith(form);
  note.focus();
}

async function sendHandled(ev, o, note, files, send) {
  ev.preventDefault();
  if (!note.value.trim()) {
    toast(t("squad.handled_note_required"), "error");
    note.focus();
    return;
  }
  const data = new FormData();
  data.append("handled", new Blob([JSON.stringify({ note: note.value.trim() })], { type: "application/json" }), "handled.json");
  for (const f of files.files) data.append("photo", await shrink(f), f.name);
  send.disabled = true;
  try {
    const r = await api("POST", `/api/v1/orders/${o.id}/handled`, { form: data });
    upsertOrder(r);
    toast(t("squad.handled_done", { number: (o.incident || {}).number || "" }), "ok", 6000);
    render();
  } catch (err) {
    send.disabled = false;
    toast(errorText(err), "error");
  }
}

function declineDialog(o) {
  const reason = window.prompt(t("squad.decline_reason"), "");
  if (reason === null) return;
  answer(o, "decline", reason.trim() || undefined);
}

async function setStatus(status, { quiet = false } = {}) {
  unlock();
  const units = myUnits();
  if (!units.length) return;
  try {
    for (const u of units) {
      const msg = { type: "status", status };
      if (units.length > 1) msg.unit_id = u.id;
      await request(msg);
      u.status = status;
    }
    if (!quiet) toast(t("squad.status_set", { status: unitStatusName(status) }), "ok");
    render();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

// -- position ----------------------------------------------------------------------------------

function setShare(on) {
  const info = document.getElementById("share-info");
  localStorage.setItem("dispatchd.squad.share", on ? "1" : "0");
  if (!on) {
    if (S.watch !== null) navigator.geolocation.clearWatch(S.watch);
    S.watch = null;
    info.textContent = t("squad.share_off");
    return;
  }
  if (!("geolocation" in navigator)) {
    info.textContent = t("squad.no_geolocation");
    document.getElementById("share").checked = false;
    return;
  }
  info.textContent = t("squad.locating");
  S.watch = navigator.geolocation.watchPosition(
    (pos) => {
      const c = pos.coords;
      S.me = { lat: c.latitude, lon: c.longitude, accuracy: c.accuracy, at: pos.timestamp };
      info.textContent = t("squad.share_on", { acc: Math.round(c.accuracy || 0), at: new Date(pos.timestamp).toLocaleTimeString() });
      drawMe();
      sendPosition(pos);
    },
    (err) => {
      info.textContent = err.code === 1 ? t("squad.geo_denied") : t("squad.geo_failed");
    },
    { enableHighAccuracy: true, maximumAge: 5000, timeout: 30000 },
  );
}

function sendPosition(pos) {
  // At most one fix every 5 s: enough for the board (it shows one per unit per second at most).
  const now = Date.now();
  if (S.lastSent && now - S.lastSent < 5000) return;
  S.lastSent = now;
  const c = pos.coords;
  // Dated by the server's clock: the phone's own may be minutes off.
  const msg = { type: "position", lat: c.latitude, lon: c.longitude, at: Math.round(pos.timestamp + serverNow() - Date.now()) };
  if (Number.isFinite(c.accuracy)) msg.accuracy = c.accuracy;
  if (Number.isFinite(c.speed) && c.speed !== null) msg.speed = c.speed * 3.6;
  if (Number.isFinite(c.heading) && c.heading !== null) msg.heading = c.heading;
  if (Number.isFinite(c.altitude) && c.altitude !== null) msg.altitude = c.altitude;
  if (myUnits().length) S.socket.send(msg);
}

// -- start -------------------------------------------------------------------------------------

function buildMenu(user) {
  // Built again when the language changes: every word in it follows.
  document.getElementById("menu").replaceChildren(
    h("div.muted.small", `${user.display_name || user.username}`),
    languageSwitch(),
    h("button.btn", { type: "button", onclick: logout }, t("shell.logout")),
  );
}

function wireMenu() {
  const menu = document.getElementById("menu");
  document.getElementById("menu-btn").onclick = (ev) => {
    ev.stopPropagation();
    menu.hidden = !menu.hidden;
  };
  document.addEventListener("click", (ev) => {
    if (!menu.contains(ev.target)) menu.hidden = true;
  });
}

async function main() {
  const { user, config } = await startPage({ roles: ["squad_member"] });
  S.user = user;
  S.config = config;
  const live = liveIndicator();
  document.getElementById("live-slot").append(live.el);
  buildMenu(user);
  wireMenu();
  const hint = document.getElementById("sound-hint");
  const enableSound = async () => {
    await unlock();
    hint.hidden = audioReady();
    if ("Notification" in window && Notification.permission === "default") Notification.requestPermission().catch(() => {});
  };
  hint.hidden = false;
  hint.addEventListener("click", enableSound);
  document.addEventListener("pointerdown", enableSound, { once: true });
  document.getElementById("share").addEventListener("change", (ev) => setShare(ev.target.checked));
  if (localStorage.getItem("dispatchd.squad.share") === "1") {
    document.getElementById("share").checked = true;
    setShare(true);
  }
  onLanguageChange(() => {
    applyI18n(document);
    buildMenu(user);
    render();
  });
  render();
  setInterval(() => {
    const o = currentOrder();
    const el = document.getElementById("order-state");
    if (o && el && o.state !== "accepted" && o.accept_by) {
      const left = (Date.parse(o.accept_by) - serverNow()) / 1000;
      el.textContent = left > 0 ? `${orderState(o)} · ${fmtDuration(left)}` : orderState(o);
    }
  }, 1000);
  if ("serviceWorker" in navigator && location.protocol !== "file:") {
    navigator.serviceWorker.register("/ui/squad/sw.js", { scope: "/squad" }).catch(() => {});
  }
  if (!config.features.squad_ws) {
    live.set("unavailable");
    return;
  }
  const onStatus = (status) => live.set(status === "reconnecting" && S.noUnit ? "no_unit" : status);
  S.socket = new LiveSocket("/ws/squad", { onMessage, onStatus, resume: false, ping: true });
  S.socket.start();
  window.dispatchdSquad = { S, ringing: isRinging };
}

main();
