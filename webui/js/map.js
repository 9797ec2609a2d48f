// The map: grid boundaries from the project's own GeoJSON drawn in SVG, with pan and zoom, marker
// layers, and optional raster tiles from a configured source. With no tile source the townships,
// communities and grids themselves are the basemap, so the map works with no internet at all.
//
//   const map = new MapView(el, { tiles, minZoom, maxZoom, theme: "dark" });
//   map.setBoundaries(featureCollection);  map.fit();
//   map.setMarkers("cases", items, { render(item) -> SVGElement, key, onClick });
//
// Items carry WGS-84 `lon`/`lat`. With GCJ-02 tiles (AMap, Tencent) every point is shifted to
// GCJ-02 for display; unproject() shifts back, so what is picked on the map is WGS-84 again.
import { gcj02ToWgs84, lonLatToWorld, wgs84ToGcj02, worldToLonLat } from "./coords.js";
import { t } from "./i18n.js";

const SVG = "http://www.w3.org/2000/svg";
const TILE = 256;
// Paths are drawn once in world units × BASE, relative to an origin near the data, and scaled by a
// transform: no float trouble and no re-projection while panning.
const BASE = TILE * 2 ** 18;

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export class MapView {
  constructor(container, opts = {}) {
    this.el = container;
    this.opts = opts;
    this.tiles = opts.tiles || null;
    this.gcj = Boolean(this.tiles && this.tiles.crs === "gcj02");
    this.minZoom = opts.minZoom ?? 3;
    this.maxZoom = opts.maxZoom ?? 18;
    this.cx = 0.5;
    this.cy = 0.5;
    this.zoom = 10;
    this.width = 1;
    this.height = 1;
    this.origin = [0.5, 0.5];
    this.layers = new Map();
    this.labels = [];
    this.bounds = null;
    this.pointers = new Map();
    this.frame = 0;
    this.build();
  }

  build() {
    const el = this.el;
    el.classList.add("map", `map-${this.opts.theme || "dark"}`);
    if (this.tiles) el.classList.add("map-has-tiles");
    el.tabIndex = el.tabIndex >= 0 ? el.tabIndex : 0;
    this.tileBox = document.createElement("div");
    this.tileBox.className = "map-tiles";
    this.labelTileBox = document.createElement("div");
    this.labelTileBox.className = "map-tiles map-tiles-labels";
    this.svg = svg("svg", { class: "map-svg", role: "img" });
    this.shapes = svg("g", { class: "map-shapes" });
    this.labelLayer = svg("g", { class: "map-labels" });
    this.markerRoot = svg("g", { class: "map-markers" });
    this.svg.append(this.shapes, this.labelLayer, this.markerRoot);
    el.append(this.tileBox, this.svg, this.labelTileBox);
    if (this.tiles && !this.tiles.labels) this.labelTileBox.remove();

    const controls = document.createElement("div");
    controls.className = "map-controls";
    for (const [cls, key, fn] of [
      ["zoom-in", "map.zoom_in", () => this.zoomBy(1)],
      ["zoom-out", "map.zoom_out", () => this.zoomBy(-1)],
      ["fit", "map.fit", () => this.fit()],
    ]) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = `map-btn map-${cls}`;
      b.dataset.i18nTitle = key;
      b.title = t(key);
      b.textContent = cls === "zoom-in" ? "+" : cls === "zoom-out" ? "−" : "⤢";
      b.addEventListener("click", (ev) => {
        ev.stopPropagation();
        fn();
      });
      controls.append(b);
    }
    if (this.opts.controls !== false) el.append(controls);
    this.scaleBar = document.createElement("div");
    this.scaleBar.className = "map-scale";
    el.append(this.scaleBar);
    if (this.tiles && this.tiles.attribution) {
      const a = document.createElement("div");
      a.className = "map-attribution";
      a.textContent = this.tiles.attribution;
      el.append(a);
    }
    this.bindInput();
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(el);
    this.resize();
  }

  /** Stop watching the container (call before dropping a map whose element is replaced). */
  destroy() {
    this.resizeObserver.disconnect();
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
  }

  // -- projection ------------------------------------------------------------------------------

  /** WGS-84 lon/lat → world (unit square), through GCJ-02 when the tiles need it. */
  world(lon, lat) {
    if (this.gcj) [lon, lat] = wgs84ToGcj02(lon, lat);
    return lonLatToWorld(lon, lat);
  }

  get scale() {
    return TILE * 2 ** this.zoom;
  }

  /** Screen pixel position of a WGS-84 point. */
  project(lon, lat) {
    const [x, y] = this.world(lon, lat);
    return [(x - this.cx) * this.scale + this.width / 2, (y - this.cy) * this.scale + this.height / 2];
  }

  /** WGS-84 point under a screen pixel. */
  unproject(px, py) {
    const x = this.cx + (px - this.width / 2) / this.scale;
    const y = this.cy + (py - this.height / 2) / this.scale;
    const [lon, lat] = worldToLonLat(x, y);
    return this.gcj ? gcj02ToWgs84(lon, lat) : [lon, lat];
  }

  // -- boundaries ------------------------------------------------------------------------------

  /** Draw a GeoJSON FeatureCollection of org units (properties: code, name, name_en, level). */
  setBoundaries(fc) {
    this.features = fc && fc.features ? fc.features : [];
    this.drawBoundaries();
    if (!this.viewSet) this.fit();
  }

  drawBoundaries() {
    const features = this.features || [];
    let minX = Infinity;
    let minY = Infinity;
    let maxX = -Infinity;
    let maxY = -Infinity;
    const rings = [];
    for (const f of features) {
      const g = f.geometry;
      if (!g) continue;
      const polys = g.type === "Polygon" ? [g.coordinates] : g.type === "MultiPolygon" ? g.coordinates : [];
      const projected = polys.map((poly) =>
        poly.map((ring) =>
          ring.map(([lon, lat]) => {
            const p = this.world(lon, lat);
            minX = Math.min(minX, p[0]);
            maxX = Math.max(maxX, p[0]);
            minY = Math.min(minY, p[1]);
            maxY = Math.max(maxY, p[1]);
            return p;
          }),
        ),
      );
      rings.push([f, projected]);
    }
    this.shapes.replaceChildren();
    this.labels = [];
    if (!rings.length) {
      this.bounds = null;
      return;
    }
    this.bounds = [minX, minY, maxX, maxY];
    this.origin = [minX, minY];
    const [ox, oy] = this.origin;
    const order = { county: 0, township: 1, community: 2, grid: 3 };
    rings.sort((a, b) => (order[level(a[0])] ?? 9) - (order[level(b[0])] ?? 9));
    const groups = {};
    const palette = 8;
    const townshipIndex = new Map();
    for (const [f, polys] of rings) {
      const lv = level(f);
      if (!groups[lv]) {
        groups[lv] = svg("g", { class: `map-level map-level-${lv}` });
        this.shapes.append(groups[lv]);
      }
      const d = polys
        .map((poly) =>
          poly
            .map(
              (ring) =>
                "M" +
                ring.map(([x, y]) => `${((x - ox) * BASE).toFixed(1)},${((y - oy) * BASE).toFixed(1)}`).join("L") +
                "Z",
            )
            .join(""),
        )
        .join("");
      const props = f.properties || {};
      const town = props.township || (lv === "township" ? props.code : null);
      if (town && !townshipIndex.has(town)) townshipIndex.set(town, townshipIndex.size % palette);
      const hue = town ? townshipIndex.get(town) : 0;
      const path = svg("path", { d, class: `map-area map-${lv} map-hue-${hue}`, "data-code": props.code || f.id });
      const title = svg("title");
      title.textContent = props.name || "";
      path.append(title);
      groups[lv].append(path);
      const ring = polys[0] && polys[0][0];
      if (ring && (lv === "township" || lv === "community" || lv === "grid")) {
        const c = centroid(ring);
        this.labels.push({ f, lv, x: c[0], y: c[1] });
      }
    }
    if (this.areas) this.drawAreas();
    this.labelLayer.replaceChildren();
    for (const l of this.labels) {
      l.el = svg("text", { class: `map-label map-label-${l.lv}`, "text-anchor": "middle" });
      l.el.textContent = labelOf(l.f);
      this.labelLayer.append(l.el);
    }
    this.schedule();
  }

  /** Areas drawn over the boundaries under ``name`` (a warning's polygons): rings of [lon, lat]. */
  setAreas(name, rings, cls = "") {
    this.areas = this.areas || new Map();
    this.areas.set(name, { rings, cls });
    this.drawAreas();
  }

  drawAreas() {
    if (!this.areaGroup) this.areaGroup = svg("g", { class: "map-overlay" });
    this.areaGroup.replaceChildren();
    if (!this.bounds) return; // drawn with the boundaries, which set the origin
    const [ox, oy] = this.origin;
    for (const [name, { rings, cls }] of this.areas || []) {
      for (const ring of rings) {
        const d =
          "M" +
          ring
            .map(([lon, lat]) => {
              const [x, y] = this.world(lon, lat);
              return `${((x - ox) * BASE).toFixed(1)},${((y - oy) * BASE).toFixed(1)}`;
            })
            .join("L") +
          "Z";
        this.areaGroup.append(svg("path", { d, class: `map-area-overlay ${cls}`, "data-area": name }));
      }
    }
    this.shapes.append(this.areaGroup);
    this.schedule();
  }

  relabel() {
    for (const l of this.labels) l.el.textContent = labelOf(l.f);
  }

  // -- view ------------------------------------------------------------------------------------

  resize() {
    const r = this.el.getBoundingClientRect();
    this.width = Math.max(1, r.width);
    this.height = Math.max(1, r.height);
    this.svg.setAttribute("width", this.width);
    this.svg.setAttribute("height", this.height);
    if (!this.viewSet && this.bounds) this.fit();
    this.schedule();
  }

  /** Fit the view to `bounds` ([minX,minY,maxX,maxY] world), the boundaries, or given points. */
  fit(bounds, padding = 0.06) {
    const b = bounds || this.bounds;
    if (!b) return;
    const w = Math.max(b[2] - b[0], 1e-9);
    const h = Math.max(b[3] - b[1], 1e-9);
    const sx = (this.width * (1 - 2 * padding)) / (w * TILE);
    const sy = (this.height * (1 - 2 * padding)) / (h * TILE);
    this.zoom = this.clampZoom(Math.log2(Math.min(sx, sy)));
    this.cx = (b[0] + b[2]) / 2;
    this.cy = (b[1] + b[3]) / 2;
    this.viewSet = this.width > 1;
    this.schedule();
  }

  /** Fit to WGS-84 points ([[lon, lat], ...]), never closer than `maxZoom`. */
  fitPoints(points, maxZoom = 16) {
    if (!points.length) return this.fit();
    let b = [Infinity, Infinity, -Infinity, -Infinity];
    for (const [lon, lat] of points) {
      const [x, y] = this.world(lon, lat);
      b = [Math.min(b[0], x), Math.min(b[1], y), Math.max(b[2], x), Math.max(b[3], y)];
    }
    // Never closer than maxZoom: pad to half a screen at that zoom.
    const padX = Math.max(0, (this.width / (TILE * 2 ** maxZoom) - (b[2] - b[0])) / 2);
    const padY = Math.max(0, (this.height / (TILE * 2 ** maxZoom) - (b[3] - b[1])) / 2);
    this.fit([b[0] - padX, b[1] - padY, b[2] + padX, b[3] + padY], 0.12);
  }

  centerOn(lon, lat, zoom) {
    [this.cx, this.cy] = this.world(lon, lat);
    if (zoom !== undefined) this.zoom = this.clampZoom(zoom);
    this.viewSet = true;
    this.schedule();
  }

  clampZoom(z) {
    return Math.max(this.minZoom, Math.min(this.maxZoom + 1, z));
  }

  zoomBy(dz, px = this.width / 2, py = this.height / 2) {
    const before = [this.cx + (px - this.width / 2) / this.scale, this.cy + (py - this.height / 2) / this.scale];
    this.zoom = this.clampZoom(this.zoom + dz);
    this.cx = before[0] - (px - this.width / 2) / this.scale;
    this.cy = before[1] - (py - this.height / 2) / this.scale;
    this.viewSet = true;
    this.schedule();
  }

  panBy(dx, dy) {
    this.cx -= dx / this.scale;
    this.cy -= dy / this.scale;
    this.viewSet = true;
    this.schedule();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  render() {
    const s = this.scale;
    const [ox, oy] = this.origin;
    const tx = this.width / 2 + (ox - this.cx) * s;
    const ty = this.height / 2 + (oy - this.cy) * s;
    this.shapes.setAttribute("transform", `translate(${tx.toFixed(2)},${ty.toFixed(2)}) scale(${s / BASE})`);
    this.el.dataset.zoom = String(Math.round(this.zoom));
    this.el.classList.toggle("map-far", this.zoom < 13.5);
    for (const l of this.labels) {
      const show =
        l.lv === "township" ? this.zoom < 15.5 : l.lv === "community" ? this.zoom >= 13.3 && this.zoom < 16.5 : this.zoom >= 15.5;
      if (!show) {
        l.el.setAttribute("display", "none");
        continue;
      }
      const x = (l.x - this.cx) * s + this.width / 2;
      const y = (l.y - this.cy) * s + this.height / 2;
      l.el.removeAttribute("display");
      l.el.setAttribute("x", x.toFixed(1));
      l.el.setAttribute("y", y.toFixed(1));
    }
    for (const layer of this.layers.values()) this.placeLayer(layer);
    this.renderTiles();
    this.renderScale();
  }

  renderScale() {
    // Metres per pixel at the centre latitude.
    const [, lat] = worldToLonLat(this.cx, this.cy);
    const mpp = (40075016.686 * Math.cos((lat * Math.PI) / 180)) / this.scale;
    const target = mpp * Math.min(120, this.width / 4);
    const pow = 10 ** Math.floor(Math.log10(target));
    const nice = [1, 2, 5, 10].map((m) => m * pow).filter((v) => v <= target).pop() || pow;
    const px = nice / mpp;
    this.scaleBar.style.width = `${px.toFixed(0)}px`;
    this.scaleBar.textContent = nice >= 1000 ? `${nice / 1000} km` : `${nice} m`;
  }

  // -- tiles -----------------------------------------------------------------------------------

  renderTiles() {
    if (!this.tiles) return;
    this.drawTileLayer(this.tileBox, this.tiles.url);
    if (this.tiles.labels) this.drawTileLayer(this.labelTileBox, this.tiles.labels);
  }

  drawTileLayer(box, template) {
    const z = Math.max(this.minZoom, Math.min(this.maxZoom, Math.round(this.zoom)));
    const n = 2 ** z;
    const size = (TILE * 2 ** this.zoom) / n; // on-screen size of one tile
    const left = this.cx * n - this.width / 2 / size;
    const top = this.cy * n - this.height / 2 / size;
    const x0 = Math.floor(left);
    const y0 = Math.floor(top);
    const x1 = Math.floor(left + this.width / size);
    const y1 = Math.floor(top + this.height / size);
    const want = new Map();
    for (let y = Math.max(0, y0); y <= Math.min(n - 1, y1); y++) {
      for (let x = x0; x <= x1; x++) {
        const wx = ((x % n) + n) % n;
        want.set(`${z}/${x}/${y}`, { x, y, wx });
      }
    }
    const have = new Map([...box.children].map((img) => [img.dataset.key, img]));
    for (const [key, img] of have) if (!want.has(key)) img.remove();
    const subs = this.tiles.subdomains || [];
    for (const [key, { x, y, wx }] of want) {
      let img = have.get(key);
      if (!img) {
        img = document.createElement("img");
        img.dataset.key = key;
        img.alt = "";
        img.draggable = false;
        img.decoding = "async";
        img.onerror = () => img.classList.add("map-tile-missing");
        const s = subs.length ? subs[(wx + y) % subs.length] : "";
        img.src = template.replace("{z}", z).replace("{x}", wx).replace("{y}", y).replace("{s}", s);
        box.append(img);
      }
      const px = (x - left) * size;
      const py = (y - top) * size;
      img.style.transform = `translate(${px.toFixed(1)}px,${py.toFixed(1)}px)`;
      img.style.width = img.style.height = `${size + 0.5}px`;
    }
  }

  // -- markers ---------------------------------------------------------------------------------

  /**
   * Replace the items of marker layer `name`. `render(item)` returns an SVG element drawn around
   * (0,0); an element is kept while `key(item)` and `signature(item)` stay the same, so animations
   * do not restart on every update. Items without a position are skipped.
   */
  setMarkers(name, items, { render, key = (d) => d.id, signature = (d) => JSON.stringify(d), onClick, declutter = false } = {}) {
    let layer = this.layers.get(name);
    if (!layer) {
      layer = { g: svg("g", { class: `map-layer map-layer-${name}` }), items: new Map(), onClick, declutter };
      this.markerRoot.append(layer.g);
      this.layers.set(name, layer);
      layer.g.addEventListener("click", (ev) => {
        const target = ev.target.closest("[data-key]");
        if (target && layer.onClick) {
          ev.stopPropagation();
          layer.onClick(layer.items.get(target.dataset.key)?.item);
        }
      });
    }
    if (onClick) layer.onClick = onClick;
    const next = new Map();
    for (const item of items) {
      if (item.lon === undefined || item.lat === undefined || item.lon === null || item.lat === null) continue;
      const k = String(key(item));
      const sig = signature(item);
      const old = layer.items.get(k);
      let el;
      if (old && old.sig === sig) el = old.el;
      else {
        el = render(item);
        el.dataset.key = k;
        if (old) old.el.replaceWith(el);
        else layer.g.append(el);
      }
      next.set(k, { item, el, sig, world: this.world(item.lon, item.lat) });
    }
    for (const [k, old] of layer.items) if (!next.has(k)) old.el.remove();
    layer.items = next;
    this.placeLayer(layer);
  }

  placeLayer(layer) {
    const s = this.scale;
    for (const entry of layer.items.values()) {
      const [x, y] = entry.world;
      const px = (x - this.cx) * s + this.width / 2;
      const py = (y - this.cy) * s + this.height / 2;
      entry.px = px;
      entry.py = py;
      entry.el.setAttribute("transform", `translate(${px.toFixed(1)},${py.toFixed(1)})`);
    }
    if (layer.declutter) declutterLabels(layer.items.values());
  }

  clearMarkers(name) {
    this.setMarkers(name, [], { render: () => svg("g") });
  }

  // -- input -----------------------------------------------------------------------------------

  bindInput() {
    const el = this.el;
    if (this.opts.interactive === false) return;
    el.addEventListener(
      "wheel",
      (ev) => {
        ev.preventDefault();
        const r = el.getBoundingClientRect();
        const dz = -ev.deltaY * (ev.deltaMode === 1 ? 0.05 : 0.0025);
        this.zoomBy(Math.max(-1, Math.min(1, dz)), ev.clientX - r.left, ev.clientY - r.top);
      },
      { passive: false },
    );
    let moved = 0;
    let pinch = null;
    el.addEventListener("pointerdown", (ev) => {
      if (ev.target.closest(".map-controls")) return;
      this.pointers.set(ev.pointerId, [ev.clientX, ev.clientY]);
      moved = 0;
      if (this.pointers.size === 2) {
        const [a, b] = [...this.pointers.values()];
        pinch = { d: Math.hypot(a[0] - b[0], a[1] - b[1]), zoom: this.zoom };
      }
    });
    el.addEventListener("pointermove", (ev) => {
      const prev = this.pointers.get(ev.pointerId);
      if (!prev) return;
      const cur = [ev.clientX, ev.clientY];
      this.pointers.set(ev.pointerId, cur);
      if (this.pointers.size === 2 && pinch) {
        const [a, b] = [...this.pointers.values()];
        const d = Math.hypot(a[0] - b[0], a[1] - b[1]);
        const r = el.getBoundingClientRect();
        const target = pinch.zoom + Math.log2(d / pinch.d);
        this.zoomBy(target - this.zoom, (a[0] + b[0]) / 2 - r.left, (a[1] + b[1]) / 2 - r.top);
        moved += 10;
        return;
      }
      const dx = cur[0] - prev[0];
      const dy = cur[1] - prev[1];
      moved += Math.abs(dx) + Math.abs(dy);
      if (moved > 3) {
        if (!el.hasPointerCapture(ev.pointerId)) el.setPointerCapture(ev.pointerId);
        el.classList.add("map-dragging");
        this.panBy(dx, dy);
      }
    });
    const end = (ev) => {
      this.pointers.delete(ev.pointerId);
      if (this.pointers.size < 2) pinch = null;
      el.classList.remove("map-dragging");
    };
    el.addEventListener("pointerup", (ev) => {
      const wasClick = moved <= 3 && this.pointers.size === 1;
      end(ev);
      if (wasClick && this.opts.onClick && !ev.target.closest("[data-key], .map-controls")) {
        const r = el.getBoundingClientRect();
        const [lon, lat] = this.unproject(ev.clientX - r.left, ev.clientY - r.top);
        this.opts.onClick({ lon, lat });
      }
    });
    el.addEventListener("pointercancel", end);
    el.addEventListener("dblclick", (ev) => {
      const r = el.getBoundingClientRect();
      this.zoomBy(1, ev.clientX - r.left, ev.clientY - r.top);
    });
    el.addEventListener("keydown", (ev) => {
      const step = 80;
      const keys = {
        ArrowLeft: () => this.panBy(step, 0),
        ArrowRight: () => this.panBy(-step, 0),
        ArrowUp: () => this.panBy(0, step),
        ArrowDown: () => this.panBy(0, -step),
        "+": () => this.zoomBy(1),
        "=": () => this.zoomBy(1),
        "-": () => this.zoomBy(-1),
        0: () => this.fit(),
      };
      if (keys[ev.key] && ev.target === el) {
        ev.preventDefault();
        keys[ev.key]();
      }
    });
  }
}

