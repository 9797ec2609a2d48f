// The grid worker's app (/grid, 平安通): report with photos from the camera, my reports and their
// steps, verification tasks (核查), and the patrol log (网格日志).
//
// A report is sent once: its Idempotency-Key is made with the draft and kept until the server has
// answered, so pressing "submit" again after a timeout on a poor connection never makes two cases.
import { ApiError, api, get, logout, post, withToken } from "../api.js";
import { shrink } from "../photos.js";
import { errorText, fmtDateTime, fmtDuration, h, toast, uid } from "../dom.js";
import { applyI18n, localName, onLanguageChange, t } from "../i18n.js";
import { serverNow } from "../clock.js";
import { MapView, svg } from "../map.js";
import { PRIORITIES, categoryName, pick, prioBadge, stateBadge } from "../model.js";
import { languageSwitch, startPage } from "../shell.js";

const ROUTES = {
  reports: "/api/v1/reports",
  mine: "/api/v1/reports",
  tasks: "/api/v1/reports/tasks",
  answer: (id, action) => `/api/v1/reports/tasks/${id}/${action}`,
  patrols: "/api/v1/patrols",
  patrolStop: (id) => `/api/v1/patrols/${id}/stop`,
  patrolPoints: (id) => `/api/v1/patrols/${id}/points`,
  compliance: "/api/v1/patrols/compliance",
};
const MAX_PHOTOS = 9;

const S = {
  user: null,
  config: null,
  taxonomy: [],
  photos: [], // {blob, url, name}
  point: null, // {lat, lon, accuracy}
  key: null, // Idempotency-Key of the current draft
  patrol: null,
  patrolWatch: null,
  patrolPoints: [],
};

let placeMap = null;

// -- tabs --------------------------------------------------------------------------------------

let currentTab = "report";

function showTab(name) {
  currentTab = name;
  for (const b of document.querySelectorAll(".tabsbar button")) b.setAttribute("aria-selected", String(b.dataset.tab === name));
  for (const pane of document.querySelectorAll(".tab-pane")) pane.hidden = pane.id !== `tab-${name}`;
  if (!S.config) return; // still starting: main() fills the tab when it is ready
  if (name === "mine") loadMine();
  if (name === "tasks") loadTasks();
  if (name === "patrol") renderPatrol();
  if (name === "report" && placeMap) placeMap.resize();
}

// -- report ------------------------------------------------------------------------------------

function fillCategories() {
  const sel = document.getElementById("category");
  sel.replaceChildren(
    h("option", { value: "" }, t("console.choose")),
    ...S.taxonomy.map((top) =>
      h(
        "optgroup",
        { label: pick(top.name) },
        h("option", { value: top.code, dataset: { p: top.default_priority } }, pick(top.name)),
        (top.children || []).map((sub) => h("option", { value: sub.code, dataset: { p: sub.default_priority } }, pick(sub.name))),
      ),
    ),
  );
  const prio = document.getElementById("priority");
  const keep = prio.value;
  prio.replaceChildren(...PRIORITIES.map((p) => h("option", { value: p }, `${p} · ${t(`priority.${p}`)}`)));
  prio.value = keep || "P3";
}

function localNow() {
  const d = new Date();
  d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
  return d.toISOString().slice(0, 16);
}

/** "2026-05-03T14:05" (local, from the input) → ISO 8601 with the phone's zone. */
function withZone(local) {
  const d = new Date(local);
  if (Number.isNaN(d.getTime())) return undefined;
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? "+" : "-";
  const hh = String(Math.floor(Math.abs(off) / 60)).padStart(2, "0");
  const mm = String(Math.abs(off) % 60).padStart(2, "0");
  return `${local}:00${sign}${hh}:${mm}`;
}

async function addPhotos(files) {
  for (const file of files) {
    if (S.photos.length >= MAX_PHOTOS) {
      toast(t("grid.too_many_photos", { n: MAX_PHOTOS }), "error");
      break;
    }
    if (!file.type.startsWith("image/")) continue;
    const blob = await shrink(file);
    S.photos.push({ blob, url: URL.createObjectURL(blob), name: blob.name || file.name || "photo.jpg" });
  }
  S.key = null; // a different report: a new key
  renderPhotos();
}

