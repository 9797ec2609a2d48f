// Charts drawn in SVG by hand: grouped bars with a rate line, and horizontal bars. No library.
import { svg } from "./map.js";

function niceMax(v) {
  if (v <= 5) return 5;
  const pow = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * pow >= v) return m * pow;
  return 10 * pow;
}

function clip(s, n) {
  const str = String(s ?? "");
  return str.length > n ? `${str.slice(0, n - 1)}…` : str;
}

/**
 * Vertical grouped bars per item (`series`: [{key, cls, label}]) and, optionally, a rate (0..1)
 * drawn as a line on its own axis at the right.
 */
export function groupedBars(items, { series, rate, width = 1100, height = 300, labelOf = (d) => d.name } = {}) {
  const m = { l: 44, r: rate ? 48 : 12, t: 16, b: 46 };
  const w = width - m.l - m.r;
  const hgt = height - m.t - m.b;
  const max = niceMax(Math.max(1, ...items.flatMap((d) => series.map((s) => Number(d[s.key]) || 0))));
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  for (let i = 0; i <= 4; i++) {
    const y = m.t + hgt - (hgt * i) / 4;
    root.append(svg("line", { x1: m.l, x2: m.l + w, y1: y, y2: y, class: "grid-line" }));
    root.append(svg("text", { x: m.l - 6, y: y + 4, "text-anchor": "end" }, Math.round((max * i) / 4)));
    if (rate) root.append(svg("text", { x: m.l + w + 6, y: y + 4 }, `${25 * i}%`));
  }
  if (!items.length) return root;
  const band = w / items.length;
  const barW = Math.min(34, (band * 0.75) / series.length);
  const ratePts = [];
  items.forEach((d, i) => {
    const x0 = m.l + band * i + (band - barW * series.length) / 2;
    series.forEach((s, j) => {
      const v = Number(d[s.key]) || 0;
      const bh = (hgt * v) / max;
      const x = x0 + j * barW;
      const bar = svg("rect", { x, y: m.t + hgt - bh, width: barW - 2, height: Math.max(0, bh), class: s.cls, rx: 2 });
      const title = svg("title");
      title.textContent = `${labelOf(d)} · ${s.label}: ${v}`;
      bar.append(title);
      root.append(bar);
      if (v && barW > 14) root.append(svg("text", { x: x + (barW - 2) / 2, y: m.t + hgt - bh - 4, "text-anchor": "middle", class: "val" }, v));
    });
    const cx = m.l + band * i + band / 2;
    root.append(svg("text", { x: cx, y: height - m.b + 18, "text-anchor": "middle" }, clip(labelOf(d), Math.max(3, Math.floor(band / 13)))));
    if (rate && d[rate] !== null && d[rate] !== undefined) ratePts.push([cx, m.t + hgt - hgt * Math.min(1, Number(d[rate]))]);
  });
  if (ratePts.length) {
    root.append(svg("path", { class: "rate-line", d: `M${ratePts.map((p) => p.join(",")).join("L")}` }));
    for (const [x, y] of ratePts) root.append(svg("circle", { cx: x, cy: y, r: 4, class: "rate-dot" }));
  }
  return root;
}

/** Horizontal bars, one per item, longest first as given; `cls(d)` picks a colour class. */
export function horizontalBars(items, { value = (d) => d.value, label = (d) => d.name, cls = () => "bar", width = 520, row = 26 } = {}) {
  const labelW = 120;
  const valueW = 44;
  const height = Math.max(row, items.length * row) + 6;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  const max = Math.max(1, ...items.map((d) => Number(value(d)) || 0));
  const w = width - labelW - valueW;
  items.forEach((d, i) => {
    const y = 3 + i * row;
    const v = Number(value(d)) || 0;
    root.append(svg("text", { x: labelW - 8, y: y + row / 2 + 4, "text-anchor": "end" }, clip(label(d), 9)));
    root.append(svg("rect", { x: labelW, y: y + 4, width: Math.max(v ? 2 : 0, (w * v) / max), height: row - 9, rx: 3, class: cls(d) }));
    root.append(svg("text", { x: labelW + (w * v) / max + 6, y: y + row / 2 + 4, class: "val" }, v));
  });
  return root;
}