function level(f) {
  return (f.properties && f.properties.level) || "grid";
}

function labelOf(f) {
  const p = f.properties || {};
  const en = document.documentElement.lang === "en";
  if (level(f) === "grid") {
    const code = String(p.code || f.id || "");
    const g = code.lastIndexOf("G");
    return g >= 0 ? code.slice(g) : p.name || code;
  }
  return (en ? p.name_en : p.name) || p.name || p.code || "";
}

function centroid(ring) {
  // Area-weighted centroid of a simple polygon (world units); the mean of the vertices if degenerate.
  let a = 0;
  let cx = 0;
  let cy = 0;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
    const [x0, y0] = ring[j];
    const [x1, y1] = ring[i];
    const f = x0 * y1 - x1 * y0;
    a += f;
    cx += (x0 + x1) * f;
    cy += (y0 + y1) * f;
  }
  if (Math.abs(a) < 1e-18) {
    const n = ring.length;
    return [ring.reduce((s, p) => s + p[0], 0) / n, ring.reduce((s, p) => s + p[1], 0) / n];
  }
  return [cx / (3 * a), cy / (3 * a)];
}

// Where a label may stand, relative to its default place below the marker: below, above, right, left.
const LABEL_SPOTS = [
  (w, h, y) => [0, 0],
  (w, h, y) => [0, -2 * y + h * 0.3],
  (w, h, y) => [w / 2 + h * 0.6, -y + h * 0.35],
  (w, h, y) => [-(w / 2 + h * 0.6), -y + h * 0.35],
];

