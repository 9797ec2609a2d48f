// The wall display (/board): map, counters, the lists that need action, squads and meetings, all
// from the board websocket (snapshot, then changes), with no reload and no scrolling.
import { get } from "../api.js";
import { chime, unlock } from "../alarm.js";
import { BoardState } from "../boardstate.js";
import { cameraMarker, cameraSignature, openCameraViewer } from "../cameras.js";
import { fmtDuration, fmtPercent, fmtTime, h } from "../dom.js";
import { locale, onLanguageChange, t } from "../i18n.js";
import { LiveSocket } from "../live.js";
import { MapView, svg } from "../map.js";
import {
  byUrgency,
  caseMarker,
  caseSignature,
  casePoint,
  categoryName,
  channelName,
  meetingMarker,
  pick,
  prioBadge,
  unitMarker,
  unitPoint,
  unitSignature,
  unitStale,
  unitStatusName,
  UNIT_STATUSES,
} from "../model.js";
import { languageSwitch, liveIndicator, startPage } from "../shell.js";
import { planBoardItem, warningBoardItem, warningRings } from "../plans.js";

const CHANNEL_ORDER = ["hotline", "grid_report", "open311", "officer", "walk_in", "video", "alarm"];
const state = new BoardState();
let map;
let config;
let staleAfter = 300;
let highlighted = null;
let bannerTimer = 0;
let renderQueued = false;
const fresh = new Set(); // ids of items that just arrived, flashed once
const unitNames = new Map(); // org code -> name, for meetings convened by a unit
// Emergency plans proposed or running, and active warnings with who acknowledged (docs/plans.md):
// from the snapshot's sections, then fetched again when one of them changes.
const plans = { activations: [], warnings: [] };
let plansTimer = 0;

function refreshPlans() {
  clearTimeout(plansTimer);
  plansTimer = setTimeout(async () => {
    try {
      const [a, w] = await Promise.all([get("/api/v1/plan-activations"), get("/api/v1/warnings")]);
      plans.activations = a.activations || [];
      plans.warnings = w.warnings || [];
      renderPlans();
    } catch {
      /* keep what is shown */
    }
  }, 800);
}

function renderPlans() {
  const running = plans.activations;
  document.getElementById("plan-count").textContent = running.length + plans.warnings.length;
  const items = [
    ...plans.warnings.map((w) => ({ kind: "warning", w })),
    ...running.map((p) => ({ kind: "plan", p })),
  ];
  fitList(document.getElementById("plan-list"), items, (x) => (x.kind === "warning" ? warningBoardItem(x.w) : planBoardItem(x.p)), "plan.none_running");
  if (map) map.setAreas("warnings", plans.warnings.flatMap(warningRings), "map-warning");
}

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

let unitsTimer = 0;

function scheduleUnits() {
  if (unitsTimer) return;
  unitsTimer = setTimeout(() => {
    unitsTimer = 0;
    requestAnimationFrame(() => {
      renderSquads();
      renderUnitMarkers();
    });
  }, 1000);
}

function setCounter(id, value) {
  const el = document.getElementById(id);
  const text = value === null || value === undefined ? "—" : String(value);
  if (el.textContent !== text) {
    const was = el.textContent;
    el.textContent = text;
    if (was !== "—" && was !== "") {
      el.classList.remove("bump");
      void el.offsetWidth; // restart the animation
      el.classList.add("bump");
    }
  }
}

function renderCounters() {
  const c = state.counters;
  if (!state.loaded) return;
  setCounter("c-received", c.received_today ?? 0);
  setCounter("c-open", c.open ?? 0);
  setCounter("c-overdue", c.overdue ?? 0);
  setCounter("c-to-accept", c.to_accept ?? 0);
  const by = c.received_today_by_channel || {};
  const channels = [...new Set([...CHANNEL_ORDER.filter((k) => by[k]), ...Object.keys(by)])];
  const max = Math.max(1, ...Object.values(by));
  const bars = channels.length
    ? channels.map((k) => {
        const fill = h("i");
        fill.style.width = `${(100 * (by[k] || 0)) / max}%`;
        return h("div.channel-bar", h("span", channelName(k)), h("span.bar", fill), h("b", by[k] || 0));
      })
    : [h("div.channel-bar", h("span.muted", t("board.no_intake")))];
  document.getElementById("c-channels").replaceChildren(...bars);
}

