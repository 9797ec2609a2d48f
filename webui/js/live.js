// A websocket that stays up: heartbeat, automatic reconnect with exponential backoff and jitter,
// and resume from the last sequence number seen (`since=<seq>`), so that nothing is missed and
// nothing is applied twice across a cut connection.
//
//   const live = new LiveSocket("/ws/board", { onMessage, onStatus });
//   live.start();
//
// onStatus receives "connecting" | "live" | "reconnecting" | "offline"; onMessage every parsed
// message whose seq (if any) is newer than the last one seen.
import { get, session } from "./api.js";
import { noteServerTime } from "./clock.js";
import { onLanguageChange, t } from "./i18n.js";

const HEARTBEAT_MS = 15000; // send a ping this often
const SILENCE_MS = 40000; // no message at all for this long: the connection is dead
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
// After this many attempts in a row that never opened, ask the API whether the token still
// works: a 401 there sends the user to the login page (a refused upgrade shows only as 1006).
const CHECK_AFTER = 3;

export class LiveSocket {
  constructor(path, { onMessage, onStatus, onClose, resume = true, ping = false, params = {} } = {}) {
    this.path = path;
    this.onMessage = onMessage || (() => {});
    this.onStatus = onStatus || (() => {});
    this.onClose = onClose || (() => {});
    this.ping = ping;
    this.resume = resume;
    this.params = params;
    this.seq = null;
    this.ws = null;
    this.attempt = 0;
    this.status = "connecting";
    this.outbox = [];
    this.timers = {};
    this.stopped = false;
    this.lastHeard = 0;
    window.addEventListener("online", () => this.reconnectNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.status !== "live") this.reconnectNow();
    });
  }

  url() {
    const u = new URL(this.path, location.origin);
    u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    u.searchParams.set("token", session.token() || "");
    for (const [k, v] of Object.entries(this.params)) u.searchParams.set(k, v);
    if (this.resume && this.seq !== null) u.searchParams.set("since", String(this.seq));
    return u.toString();
  }

  start() {
    this.stopped = false;
    this.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    this.clearTimers();
    if (this.ws) this.ws.close(1000, "bye");
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.onStatus(status);
  }

  connect() {
    this.clearTimers();
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.lastHeard = Date.now();
      this.setStatus("live");
      this.startHeartbeat();
      const pending = this.outbox.splice(0);
      for (const m of pending) this.send(m);
    };
    ws.onmessage = (ev) => {
      this.lastHeard = Date.now();
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if ((msg.type === "snapshot" || msg.type === "heartbeat") && msg.at) noteServerTime(msg.at);
      if ((msg.type === "snapshot" || msg.type === "heartbeat") && Array.isArray(msg.stores_down)) {
        showStoresDown(msg.stores_down);
      }
      // A heartbeat says every change up to `head` was sent before it: a safe place to resume from.
      if (msg.type === "heartbeat" && typeof msg.head === "number" && this.seq !== null && msg.head > this.seq) {
        this.seq = msg.head;
      }
      if (msg.type === "snapshot") {
        if (typeof msg.seq === "number") this.seq = msg.seq;
      } else if (typeof msg.seq === "number") {
        if (this.seq !== null && msg.seq <= this.seq) return; // seen already (resume overlap)
        this.seq = msg.seq;
      }
      if (msg.type === "pong") return;
      this.onMessage(msg);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.clearTimers();
      this.onClose(ev.code, ev.reason);
      if (this.attempt >= CHECK_AFTER && this.attempt % CHECK_AFTER === 0) {
        // A 401 here sends the user to the login page. If the API answers while the socket still
        // fails, the server is refusing our `since` (422 before the upgrade): start afresh.
        get("/api/v1/auth/me")
          .then(() => {
            this.seq = null;
          })
          .catch(() => {});
      }
      if (!this.stopped) this.scheduleReconnect();
    };
    ws.onerror = () => {
      /* onclose follows and schedules the reconnect */
    };
  }

  scheduleReconnect() {
    this.setStatus(navigator.onLine === false ? "offline" : "reconnecting");
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempt += 1;
    this.timers.reconnect = setTimeout(() => this.connect(), delay);
  }

  reconnectNow() {
    if (this.stopped || (this.ws && this.ws.readyState === WebSocket.OPEN)) return;
    if (this.ws && this.ws.readyState === WebSocket.CONNECTING) return;
    this.attempt = 0;
    this.connect();
  }

  startHeartbeat() {
    this.timers.heartbeat = setInterval(() => {
      if (Date.now() - this.lastHeard > SILENCE_MS) {
        // Half-open connection (network gone without a close): drop it and reconnect.
        const ws = this.ws;
        this.ws = null;
        if (ws) ws.close(4000, "silent");
        this.clearTimers();
        this.scheduleReconnect();
        return;
      }
      if (this.ping) this.send({ type: "ping" });
    }, HEARTBEAT_MS);
  }

  clearTimers() {
    clearTimeout(this.timers.reconnect);
    clearInterval(this.timers.heartbeat);
    this.timers = {};
  }

  /** Send now, or as soon as the connection is back (acks must not be lost). */
  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    if (msg.type !== "ping" && msg.type !== "pong") this.outbox.push(msg);
    return false;
  }

  /** Forget the sequence: the next connection asks for a fresh snapshot. */
  resetSequence() {
    this.seq = null;
  }
}

// -- stores the server sees down -----------------------------------------------------------------

let storesDown = [];

/** A bar at the top of the page while the server reports a store down: what it means for the
 * people at this screen (PostgreSQL: changes are refused, try again; Redis: positions may lag). */
export function showStoresDown(down) {
  storesDown = down.filter((s) => s === "postgres" || s === "redis");
  let bar = document.getElementById("stores-down");
  if (!storesDown.length) {
    if (bar) bar.remove();
    return;
  }
  if (!bar) {
    bar = document.createElement("div");
    bar.id = "stores-down";
    bar.className = "stores-down";
    bar.setAttribute("role", "alert");
    document.body.prepend(bar);
  }
  bar.textContent = storesDown.map((s) => t(`live.store_down.${s}`)).join(" ");
}

onLanguageChange(() => {
  if (storesDown.length) showStoresDown(storesDown);
});
