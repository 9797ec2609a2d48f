// What the board knows: the snapshot of /ws/board and every change after it, applied in order.
// Pure data (no DOM), so that what the wall shows follows from the messages alone.
//
// Messages (docs/live.md): snapshot {seq, at, org, sections}, change {seq, topic, id, data} (topic
// positions: data {positions: [{unit_id, lat, lon, at, speed, heading}]}), heartbeat {at, head}.
import { noteServerTime, serverNow } from "./clock.js";
import { isOpen } from "./model.js";

const ZERO = { open: 0, overdue: 0, to_accept: 0 };

function listOf(section, ...keys) {
  if (!section) return [];
  if (Array.isArray(section)) return section;
  for (const k of [...keys, "items", "list"]) if (Array.isArray(section[k])) return section[k];
  return [];
}

function contribution(c) {
  if (!c) return ZERO;
  const open = isOpen(c);
  return { open: open ? 1 : 0, overdue: open && c.overdue ? 1 : 0, to_accept: c.state === "reported" ? 1 : 0 };
}

export function localDay(d) {
  const x = d instanceof Date ? d : new Date(d);
  return `${x.getFullYear()}-${x.getMonth() + 1}-${x.getDate()}`;
}

export const WAITING_CALL_STATES = ["ringing", "queued"];

export class BoardState {
  constructor() {
    this.reset();
  }

  reset() {
    this.incidents = new Map();
    this.units = new Map();
    this.calls = new Map();
    this.meetings = new Map();
    this.cameras = []; // from the snapshot's "cameras" section (GB/T 28181 channels with a position)
    this.counters = { open: 0, overdue: 0, to_accept: 0, received_today: 0, closed_today: 0, received_today_by_channel: {} };
    this.callCounters = {};
    this.org = null;
    this.seq = null;
    this.loaded = false;
  }

  /** Browser time corrected to the server's clock (for ages and stale marks). */
  now() {
    return serverNow();
  }

  noteServerTime(at) {
    noteServerTime(at);
  }

  applySnapshot(msg) {
    this.reset();
    this.loaded = true;
    this.seq = msg.seq;
    this.org = msg.org || null;
    if (msg.at) this.noteServerTime(msg.at);
    const s = msg.sections || {};
    const inc = s.incidents || {};
    for (const c of listOf(inc, "open", "incidents")) this.incidents.set(String(c.id), c);
    const counters = (inc && !Array.isArray(inc) && inc.counters) || s.counters || {};
    this.counters = {
      ...this.counters,
      ...counters,
      received_today_by_channel: { ...(counters.received_today_by_channel || {}) },
    };
    for (const u of listOf(s.units, "units")) this.units.set(String(u.id), u);
    for (const c of listOf(s.calls || s.hotline, "live", "calls", "queue")) this.calls.set(String(c.id), c);
    this.callCounters = (s.calls && !Array.isArray(s.calls) && s.calls.counters) || {};
    for (const m of listOf(s.meetings, "meetings", "running")) this.meetings.set(String(m.id), m);
    this.cameras = listOf(s.cameras, "items");
  }

  /** Apply one change; returns {topic, event, item, previous} for the page's effects. */
  applyChange(msg) {
    this.seq = msg.seq ?? this.seq;
    const data = msg.data || {};
    switch (msg.topic) {
      case "incident":
        return this.applyIncident(data.incident || data, data.event);
      case "unit": {
        const u = data.unit || data;
        if (u.id === undefined) return null;
        const prev = this.units.get(String(u.id));
        // A status change carries no position: keep the live one.
        const merged = { ...(prev || {}), ...u };
        if (!u.position && prev && prev.position) merged.position = prev.position;
        if (data.action === "deleted" || data.event === "deleted") this.units.delete(String(u.id));
        else this.units.set(String(u.id), merged);
        return { topic: "unit", event: data.action, item: merged, previous: prev };
      }
      case "call": {
        const c = data.call || data;
        if (c.id === undefined) return null;
        const prev = this.calls.get(String(c.id));
        const merged = { ...(prev || {}), ...c };
        if (WAITING_CALL_STATES.includes(merged.state) || merged.state === "answered") this.calls.set(String(c.id), merged);
        else this.calls.delete(String(c.id));
        const cc = this.callCounters;
        if (data.event === "offered" && !prev) cc.offered = (cc.offered || 0) + 1;
        if (merged.state === "answered" && prev && prev.state !== "answered") cc.answered = (cc.answered || 0) + 1;
        if (merged.state === "abandoned" && prev && prev.state !== "abandoned") cc.abandoned = (cc.abandoned || 0) + 1;
        return { topic: "call", event: data.event, item: merged, previous: prev };
      }
      case "meeting": {
        const m = data.meeting || data;
        if (m.id === undefined) return null;
        const prev = this.meetings.get(String(m.id));
        const merged = { ...(prev || {}), ...m };
        delete merged.change;
        if (merged.status === "ended" || merged.status === "cancelled") this.meetings.delete(String(m.id));
        else this.meetings.set(String(m.id), merged);
        return { topic: "meeting", event: data.change, item: merged, previous: prev };
      }
      case "positions": {
        // Squad positions are changes too: one per org unit and tick, each unit at most once a second.
        const moved = (data.positions || []).map((p) => this.applyPosition(p)).filter(Boolean);
        return moved.length ? { topic: "positions", event: "moved", item: null, items: moved, previous: null } : null;
      }
      default:
        return { topic: msg.topic, event: data.event, item: data, previous: null };
    }
  }

  applyIncident(c, event) {
    if (!c || c.id === undefined) return null;
    const key = String(c.id);
    const prev = this.incidents.get(key) || null;
    const visible = !this.org || !Array.isArray(c.org_path) || c.org_path.includes(this.org);
    const keep = visible && isOpen(c) && event !== "moved_out";
    const next = keep ? c : null;
    if (prev || event === "created") {
      const a = contribution(prev);
      const b = contribution(next);
      for (const k of Object.keys(ZERO)) this.counters[k] = Math.max(0, (this.counters[k] || 0) + b[k] - a[k]);
    }
    if (event === "created" && visible && c.created_at && localDay(c.created_at) === localDay(this.now())) {
      this.counters.received_today = (this.counters.received_today || 0) + 1;
      const by = this.counters.received_today_by_channel;
      by[c.channel] = (by[c.channel] || 0) + 1;
    }
    if (visible && c.state === "closed" && prev && prev.state !== "closed") {
      this.counters.closed_today = (this.counters.closed_today || 0) + 1;
    }
    if (next) this.incidents.set(key, next);
    else this.incidents.delete(key);
    return { topic: "incident", event, item: c, previous: prev, kept: Boolean(next) };
  }

  applyPosition(msg) {
    const key = String(msg.unit_id);
    const u = this.units.get(key);
    if (!u) return null;
    u.position = {
      ...(u.position || {}),
      lat: msg.lat,
      lon: msg.lon,
      at: msg.at,
      speed: msg.speed,
      heading: msg.heading ?? (u.position ? u.position.heading : null),
    };
    u._moved = true; // the server's stale flag was for the snapshot; judge by the fix time now
    return u;
  }

  waitingCalls() {
    return [...this.calls.values()].filter((c) => WAITING_CALL_STATES.includes(c.state));
  }
}