function renderPhotos() {
  const row = document.getElementById("photo-row");
  const add = document.getElementById("photo-add");
  for (const el of [...row.querySelectorAll(".photo-thumb")]) el.remove();
  S.photos.forEach((p, i) => {
    row.insertBefore(
      h(
        "div.photo-thumb",
        h("img", { src: p.url, alt: "" }),
        h("button", {
          type: "button",
          "aria-label": t("grid.remove_photo"),
          onclick: () => {
            URL.revokeObjectURL(p.url);
            S.photos.splice(i, 1);
            S.key = null;
            renderPhotos();
          },
        }, "×"),
      ),
      add,
    );
  });
  add.hidden = S.photos.length >= MAX_PHOTOS;
}

function setPoint(p, source) {
  S.point = p;
  S.key = null;
  document.getElementById("place-text").textContent =
    `${p.lat.toFixed(5)}, ${p.lon.toFixed(5)}` + (p.accuracy ? ` · ±${Math.round(p.accuracy)} m` : "") + (source ? ` · ${t(source)}` : "");
  placeMap.setMarkers("pick", [{ id: "p", ...p }], {
    render: () => {
      const g = svg("g", { class: "mk mk-pick" });
      g.append(svg("path", { class: "mk-body", d: "M0,0 C-2,-7 -10,-10 -10,-18 A10,10 0 1 1 10,-18 C10,-10 2,-7 0,0 Z" }), svg("circle", { cy: -18, r: 3.5, fill: "#fff" }));
      return g;
    },
  });
}

function locate() {
  if (!("geolocation" in navigator)) {
    toast(t("squad.no_geolocation"), "error");
    return;
  }
  document.getElementById("place-text").textContent = t("squad.locating");
  navigator.geolocation.getCurrentPosition(
    (pos) => {
      setPoint({ lat: pos.coords.latitude, lon: pos.coords.longitude, accuracy: pos.coords.accuracy }, "grid.from_gps");
      placeMap.centerOn(pos.coords.longitude, pos.coords.latitude, 16);
    },
    (err) => {
      document.getElementById("place-text").textContent = err.code === 1 ? t("squad.geo_denied") : t("squad.geo_failed");
    },
    { enableHighAccuracy: true, timeout: 20000, maximumAge: 10000 },
  );
}

async function submitReport(ev) {
  ev.preventDefault();
  const form = ev.target;
  const error = document.getElementById("report-error");
  const button = document.getElementById("submit-report");
  error.hidden = true;
  const report = {
    category: form.category.value,
    priority: form.priority.value,
    description: form.description.value.trim(),
  };
  if (S.point) report.location = { lat: S.point.lat, lon: S.point.lon };
  if (form.address.value.trim()) report.address = form.address.value.trim();
  // Left at its default, the time is "just now": the server stamps it with its own clock.
  const observed = S.observedTouched && form.observed.value && withZone(form.observed.value);
  if (observed) report.observed_at = observed;
  const missing = [];
  if (!report.category) missing.push(t("console.category"));
  if (!report.description) missing.push(t("console.description"));
  if (!report.location && !report.address) missing.push(t("console.location"));
  if (missing.length) {
    error.textContent = t("grid.missing", { fields: missing.join("、") });
    error.hidden = false;
    return;
  }
  // The same draft keeps its key: a retry after a lost answer is the same report, never a second case.
  S.key = S.key || uid();
  const data = new FormData();
  data.append("report", new Blob([JSON.stringify(report)], { type: "application/json" }), "report.json");
  for (const p of S.photos) data.append("photo", p.blob, p.name);
  button.disabled = true;
  button.textContent = t("grid.sending");
  try {
    const r = await api("POST", ROUTES.reports, { form: data, headers: { "Idempotency-Key": S.key } });
    const routed = r.routed || {};
    const where = [routed.owner, routed.department].filter(Boolean).map((x) => localName(x)).join(" · ");
    toast(t("grid.sent", { number: r.number || "", where }), "ok", 8000);
    resetForm();
    showTab("mine");
  } catch (err) {
    error.textContent = err instanceof ApiError && err.status === 0 ? t("grid.retry_same") : errorText(err);
    error.hidden = false;
  } finally {
    button.disabled = false;
    button.textContent = t("grid.submit");
  }
}

function resetForm() {
  const form = document.getElementById("report-form");
  form.reset();
  for (const p of S.photos) URL.revokeObjectURL(p.url);
  S.photos = [];
  S.key = null;
  S.point = null;
  renderPhotos();
  placeMap.clearMarkers("pick");
  document.getElementById("place-text").textContent = t("grid.no_place_yet");
  document.getElementById("observed").value = localNow();
  S.observedTouched = false;
  document.getElementById("priority").value = "P3";
}

