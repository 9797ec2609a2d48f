// Statistics (/stats): the closed loop's figures for a unit and period, as charts and tables, with
// the CSV of the same figures (GET /api/v1/stats.csv, the server's own export).
import { api, get } from "../api.js";
import { groupedBars, horizontalBars } from "../charts.js";
import { debounce, errorText, fmtDuration, fmtNumber, fmtPercent, h, toast } from "../dom.js";
import { has, localName, onLanguageChange, t } from "../i18n.js";
import { channelName, pick } from "../model.js";
import { startPage, topBar } from "../shell.js";

const PRESETS = ["today", "7d", "30d", "month", "year"];
const S = { user: null, config: null, units: [], preset: "30d", data: null, taxonomy: new Map() };

/** The first and last local day of a preset, counted back from the server's today. */
function presetRange(p) {
  const today = new Date(`${S.today}T12:00:00Z`);
  const start = new Date(today);
  if (p === "7d") start.setUTCDate(today.getUTCDate() - 6);
  else if (p === "30d") start.setUTCDate(today.getUTCDate() - 29);
  else if (p === "month") start.setUTCDate(1);
  else if (p === "year") start.setUTCMonth(0, 1);
  return [start.toISOString().slice(0, 10), S.today];
}

/** The last day of a period the server gave ([from, to) with `to` at local midnight). */
function lastDay(to) {
  const d = new Date(`${String(to).slice(0, 10)}T12:00:00Z`);
  if (String(to).slice(11, 19) === "00:00:00") d.setUTCDate(d.getUTCDate() - 1);
  return d.toISOString().slice(0, 10);
}

function params() {
  return {
    org: document.getElementById("org").value || undefined,
    from: document.getElementById("from").value || undefined,
    to: document.getElementById("to").value || undefined,
  };
}

function renderPresets() {
  document.getElementById("presets").replaceChildren(
    ...PRESETS.map((p) =>
      h(
        "button.preset",
        {
          type: "button",
          "aria-pressed": String(S.preset === p),
          onclick: () => {
            S.preset = p;
            const [from, to] = presetRange(p);
            document.getElementById("from").value = from;
            document.getElementById("to").value = to;
            renderPresets();
            load();
          },
        },
        t(`stats.p_${p}`),
      ),
    ),
  );
}

async function load() {
  try {
    S.data = await get("/api/v1/stats", params());
    render();
  } catch (err) {
    toast(errorText(err), "error");
  }
}

function kpi(labelKey, value, { sub = null, cls = "" } = {}) {
  return h(`div.kpi${cls ? `.${cls}` : ""}`, h("span.kpi-label", t(labelKey)), h("span.kpi-value", value), sub ? h("span.kpi-sub", sub) : null);
}

function yoy(d) {
  const p = d.previous_year || {};
  if (p.received_change === null || p.received_change === undefined) return t("stats.yoy_none", { n: fmtNumber(p.received ?? 0) });
  const pct = Number(p.received_change) * 100;
  return h("span", t("stats.yoy"), " ", h(`span.${pct > 0 ? "up" : "down"}`, `${pct > 0 ? "+" : ""}${pct.toFixed(1)}%`), ` (${fmtNumber(p.received)})`);
}