/** Fill a list and keep only what fits, with "+N more" at the end: a wall display never scrolls. */
function fitList(ul, items, renderItem, emptyKey) {
  if (!items.length) {
    ul.replaceChildren(h("li.empty", t(emptyKey)));
    return;
  }
  const els = items.slice(0, 40).map(renderItem);
  ul.replaceChildren(...els);
  const limit = ul.clientHeight;
  let shown = els.length;
  for (let i = 0; i < els.length; i++) {
    if (els[i].offsetTop - ul.offsetTop + els[i].offsetHeight > limit) {
      shown = i;
      break;
    }
  }
  if (shown < items.length) {
    const more = h("li.more");
    // Make room for the "more" line.
    while (shown > 0) {
      for (const el of els.slice(shown)) el.remove();
      more.textContent = t("board.more", { n: items.length - shown });
      ul.append(more);
      if (more.offsetTop - ul.offsetTop + more.offsetHeight <= limit) break;
      more.remove();
      shown -= 1;
    }
    if (shown === 0) {
      for (const el of els) el.remove();
      more.textContent = t("board.more", { n: items.length });
      ul.append(more);
    }
  }
}

function caseItem(c, side) {
  const li = h(
    "li.clickable",
    { dataset: { id: c.id }, onclick: () => highlight(c) },
    prioBadge(c.priority),
    h("span.l1", `${categoryName(c)}`),
    side,
    h("span.l2", `${c.number || ""} · ${placeOf(c)}`),
  );
  if (fresh.has(`incident:${c.id}`)) li.classList.add("fresh");
  return li;
}

function placeOf(c) {
  const where = c.grid || c.community || c.township;
  return c.address || (where ? pick(where, where.code || "") : "") || t("board.no_place");
}

function ageSide(fromIso, cls = "") {
  const s = (state.now() - Date.parse(fromIso)) / 1000;
  return h(`span.side${cls ? `.${cls}` : ""}`, Number.isNaN(s) ? "" : fmtDuration(s));
}

function overdueSide(c) {
  const due = c.deadline && c.deadline.due_at;
  if (!due) return h("span.side.bad", t("case.overdue"));
  const s = (state.now() - Date.parse(due)) / 1000;
  return h("span.side.bad", t("board.overdue_by", { d: fmtDuration(s) }));
}

function renderLists() {
  const open = [...state.incidents.values()];
  const toAccept = open.filter((c) => c.state === "reported").sort(byUrgency);
  const overdue = open.filter((c) => c.overdue).sort(byUrgency);
  const emergencies = open.filter((c) => c.priority === "P1" && c.state !== "reported").sort(byUrgency);
  document.getElementById("n-to_accept").textContent = state.counters.to_accept ?? toAccept.length;
  document.getElementById("n-overdue").textContent = state.counters.overdue ?? overdue.length;
  document.getElementById("n-emergencies").textContent = emergencies.length;
  fitList(document.getElementById("list-to_accept"), toAccept, (c) => caseItem(c, ageSide(c.created_at, c.overdue ? "bad" : "warn")), "board.none_to_accept");
  fitList(document.getElementById("list-overdue"), overdue, (c) => caseItem(c, overdueSide(c)), "board.none_overdue");
  fitList(
    document.getElementById("list-emergencies"),
    emergencies,
    (c) => caseItem(c, h("span.side", h("span", { class: `state state-${c.state}` }, t(`state.${c.state}`)))),
    "board.none_emergencies",
  );
  const calls = state.waitingCalls().sort((a, b) => String(a.offered_at).localeCompare(String(b.offered_at)));
  document.getElementById("n-calls").textContent = calls.length;
  const callsUl = document.getElementById("list-calls");
  if (!config.features.hotline && !calls.length) {
    callsUl.replaceChildren(h("li.empty", t("board.hotline_off")));
  } else {
    fitList(
      callsUl,
      calls,
      (c) => {
        const history = c.history || {};
        const repeat = history.previous_calls || (history.cases || []).length;
        return h(
          "li",
          { dataset: { id: c.id } },
          h("span.prio.prio-P3", c.state === "ringing" ? t("call.ringing") : t("call.queued")),
          h("span.l1", maskPhone(c.caller), repeat ? h("span.repeat", t("board.repeat_caller", { n: repeat })) : null),
          ageSide(c.offered_at, "warn"),
          h("span.l2", [pick(c.line, c.dialled), pick(c.department_name, c.department || "")].filter(Boolean).join(" → ")),
        );
      },
      "board.none_calls",
    );
  }
}

function maskPhone(n) {
  const s = String(n || "");
  return s.length >= 7 ? `${s.slice(0, 3)}****${s.slice(-4)}` : s || t("board.unknown_caller");
}