/** Labels never drawn over each other (nor over another marker): each label takes the first free
 * spot around its marker, in the order of the items (the caller puts the most important first); a
 * label with no free spot is hidden (its marker's title still names it). */
function declutterLabels(entries) {
  const taken = [];
  const overlaps = (r) => taken.some((o) => r.x < o.x + o.w && o.x < r.x + r.w && r.y < o.y + o.h && o.y < r.y + r.h);
  const list = [...entries].filter((e) => e.px !== undefined);
  for (const e of list) {
    // The markers themselves first: a label may not cover any of them.
    const body = e.el.querySelector(".mk-halo");
    const r = body ? Number(body.getAttribute("r")) || 12 : 12;
    taken.push({ x: e.px - r, y: e.py - r, w: 2 * r, h: 2 * r });
  }
  for (const e of list) {
    const label = e.el.querySelector(".mk-label");
    if (!label) continue;
    const size = Number(label.getAttribute("font-size")) || 14;
    const y = Number(label.dataset.y ?? label.getAttribute("y")) || 0;
    label.dataset.y = String(y);
    // CJK glyphs are about one em wide, Latin about half of one.
    const text = label.textContent || "";
    const w = [...text].reduce((n, ch) => n + (ch.charCodeAt(0) > 0x2e80 ? 1 : 0.55), 0) * size;
    let placed = false;
    for (const spot of LABEL_SPOTS) {
      const [dx, dy] = spot(w, size, y);
      const rect = { x: e.px + dx - w / 2, y: e.py + y + dy - size, w, h: size * 1.2 };
      if (!overlaps(rect)) {
        taken.push(rect);
        label.setAttribute("x", dx.toFixed(1));
        label.setAttribute("y", (y + dy).toFixed(1));
        label.removeAttribute("visibility");
        placed = true;
        break;
      }
    }
    if (!placed) label.setAttribute("visibility", "hidden");
  }
}

/** A bearing arrow (0° = north) for squads, with a stale mark. */
export function arrowMarker({ heading, cls = "", label = "", stale = false, size = 1, labelSize = 0 }) {
  const g = svg("g", { class: `mk mk-unit ${cls}${stale ? " mk-stale" : ""}` });
  const r = 11 * size;
  g.append(svg("circle", { r: r + 3 * size, class: "mk-halo" }));
  if (heading === null || heading === undefined || Number.isNaN(Number(heading))) {
    g.append(svg("circle", { r, class: "mk-body" }));
  } else {
    g.append(
      svg("path", {
        class: "mk-body",
        d: `M0,${-r * 1.45} L${r * 0.95},${r * 0.95} L0,${r * 0.45} L${-r * 0.95},${r * 0.95} Z`,
        transform: `rotate(${Number(heading)})`,
      }),
    );
  }
  if (stale) g.append(svg("text", { class: "mk-stale-mark", x: r * 0.9, y: -r * 0.7, "font-size": (r * 1.4).toFixed(1) }, "?"));
  const px = labelSize || r * 1.15;
  if (label) g.append(svg("text", { class: "mk-label", y: r * 1.6 + px, "text-anchor": "middle", "font-size": px.toFixed(1) }, label));
  return g;
}