function render() {
  const d = S.data;
  if (!d) return;
  // The period is in the command centre's local days: read the dates as the server wrote them.
  document.getElementById("period-line").textContent = t("stats.period_line", {
    org: localName(d.org),
    from: String(d.from).slice(0, 10),
    to: lastDay(d.to),
  });
  const sat = d.satisfaction || {};
  document.getElementById("kpis").replaceChildren(
    kpi("stats.received", fmtNumber(d.received), { sub: yoy(d) }),
    kpi("stats.accepted", fmtNumber(d.accepted), { sub: t("stats.rejected_merged", { r: fmtNumber(d.rejected), m: fmtNumber(d.merged) }) }),
    kpi("stats.closed", fmtNumber(d.closed), { sub: t("stats.open_now", { n: fmtNumber(d.open) }) }),
    kpi("stats.resolution_rate", fmtPercent(d.resolution_rate), { cls: d.resolution_rate >= 0.9 ? "good" : "", sub: t("stats.rate_hint") }),
    kpi("stats.township_share", fmtPercent(d.township_or_below_share), { sub: t("stats.township_hint", { n: fmtNumber(d.closed_township_or_below) }) }),
    kpi("stats.overdue", fmtNumber(d.overdue), { cls: d.overdue ? "bad" : "", sub: t("stats.overdue_now", { n: fmtNumber(d.overdue_now) }) }),
    kpi("stats.median_dispatch", d.median_dispatch_s === null ? "—" : fmtDuration(d.median_dispatch_s)),
    kpi("stats.median_close", d.median_close_s === null ? "—" : fmtDuration(d.median_close_s)),
    kpi("stats.satisfaction", fmtPercent(sat.satisfied_share), { sub: t("stats.satisfaction_hint", { mean: sat.mean ?? "—", n: fmtNumber(sat.evaluated ?? 0) }) }),
  );
  const units = (d.by_unit || []).map((u) => ({ ...u, label: localName(u) }));
  const chartUnits = document.getElementById("chart-units");
  chartUnits.replaceChildren(
    h(
      "div.legend-row",
      h("span", h("i", { style: "background:#3b82f6" }), t("stats.received")),
      h("span", h("i", { style: "background:#22c55e" }), t("stats.closed")),
      h("span", h("i", { style: "background:#f59e0b" }), t("stats.resolution_rate")),
    ),
    units.length
      ? groupedBars(units, {
          series: [
            { key: "received", cls: "bar-received", label: t("stats.received") },
            { key: "closed", cls: "bar-closed", label: t("stats.closed") },
          ],
          rate: "resolution_rate",
          labelOf: (u) => u.label,
          width: Math.max(640, chartUnits.clientWidth - 24),
          height: 260,
        })
      : h("p.empty", t("stats.no_data")),
  );
  const cats = (d.by_category || []).map((c) => ({ ...c, label: S.taxonomy.get(c.key || c.code) || pick(c.name, c.key || c.code) }));
  document.getElementById("chart-categories").replaceChildren(
    cats.length ? horizontalBars(cats, { value: (c) => c.received, label: (c) => c.label, width: chartWidth("chart-categories") }) : h("p.empty", t("stats.no_data")),
  );
  const channels = Object.entries(d.by_channel || {}).map(([k, v]) => ({ key: k, received: typeof v === "object" ? v.received : v }));
  channels.sort((a, b) => b.received - a.received);
  document.getElementById("chart-channels").replaceChildren(
    channels.length ? horizontalBars(channels, { value: (c) => c.received, label: (c) => channelName(c.key), width: chartWidth("chart-channels") }) : h("p.empty", t("stats.no_data")),
  );
  const prios = ["P1", "P2", "P3", "P4"].map((p) => {
    const v = (d.by_priority || {})[p];
    return { key: p, received: typeof v === "object" && v ? v.received : v || 0 };
  });
  document.getElementById("chart-priorities").replaceChildren(
    horizontalBars(prios, { value: (c) => c.received, label: (c) => `${c.key} ${t(`priority.${c.key}`)}`, cls: (c) => `bar-${c.key}`, width: chartWidth("chart-priorities") }),
  );
  renderTable("table-units", units, { name: (u) => u.label, total: d });
  renderTable("table-departments", (d.by_department || []).map((x) => ({ ...x, label: localName(x) })), { name: (x) => x.label, departments: true });
  renderExtra(d);
}

/** Draw at the chart's own width, so that text keeps its size whatever the screen. */
function chartWidth(id) {
  return Math.max(320, document.getElementById(id).clientWidth - 24);
}