function renderSquads() {
  const units = [...state.units.values()];
  document.getElementById("squad-count").textContent = units.length;
  const counts = {};
  let stale = 0;
  for (const u of units) {
    counts[u.status] = (counts[u.status] || 0) + 1;
    if (unitStale(u, staleAfter)) stale += 1;
  }
  const summary = UNIT_STATUSES.filter((s) => counts[s]).map((s) =>
    h("span", { class: `unit-status us-${s}` }, unitStatusName(s), h("b", counts[s])),
  );
  if (stale) summary.push(h("span.stale-mark", `? ${t("unit.stale")}`, h("b", stale)));
  document.getElementById("squad-summary").replaceChildren(...summary);
  const order = { en_route: 0, dispatched: 1, on_scene: 2, returning: 3, available: 4, off_duty: 5 };
  units.sort((a, b) => (order[a.status] ?? 9) - (order[b.status] ?? 9) || String(a.name).localeCompare(String(b.name)));
  fitList(
    document.getElementById("squad-list"),
    units,
    (u) => {
      const isStale = unitStale(u, staleAfter);
      const at = u.position && u.position.at;
      return h(
        "li.unit-row",
        { dataset: { id: u.id } },
        h("span", { class: `unit-status us-${u.status}` }),
        h("span.l1", u.name),
        h("span.ust", unitStatusName(u.status)),
        h("span.side", { class: isStale ? "side stale-mark" : "side", title: isStale ? t("unit.stale") : "" }, `${isStale ? "? " : ""}${at ? fmtAgoShort(at) : "—"}`),
      );
    },
    "board.no_squads",
  );
}

function fmtAgoShort(iso) {
  const s = (state.now() - Date.parse(iso)) / 1000;
  return Number.isNaN(s) ? "" : s < 60 ? t("ago.now") : fmtDuration(s);
}

function renderMeetings() {
  // The board section lists running meetings; later changes say their status.
  const meetings = [...state.meetings.values()].filter((m) => (m.status || "running") !== "ended");
  meetings.sort((a, b) => Number((b.status || "running") === "running") - Number((a.status || "running") === "running"));
  document.getElementById("meeting-count").textContent = meetings.length;
  const ul = document.getElementById("meeting-list");
  if (!config.features.meetings && !meetings.length) {
    ul.replaceChildren(h("li.empty", t("board.meetings_off")));
    return;
  }
  fitList(
    ul,
    meetings,
    (m) => {
      const running = (m.status || "running") === "running";
      const incident = m.incident_id ? state.incidents.get(String(m.incident_id)) : null;
      return h(
        "li",
        { dataset: { id: m.id } },
        h("span", { class: running ? "prio prio-P1" : "prio prio-P4" }, running ? t("meeting.live") : t("meeting.soon")),
        h("span.l1", m.title || `#${m.id}`),
        running && m.started_at ? ageSide(m.started_at) : h("span.side", m.scheduled_at ? fmtTime(m.scheduled_at) : ""),
        h(
          "span.l2",
          [
            pick(unitNames.get(m.org), m.org || ""),
            m.participants_online !== undefined ? t("meeting.online", { n: m.participants_online }) : null,
            incident ? incident.number : null,
          ]
            .filter(Boolean)
            .join(" · "),
        ),
      );
    },
    "board.no_meetings",
  );
}

function renderUnitMarkers() {
  const units = [...state.units.values()].map((u) => ({ ...u, ...unitPoint(u) }));
  // A few squads: always named; many: named once the map is zoomed in (CSS .map-far).
  map.el.classList.toggle("map-few-units", units.length <= 12);
  map.setMarkers("units", units, {
    // Names at 1rem (20 px at 1080p), never over each other: the wall is read from across the room.
    render: (u) => unitMarker(u, { size: 1.15 * scale(), labelSize: 20 * scale(), staleAfter }),
    signature: (u) => `${unitSignature(u, staleAfter)}|${scale()}`,
    declutter: true,
  });
}