// -- my reports --------------------------------------------------------------------------------

function stepBar(c) {
  const step = c.step || {};
  const of = step.of || 7;
  const index = step.index || 1;
  return h(
    "div.steps",
    { title: pick(step.name, "") },
    Array.from({ length: of }, (_, i) => h(i + 1 < index ? "i.done" : i + 1 === index ? "i.now" : "i")),
  );
}

async function loadMine() {
  const ul = document.getElementById("mine");
  if (!S.config.features.reports) {
    ul.replaceChildren(h("li.empty.muted", t("grid.reports_off")));
    return;
  }
  try {
    const r = await get(ROUTES.mine, { limit: 50 });
    const items = Array.isArray(r) ? r : r.items || r.reports || [];
    if (!items.length) {
      ul.replaceChildren(h("li.empty.muted", t("grid.no_reports")));
      return;
    }
    ul.replaceChildren(
      ...items.map((c) =>
        h(
          "li",
          { dataset: { id: c.id, number: c.number } },
          prioBadge(c.priority),
          h("span.t1", categoryName(c)),
          stateBadge(c.state),
          h("span.t2", `${c.number} · ${pick(c.step && c.step.name, "")} · ${fmtDateTime(c.created_at)}`, stepBar(c)),
        ),
      ),
    );
  } catch (err) {
    ul.replaceChildren(h("li.empty.field-error", errorText(err)));
  }
}

// -- verification tasks ------------------------------------------------------------------------

async function loadTasks() {
  const box = document.getElementById("tasks");
  if (!S.config.features.reports) {
    box.replaceChildren(h("p.muted", t("grid.reports_off")));
    return;
  }
  try {
    const r = await get(ROUTES.tasks);
    const tasks = Array.isArray(r) ? r : r.items || r.tasks || [];
    if (!tasks.length) {
      box.replaceChildren(h("p.muted", t("grid.no_tasks")));
      return;
    }
    box.replaceChildren(...tasks.map(taskCard));
  } catch (err) {
    box.replaceChildren(h("p.field-error", errorText(err)));
  }
}

function taskCard(c) {
  const note = h("textarea", { rows: 2, placeholder: t("grid.verify_note") });
  const files = h("input", { type: "file", accept: "image/*", capture: "environment", multiple: true, class: "visually-hidden" });
  files.addEventListener("change", () => {
    const count = files.parentElement && files.parentElement.querySelector("[data-count]");
    if (count) count.textContent = files.files.length ? ` · ${files.files.length}` : "";
  });
  const feedback = (c.feedback || []).map((f) =>
    h(
      "div.small",
      h("strong", `${f.by || ""}${f.department ? ` (${f.department})` : ""}：`),
      f.note || "",
      (f.photos || []).length
        ? h("div.photo-row", f.photos.map((p) => h("div.photo-thumb", h("img", { src: withToken(typeof p === "string" ? p : p.url), alt: "" }))))
        : null,
    ),
  );
  const act = async (action) => {
    if (action === "reopen" && !note.value.trim()) {
      toast(t("grid.reason_needed"), "error");
      note.focus();
      return;
    }
    const data = new FormData();
    const body = { version: c.version, note: note.value.trim() || undefined };
    if (action === "reopen") body.reason = note.value.trim();
    data.append("answer", new Blob([JSON.stringify(body)], { type: "application/json" }), "answer.json");
    for (const f of files.files) data.append("photo", await shrink(f), f.name);
    try {
      await api("POST", ROUTES.answer(c.id, action), { form: data });
      toast(t(action === "verify" ? "grid.verified" : "grid.reopened", { number: c.number }), "ok");
      loadTasks();
    } catch (err) {
      toast(errorText(err), "error");
    }
  };
  return h(
    "div.task-card",
    { dataset: { id: c.id } },
    h("div", prioBadge(c.priority), " ", h("strong", categoryName(c)), " ", h("span.muted.small", c.number)),
    h("div.small.muted", c.address || pick(c.grid, "")),
    c.description ? h("div.small", c.description) : null,
    ...feedback,
    note,
    h(
      "label.btn.btn-small.task-photos",
      files,
      h("span", t("grid.verify_photos")),
      h("span.muted", { dataset: { count: "" } }),
    ),
    h(
      "div.task-actions",
      h("button.btn.btn-ok.big-btn", { type: "button", onclick: () => act("verify") }, t("action.verify")),
      h("button.btn.big-btn", { type: "button", onclick: () => act("reopen") }, t("action.reopen")),
    ),
  );
}