function rateCell(x) {
  if (x === null || x === undefined) return h("td", "—");
  const fill = h("i");
  fill.style.width = `${Math.round(Math.min(1, x) * 100)}%`;
  return h("td", fmtPercent(x), h("span.ratebar", fill));
}

function renderTable(id, rows, { name, total, departments = false }) {
  const table = document.getElementById(id);
  const head = [
    departments ? "stats.col_department" : "stats.col_unit",
    "stats.received",
    "stats.accepted",
    "stats.closed",
    "stats.resolution_rate",
    ...(departments ? [] : ["stats.township_share"]),
    "stats.overdue",
    "stats.median_dispatch",
    "stats.median_close",
    "stats.satisfaction",
  ];
  const row = (x, label) =>
    h(
      "tr",
      h("td", label),
      h("td", fmtNumber(x.received)),
      h("td", fmtNumber(x.accepted)),
      h("td", fmtNumber(x.closed)),
      rateCell(x.resolution_rate),
      departments ? null : h("td", fmtPercent(x.township_or_below_share)),
      h("td", fmtNumber(x.overdue)),
      h("td", x.median_dispatch_s === null || x.median_dispatch_s === undefined ? "—" : fmtDuration(x.median_dispatch_s)),
      h("td", x.median_close_s === null || x.median_close_s === undefined ? "—" : fmtDuration(x.median_close_s)),
      h("td", fmtPercent((x.satisfaction || {}).satisfied_share)),
    );
  table.replaceChildren(
    h("thead", h("tr", head.map((k) => h("th", t(k))))),
    h("tbody", rows.length ? rows.map((x) => row(x, name(x))) : h("tr", h("td.empty", { colspan: head.length }, t("stats.no_data")))),
    ...(total ? [h("tfoot", row(total, t("stats.total")))] : []),
  );
}

/** Sections other capabilities add to the statistics (hotline, patrols …): their figures as a
 * table, and each list of rows in them (per line, per unit) as a table of its own. */
function renderExtra(d) {
  const known = new Set([
    "org", "from", "to", "received", "accepted", "rejected", "merged", "closed", "open", "resolution_rate",
    "closed_township_or_below", "township_or_below_share", "overdue", "overdue_now", "median_dispatch_s",
    "median_close_s", "satisfaction", "previous_year", "by_unit", "by_department", "by_category",
    "by_channel", "by_priority",
  ]);
  const skip = new Set(["org", "from", "to", "rule", "standard"]);
  const label = (k) => (has(`stats.k_${k}`) ? t(`stats.k_${k}`) : k);
  const box = document.getElementById("extra");
  const sections = Object.entries(d).filter(([k, v]) => !known.has(k) && v && typeof v === "object" && !Array.isArray(v));
  box.replaceChildren(
    ...sections.map(([name, v]) => {
      const scalars = Object.entries(v).filter(([k, x]) => !skip.has(k) && (x === null || typeof x !== "object"));
      const lists = Object.entries(v).filter(([, x]) => Array.isArray(x) && x.length && typeof x[0] === "object");
      let title = has(`stats.section_${name}`) ? t(`stats.section_${name}`) : name;
      if (v.standard && v.standard.name) title += ` · ${v.standard.name}`;
      if (v.rule && v.rule.patrols_per_day) title += ` · ${t("grid.patrol_rule", { n: v.rule.patrols_per_day, h: v.rule.min_hours })}`;
      const tables = lists.map(([key, rows]) => {
        const cols = Object.keys(rows[0]).filter((c) => !["code", "name", "name_en", "line", "department", "level"].includes(c) && typeof rows[0][c] !== "object");
        const nameOf = (r) => (r.name || r.name_en ? localName(r) : r.line ? pick(r.line, r.dialled || "") : r.code || r.dialled || "");
        return h(
          "table.data",
          h("thead", h("tr", h("th", label(key)), cols.map((c) => h("th", label(c))))),
          h("tbody", rows.map((r) => h("tr", h("td", nameOf(r)), cols.map((c) => h("td", formatValue(c, r[c])))))),
        );
      });
      return h(
        "section.panel.table-card",
        { dataset: { section: name } },
        h("div.panel-head", title),
        h("div.table-wrap", h("table.data", h("tbody", scalars.map(([k, x]) => h("tr", h("td", label(k)), h("td", formatValue(k, x))))))),
        ...tables.map((tb) => h("div.table-wrap", tb)),
      );
    }),
  );
}

