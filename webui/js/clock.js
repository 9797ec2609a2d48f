// The server's time as the browser can best tell it. A wall-display PC or a phone may have its
// clock wrong by minutes; ages, countdowns and stale marks follow the server, which says its time
// in every board snapshot and heartbeat.

let skewMs = 0;

export function serverNow() {
  return Date.now() + skewMs;
}

/** Note a time the server just sent (ISO 8601). */
export function noteServerTime(iso) {
  const t = Date.parse(iso);
  if (!Number.isNaN(t)) skewMs = t - Date.now();
}