// -- patrol ------------------------------------------------------------------------------------

function today() {
  const d = new Date(serverNow());
  d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
  return d.toISOString().slice(0, 10);
}

async function loadPatrol() {
  if (!S.config.features.patrols) return;
  try {
    const r = await get(ROUTES.patrols, { limit: 20 });
    S.rule = r.rule || S.rule;
    S.patrol = (r.items || []).find((p) => p.running) || null;
    if (S.patrol) startTracking();
  } catch {
    S.patrol = null;
  }
}

let complianceCache = null;

async function loadCompliance() {
  if (!S.config.features.patrols) return null;
  try {
    const day = today();
    const r = await get(ROUTES.compliance, { from: day, to: day });
    S.rule = r.rule || S.rule;
    complianceCache = (r.workers || []).find((w) => w.user_id === S.user.id) || null;
  } catch {
    complianceCache = null;
  }
  return complianceCache;
}

function renderPatrol() {
  const box = document.getElementById("patrol");
  if (!S.config.features.patrols) {
    box.replaceChildren(h("h3", t("grid.patrol")), h("p.muted", t("grid.patrols_off")));
    return;
  }
  const p = S.patrol;
  const started = p && Date.parse(p.started_at);
  const elapsed = started ? (serverNow() - started) / 1000 : 0;
  const w = complianceCache || {};
  const rule = S.rule || { patrols_per_day: 2, min_hours: 2 };
  box.replaceChildren(
    h("h3", t(p ? "grid.patrolling" : "grid.patrol")),
    h("div.patrol-clock", { id: "patrol-clock" }, p ? clock(elapsed) : "00:00:00"),
    p ? h("p.muted.small", t("grid.patrol_points", { n: S.patrolPoints.length + (p.points || 0) })) : h("p.muted.small", t("grid.patrol_hint")),
    p
      ? h("button.btn.btn-danger.big-btn", { type: "button", id: "patrol-stop", onclick: stopPatrol }, t("grid.stop_patrol"))
      : h("button.btn.btn-primary.big-btn", { type: "button", id: "patrol-start", onclick: startPatrol }, t("grid.start_patrol")),
    h(
      "div.compliance",
      h("span", t("grid.patrols_today"), " ", h("b", `${w.counting_patrols ?? 0}/${rule.patrols_per_day}`)),
      h("span", t("grid.hours_today"), " ", h("b", `${Number(w.patrol_hours ?? 0).toFixed(1)} h`)),
      h("span", h("b", { class: w.compliant_days ? "" : "field-error" }, t(w.compliant_days ? "grid.compliant" : "grid.not_yet"))),
    ),
    h("p.muted.small", t("grid.patrol_rule", { n: rule.patrols_per_day, h: rule.min_hours })),
  );
}

function clock(seconds) {
  const s = Math.floor(seconds);
  return [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60].map((x) => String(x).padStart(2, "0")).join(":");
}

async function startPatrol() {
  try {
    const r = await post(ROUTES.patrols, {});
    S.patrol = r;
    S.patrolPoints = [];
    startTracking();
    toast(t("grid.patrol_started"), "ok");
  } catch (err) {
    if (err instanceof ApiError && err.status === 409 && err.body.error && err.body.error.patrol) {
      S.patrol = err.body.error.patrol; // one was running already (another tab, a lost answer)
      startTracking();
    } else toast(errorText(err), "error");
  }
  renderPatrol();
}

async function stopPatrol() {
  const p = S.patrol;
  if (!p) return;
  await flushPoints();
  const notes = window.prompt(t("grid.patrol_notes"), "") || "";
  try {
    await post(ROUTES.patrolStop(p.id), notes.trim() ? { notes: notes.trim() } : {});
    toast(t("grid.patrol_stopped"), "ok");
    S.patrol = null;
    stopTracking();
    await loadCompliance();
  } catch (err) {
    toast(errorText(err), "error");
  }
  renderPatrol();
}