function renderMap() {
  // Cameras first: their layer lies under the cases and squads.
  map.setMarkers("cameras", [...state.cameras.values()], {
    render: (c) => cameraMarker(c, 0.9 * scale()),
    signature: (c) => cameraSignature(c, scale()),
    onClick: openCameraViewer,
  });
  const cases = [...state.incidents.values()].map((c) => ({ ...c, ...casePoint(c) }));
  // Most urgent drawn last, on top.
  cases.sort((a, b) => byUrgency(b, a));
  map.setMarkers("cases", cases, {
    render: (c) => caseMarker(c, { size: 1.25 * scale(), selected: highlighted === String(c.id) }),
    signature: (c) => caseSignature(c, `${highlighted === String(c.id)}|${scale()}`),
    onClick: (c) => c && highlight(c),
  });
  renderUnitMarkers();
  const meetings = [];
  for (const m of state.meetings.values()) {
    const c = m.incident_id !== undefined && m.incident_id !== null ? state.incidents.get(String(m.incident_id)) : null;
    const p = m.location || (c && casePoint(c));
    if (p && p.lat !== null && p.lat !== undefined) meetings.push({ ...m, lat: p.lat, lon: p.lon });
  }
  map.setMarkers("meetings", meetings, { render: (m) => meetingMarker(m, scale()), signature: (m) => `${m.title}|${m.status}|${scale()}` });
}

/** Marker size follows the root font size: 1 at 1080p, 2 at 2160p. */
function scale() {
  return Math.max(0.6, parseFloat(getComputedStyle(document.documentElement).fontSize) / 20);
}

function render() {
  renderCounters();
  renderLists();
  renderSquads();
  renderMeetings();
  renderPlans();
  renderMap();
  fresh.clear();
}

function highlight(c) {
  highlighted = String(c.id);
  const p = casePoint(c);
  if (p.lat !== null) map.centerOn(p.lon, p.lat, Math.max(map.zoom, 14));
  scheduleRender();
  clearTimeout(highlight.timer);
  highlight.timer = setTimeout(() => {
    highlighted = null;
    scheduleRender();
  }, 15000);
}

// A consultation that asks this unit to join: the wall says so, with a sound.
const INVITING = ["created", "started"];

function invitedHere(m) {
  return Array.isArray(m.invited) && state.org !== null && m.invited.includes(state.org);
}

function showMeetingBanner(m) {
  const el = document.getElementById("board-banner");
  el.className = "board-banner banner-meeting";
  el.textContent = t("board.meeting_invite", { title: m.title || "", org: pick(unitNames.get(m.org), m.org || "") });
  el.hidden = false;
  clearTimeout(bannerTimer);
  bannerTimer = setTimeout(() => (el.hidden = true), 30000);
}

function showBanner(c) {
  const el = document.getElementById("board-banner");
  el.className = `board-banner banner-${c.priority}`;
  el.textContent = `${t("board.new_case")} · ${c.priority} · ${categoryName(c)} · ${placeOf(c)}`;
  el.hidden = false;
  clearTimeout(bannerTimer);
  bannerTimer = setTimeout(() => (el.hidden = true), 12000);
}

function onMessage(msg) {
  switch (msg.type) {
    case "snapshot":
      state.applySnapshot(msg);
      plans.activations = (msg.sections && msg.sections.plans) || [];
      plans.warnings = (msg.sections && msg.sections.warnings) || [];
      tickClock();
      refreshRate();
      scheduleRender();
      break;
    case "change": {
      const r = state.applyChange(msg);
      if (r && r.entity === "positions") {
        // Positions are the bulk of the feed: they redraw the squads only, at most once a second.
        scheduleUnits();
        break;
      }
      if (r && r.item && r.item.id !== undefined) fresh.add(`${r.entity}:${r.item.id}`);
      if (r && r.entity === "incident" && r.reported && r.kept) showBanner(r.item);
      if (r && r.entity === "incident" && r.action === "close") refreshRate();
      if (r && (r.entity === "plan_activation" || r.entity === "warning" || (r.entity === "plan_notice" && r.item && r.item.warning_id))) {
        refreshPlans();
        if (r.entity === "warning" && r.action === "received") {
          const el = document.getElementById("board-banner");
          el.className = "board-banner banner-P1";
          el.textContent = t("plan.warning_toast", { event: r.item.event || "", headline: r.item.headline || "" });
          el.hidden = false;
          clearTimeout(bannerTimer);
          bannerTimer = setTimeout(() => (el.hidden = true), 30000);
          chime();
        }
      }
      if (r && r.entity === "meeting" && r.kept && INVITING.includes(r.action) && invitedHere(r.item)) {
        showMeetingBanner(r.item);
        chime();
      }
      scheduleRender();
      break;
    }
    case "heartbeat":
      if (msg.at) state.noteServerTime(msg.at);
      break;
    default:
      break;
  }
}

let rateTimer = 0;

