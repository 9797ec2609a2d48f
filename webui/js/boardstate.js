// What a screen knows of its jurisdiction: the snapshot of /ws/board and every change after it,
// applied in order. Pure data (no DOM), so that what the wall and the console show follows from the
// messages alone. The one handler of the change feed: the board and the console both use it.
//
// Messages (docs/live.md, /api/asyncapi.json): snapshot {seq, at, org, sections}; change {seq,
// entity, id, version, action, org, time, actor, data, detail} — the one envelope every change of
// every entity has, `data` being the entity after the change; heartbeat {at, head}.
//
// Snapshot sections, each of one shape: incidents {open: [case], counters}, units [unit],
// calls {live: [call], counters}, meetings [meeting], alerts [alert], orders [order], cameras [camera].
import { noteServerTime, serverNow } from "./clock.js";
import { isOpen } from "./model.js";

const ZERO = { open: 0, overdue: 0, to_accept: 0 };

// The first change of a case (its report): it is new.
export const CASE_REPORTED = "report";
export const WAITING_CALL_STATES = ["ringing", "queued"];
export const LIVE_CALL_STATES = [...WAITING_CALL_STATES, "answered"];

function contribution(c) {
  if (!c) return ZERO;
  const open = isOpen(c);
  return { open: open ? 1 : 0, overdue: open && c.overdue ? 1 : 0, to_accept: c.state === "reported" ? 1 : 0 };
}

function byId(list) {
  return new Map((Array.isArray(list) ? list : []).map((x) => [String(x.id), x]));
}

export function localDay(d) {
  const x = d instanceof Date ? d : new Date(d);
  return `${x.getFullYear()}-${x.getMonth() + 1}-${x.getDate()}`;
}

export class BoardState {
  constructor() {
    this.reset();
  }

  reset() {
    this.incidents = new Map();
    this.units = new Map();
    this.calls = new Map();
    this.meetings = new Map();
    this.alerts = new Map();
    this.orders = new Map();
    this.cameras = new Map(); // GB/T 28181 channels with a position
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
    this.incidents = byId(inc.open);
    const counters = inc.counters || {};
    this.counters = { ...this.counters, ...counters, received_today_by_channel: { ...(counters.received_today_by_channel || {}) } };
    this.units = byId(s.units);
    const calls = s.calls || {};
    this.calls = byId((calls.live || []).filter((c) => LIVE_CALL_STATES.includes(c.state)));
    this.callCounters = { ...(calls.counters || {}) };
    this.meetings = byId(s.meetings);
    this.alerts = byId(s.alerts);
    this.orders = byId(s.orders);
    this.cameras = byId(s.cameras);
  }

  /** Apply one change; returns {entity, action, item, previous, kept} for the screen's effects. */
  applyChange(msg) {
    this.seq = msg.seq ?? this.seq;
    const entity = msg.entity || msg.topic;
    const action = msg.action;
    const item = msg.data || {};
    switch (entity) {
      case "incident":
        return this.applyIncident(item, action);
      case "unit":
        return this.applyUnit(item, action);
      case "call":
        return this.applyCall(item, action);
      case "meeting":
        return this.applyKept(this.meetings, entity, item, action, (m) => m.status !== "ended" && m.status !== "cancelled");
      case "alert":
        return this.applyKept(this.alerts, entity, item, action, (a) => !a.resolved_at);
      case "order":
        return this.applyKept(this.orders, entity, item, action, (o) => ["pending", "delivered", "accepted"].includes(o.state));
      case "camera":
        return this.applyKept(this.cameras, entity, item, action, (c) => c.lat !== null && c.lat !== undefined);
      case "positions": {
        // Squad positions are changes too: one per org unit and tick, each unit at most once a second.
        const moved = (item.positions || []).map((p) => this.applyPosition(p)).filter(Boolean);
        return moved.length ? { entity, action, item: null, items: moved, previous: null, kept: true } : null;
      }
      default:
        return { entity, action, item, previous: null, kept: false };
    }
  }

  /** A map of entities that stay while ``keep`` says so; the rest leave it. */
  applyKept(map, entity, item, action, keep) {
    if (item.id === undefined) return null;
    const key = String(item.id);
    const previous = map.get(key) || null;
    const merged = { ...(previous || {}), ...item };
    const kept = keep(merged);
    if (kept) map.set(key, merged);
    else map.delete(key);
    return { entity, action, item: merged, previous, kept };
  }

  applyUnit(u, action) {
    if (u.id === undefined) return null;
    const key = String(u.id);
    const previous = this.units.get(key) || null;
    // A status change carries no position: keep the live one.
    const merged = { ...(previous || {}), ...u };
    if (!u.position && previous && previous.position) merged.position = previous.position;
    const kept = action !== "deleted";
    if (kept) this.units.set(key, merged);
    else this.units.delete(key);
    return { entity: "unit", action, item: merged, previous, kept };
  }

  applyCall(c, action) {
    const r = this.applyKept(this.calls, "call", c, action, (x) => LIVE_CALL_STATES.includes(x.state));
    if (!r) return null;
    const cc = this.callCounters;
    const { item, previous } = r;
    if (action === "offered" && !previous) cc.offered = (cc.offered || 0) + 1;
    if (item.state === "answered" && previous && previous.state !== "answered") cc.answered = (cc.answered || 0) + 1;
    if (item.state === "abandoned" && previous && previous.state !== "abandoned") cc.abandoned = (cc.abandoned || 0) + 1;
    return r;
  }

  applyIncident(c, action) {
    if (!c || c.id === undefined) return null;
    const key = String(c.id);
    const previous = this.incidents.get(key) || null;
    // A case that left the jurisdiction (passed up or down elsewhere) leaves its board.
    const visible = !this.org || !Array.isArray(c.org_path) || c.org_path.includes(this.org);
    const reported = action === CASE_REPORTED;
    const next = visible && isOpen(c) ? c : null;
    if (previous || reported) {
      const a = contribution(previous);
      const b = contribution(next);
      for (const k of Object.keys(ZERO)) this.counters[k] = Math.max(0, (this.counters[k] || 0) + b[k] - a[k]);
    }
    if (reported && visible && c.created_at && localDay(c.created_at) === localDay(this.now())) {
      this.counters.received_today = (this.counters.received_today || 0) + 1;
      const by = this.counters.received_today_by_channel;
      by[c.channel] = (by[c.channel] || 0) + 1;
    }
    if (visible && c.state === "closed" && previous && previous.state !== "closed") {
      this.counters.closed_today = (this.counters.closed_today || 0) + 1;
    }
    if (next) this.incidents.set(key, next);
    else this.incidents.delete(key);
    return { entity: "incident", action, item: c, previous, kept: Boolean(next), reported };
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

  /** Apply any message of /ws/board; returns what applyChange returns for a change, else null. */
  apply(msg) {
    if (msg.type === "snapshot") {
      this.applySnapshot(msg);
      return null;
    }
    if (msg.type === "heartbeat") {
      if (msg.at) this.noteServerTime(msg.at);
      return null;
    }
    if (msg.type === "change") return this.applyChange(msg);
    return null;
  }

  waitingCalls() {
    return [...this.calls.values()].filter((c) => WAITING_CALL_STATES.includes(c.state));
  }
}