function formatValue(key, x) {
  if (x === null || x === undefined) return "—";
  if (typeof x === "boolean") return x ? t("stats.yes") : t("stats.no");
  if (typeof x === "number" && (key.endsWith("_share") || key.endsWith("_rate") || key.startsWith("share_"))) return fmtPercent(x);
  if (typeof x === "number" && key.endsWith("_s")) return fmtDuration(x);
  return typeof x === "number" ? fmtNumber(x, 2) : String(x);
}

async function exportCsv() {
  try {
    const r = await api("GET", "/api/v1/stats.csv", { query: params(), raw: true });
    const blob = await r.blob();
    const disposition = r.headers.get("Content-Disposition") || "";
    const m = /filename="?([^";]+)"?/.exec(disposition);
    const p = params();
    const name = m ? m[1].replace(/\.csv$/, `-${p.from || ""}-${p.to || ""}.csv`) : "stats.csv";
    const a = h("a", { href: URL.createObjectURL(blob), download: name });
    document.body.append(a);
    a.click();
    setTimeout(() => {
      URL.revokeObjectURL(a.href);
      a.remove();
    }, 1000);
  } catch (err) {
    toast(errorText(err), "error");
  }
}

function flattenTaxonomy(list) {
  for (const c of list) {
    S.taxonomy.set(c.code, pick(c.name, c.code));
    flattenTaxonomy(c.children || []);
  }
}

async function main() {
  const { user, config } = await startPage({ roles: ["duty_officer", "leader", "admin", "ops", "department_handler"] });
  S.user = user;
  S.config = config;
  document.getElementById("top").replaceWith(topBar(user, { current: "/stats" }));
  if (!config.features.stats) {
    document.getElementById("kpis").replaceChildren(h("p.muted", t("stats.off")));
    return;
  }
  const [orgs, taxonomy] = await Promise.all([get("/api/v1/orgs", { depth: 2 }), config.features.taxonomy ? get("/api/v1/taxonomy") : []]);
  flattenTaxonomy(Array.isArray(taxonomy) ? taxonomy : []);
  S.units = (orgs.units || []).filter((u) => u.level !== "grid");
  const fillUnits = () => {
    const sel = document.getElementById("org");
    const keep = sel.value;
    const depth = (u) => {
      let n = 0;
      let p = u.parent;
      while (p && S.units.some((x) => x.code === p)) {
        n += 1;
        p = S.units.find((x) => x.code === p).parent;
      }
      return n;
    };
    sel.replaceChildren(...S.units.map((u) => h("option", { value: u.code }, `${"　".repeat(depth(u))}${localName(u)}`)));
    sel.value = keep || orgs.root;
  };
  fillUnits();
  // The server's default period (the 30 local days up to its today) sets the dates: a browser's
  // clock may be wrong, the command centre's is not.
  S.data = await get("/api/v1/stats", { org: document.getElementById("org").value });
  S.today = lastDay(S.data.to);
  document.getElementById("from").value = String(S.data.from).slice(0, 10);
  document.getElementById("to").value = S.today;
  renderPresets();
  document.getElementById("org").addEventListener("change", load);
  for (const id of ["from", "to"]) {
    document.getElementById(id).addEventListener("change", () => {
      S.preset = null;
      renderPresets();
      load();
    });
  }
  document.getElementById("export").addEventListener("click", exportCsv);
  window.addEventListener("resize", debounce(render, 200));
  onLanguageChange(() => {
    fillUnits();
    renderPresets();
    render();
  });
  render();
  window.dispatchdStats = { S };
}

main();