async function refreshRate() {
  if (!config.features.stats) return;
  clearTimeout(rateTimer);
  rateTimer = setTimeout(async () => {
    try {
      const s = await get("/api/v1/stats");
      const figures = s.totals || s.figures || s;
      setCounter("c-rate", fmtPercent(figures.resolution_rate, 1));
    } catch {
      /* keep the last figure */
    }
  }, 500);
}

function tickClock() {
  const now = new Date(state.now());
  const date = now.toLocaleDateString(locale(), { year: "numeric", month: "long", day: "numeric", weekday: "short" });
  document.getElementById("board-clock").textContent = `${date} ${fmtTime(now, { seconds: true })}`;
}

function legend() {
  const icon = (el) => {
    const s = svg("svg", { viewBox: "-14 -14 28 28" });
    s.append(el);
    return s;
  };
  const items = [
    ...["P1", "P2", "P3", "P4"].map((p) => [icon(caseMarker({ priority: p, state: "closed" }, { size: 0.8, ring: false })), `${p} ${t(`priority.${p}`)}`]),
    [icon(caseMarker({ priority: "P3", state: "reported" }, { size: 0.8 })), t("state.reported")],
    [icon(caseMarker({ priority: "P3", state: "in_progress" }, { size: 0.8 })), t("state.in_progress")],
    [icon(caseMarker({ priority: "P3", state: "fed_back" }, { size: 0.8 })), t("state.fed_back")],
    [icon(unitMarker({ name: "", status: "available", position: { heading: 45, at: new Date().toISOString() }, stale: false }, { label: false, size: 0.7 })), t("board.legend_squad")],
    [icon(unitMarker({ name: "", status: "available", position: null, stale: true }, { label: false, size: 0.7 })), t("unit.stale")],
  ];
  document.getElementById("legend").replaceChildren(...items.map(([i, label]) => h("span", i, label)));
}

async function main() {
  let user;
  ({ user, config } = await startPage({ roles: ["duty_officer", "leader", "admin", "ops", "department_handler"] }));
  staleAfter = config.units_stale_after || 300;
  document.getElementById("board-title").textContent = t("board.heading", { org: pick({ name: user.org_name, name_en: user.org_name_en }) });
  const live = liveIndicator();
  document.getElementById("live-slot").append(live.el);
  document.getElementById("lang-slot").append(languageSwitch());
  map = new MapView(document.getElementById("map"), {
    tiles: config.map.tiles,
    minZoom: config.map.min_zoom,
    maxZoom: config.map.max_zoom,
    theme: "dark",
  });
  legend();
  tickClock();
  setInterval(tickClock, 1000);
  // A wall plays sound once someone has touched it (browsers start audio after a gesture).
  document.addEventListener("pointerdown", () => unlock(), { once: true });
  // Ages, stale marks and "overdue by" move with time even when nothing changes.
  setInterval(scheduleRender, 15000);
  onLanguageChange(() => {
    document.getElementById("board-title").textContent = t("board.heading", { org: pick({ name: user.org_name, name_en: user.org_name_en }) });
    map.relabel();
    legend();
    tickClock();
    scheduleRender();
    refreshRate();
  });
  window.addEventListener("resize", scheduleRender);
  get("/api/v1/orgs/geojson").then((fc) => map.setBoundaries(fc));
  get("/api/v1/orgs", { depth: 1 })
    .then((r) => {
      for (const u of [...(r.above || []), ...(r.units || [])]) unitNames.set(u.code, { name: u.name, name_en: u.name_en });
      scheduleRender();
    })
    .catch(() => {});
  refreshRate();
  setInterval(refreshRate, 300000);
  if (!config.features.board_ws) {
    live.set("unavailable");
    return;
  }
  // While the feed is down the wall says so, and when it last was up: what it shows may be old.
  let lastLive = null;
  const since = h("span.board-since");
  document.getElementById("live-slot").append(since);
  const onStatus = (status) => {
    live.set(status);
    document.body.dataset.live = status;
    if (status === "live") {
      lastLive = null;
      since.textContent = "";
    } else {
      lastLive = lastLive || new Date(state.now());
      since.textContent = t("board.last_update", { at: fmtTime(lastLive, { seconds: true }) });
    }
  };
  const socket = new LiveSocket("/ws/board", { onMessage, onStatus });
  socket.start();
  // Today's counters start again at local midnight: take a fresh snapshot when the day changes.
  let day = new Date().toDateString();
  setInterval(() => {
    const today = new Date().toDateString();
    if (today === day) return;
    day = today;
    socket.resetSequence();
    socket.stop();
    socket.start();
  }, 30000);
  window.dispatchdBoard = { state, socket, map };
}

main();