function startTracking() {
  if (S.patrolWatch !== null || !("geolocation" in navigator)) return;
  S.patrolWatch = navigator.geolocation.watchPosition(
    (pos) => S.patrolPoints.push({ lat: pos.coords.latitude, lon: pos.coords.longitude, at: new Date(pos.timestamp).toISOString(), accuracy: pos.coords.accuracy }),
    () => {},
    { enableHighAccuracy: true, maximumAge: 10000 },
  );
  S.flushTimer = setInterval(flushPoints, 30000);
}

function stopTracking() {
  if (S.patrolWatch !== null) navigator.geolocation.clearWatch(S.patrolWatch);
  S.patrolWatch = null;
  clearInterval(S.flushTimer);
}

async function flushPoints() {
  if (!S.patrol || !S.patrolPoints.length) return;
  const batch = S.patrolPoints.splice(0);
  try {
    await post(ROUTES.patrolPoints(S.patrol.id), { points: batch });
    S.patrol.points = (S.patrol.points || 0) + batch.length;
  } catch {
    S.patrolPoints.unshift(...batch); // kept for the next try
  }
}

// -- start -------------------------------------------------------------------------------------

function buildMenu(user) {
  const menu = document.getElementById("menu");
  menu.replaceChildren(h("div.muted.small", user.display_name || user.username), languageSwitch(), h("button.btn", { type: "button", onclick: logout }, t("shell.logout")));
  document.getElementById("menu-btn").onclick = (ev) => {
    ev.stopPropagation();
    menu.hidden = !menu.hidden;
  };
  document.addEventListener("click", (ev) => {
    if (!menu.contains(ev.target)) menu.hidden = true;
  });
}

async function main() {
  // Tabs answer at once, even while the page is still loading.
  for (const b of document.querySelectorAll(".tabsbar button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  const { user, config } = await startPage({ roles: ["grid_worker"] });
  S.user = user;
  S.config = config;
  buildMenu(user);
  document.getElementById("grid-name").textContent = localName({ name: user.org_name, name_en: user.org_name_en }) || t("grid.title_short");
  document.getElementById("grid-sub").textContent = `${user.display_name || user.username} · ${t("role.grid_worker")}`;
  document.getElementById("photo-input").addEventListener("change", (ev) => {
    addPhotos([...ev.target.files]);
    ev.target.value = "";
  });
  document.getElementById("locate").addEventListener("click", locate);
  document.getElementById("report-form").addEventListener("submit", submitReport);
  document.getElementById("report-form").addEventListener("input", (ev) => {
    if (ev.target.id !== "photo-input") S.key = null; // the report changed: it is a new one
  });
  document.getElementById("category").addEventListener("change", (ev) => {
    const opt = ev.target.selectedOptions[0];
    if (opt && opt.dataset.p) document.getElementById("priority").value = opt.dataset.p;
  });
  document.getElementById("observed").value = localNow();
  document.getElementById("observed").addEventListener("change", () => (S.observedTouched = true));
  placeMap = new MapView(document.getElementById("place-map"), {
    tiles: config.map.tiles,
    minZoom: config.map.min_zoom,
    maxZoom: config.map.max_zoom,
    theme: "light",
    onClick: ({ lon, lat }) => setPoint({ lon, lat }, "grid.from_map"),
  });
  const [taxonomy, geojson] = await Promise.all([config.features.taxonomy ? get("/api/v1/taxonomy") : [], get("/api/v1/orgs/geojson")]);
  S.taxonomy = Array.isArray(taxonomy) ? taxonomy : taxonomy.categories || [];
  fillCategories();
  placeMap.setBoundaries(geojson);
  // Start the map on the worker's own grid.
  const mine = (geojson.features || []).find((f) => f.properties && f.properties.code === user.org);
  if (mine) {
    const ring = mine.geometry.coordinates[0];
    placeMap.fitPoints(ring.map(([lon, lat]) => [lon, lat]), 17);
  }
  onLanguageChange(() => {
    applyI18n(document);
    fillCategories();
    placeMap.relabel();
    renderPatrol();
  });
  await loadPatrol();
  await loadCompliance();
  renderPatrol();
  if (currentTab !== "report") showTab(currentTab);
  setInterval(() => {
    const el = document.getElementById("patrol-clock");
    if (el && S.patrol) el.textContent = clock((serverNow() - Date.parse(S.patrol.started_at)) / 1000);
  }, 1000);
  window.dispatchdGrid = { S };
}

main();
