// Sound and vibration for a new order, made with Web Audio (no sound file to ship or to fail).
// Browsers start audio only after a tap: unlock() is called from the first one.

let ctx = null;
let ringing = 0;

export function audioReady() {
  return Boolean(ctx && ctx.state === "running");
}

/** Call from a user gesture; true once sound can play. */
export async function unlock() {
  try {
    ctx = ctx || new (window.AudioContext || window.webkitAudioContext)();
    if (ctx.state === "suspended") await ctx.resume();
  } catch {
    return false;
  }
  return audioReady();
}

function tone(freq, start, length, volume = 0.25) {
  const o = ctx.createOscillator();
  const g = ctx.createGain();
  o.type = "square";
  o.frequency.value = freq;
  g.gain.setValueAtTime(0.0001, start);
  g.gain.exponentialRampToValueAtTime(volume, start + 0.02);
  g.gain.exponentialRampToValueAtTime(0.0001, start + length);
  o.connect(g).connect(ctx.destination);
  o.start(start);
  o.stop(start + length + 0.02);
}

/** One burst of the order alarm: three rising beeps and a vibration. */
export function alarmOnce() {
  if (navigator.vibrate) navigator.vibrate([400, 150, 400, 150, 600]);
  if (!audioReady()) return;
  const t0 = ctx.currentTime + 0.01;
  tone(880, t0, 0.18);
  tone(1175, t0 + 0.25, 0.18);
  tone(1568, t0 + 0.5, 0.3);
}

/** Ring every few seconds until stop(): a squad member may have the phone in a pocket. */
export function startRinging(everyMs = 4000) {
  stopRinging();
  alarmOnce();
  ringing = setInterval(alarmOnce, everyMs);
}

export function stopRinging() {
  if (ringing) clearInterval(ringing);
  ringing = 0;
  if (navigator.vibrate) navigator.vibrate(0);
}

export function isRinging() {
  return Boolean(ringing);
}

/** Two soft tones: an invitation (a consultation this unit is asked to join). */
export function chime() {
  if (!audioReady()) return;
  const t0 = ctx.currentTime + 0.01;
  tone(660, t0, 0.25, 0.18);
  tone(990, t0 + 0.3, 0.4, 0.18);
}
