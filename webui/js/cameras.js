// Cameras of the public-security video network (GB/T 28181): their map markers, and a floating viewer
// that plays a camera's live H.264 over WebRTC (POST /api/v1/cameras/{id}/view: our offer with its ICE
// candidates in, the server's answer out) with PTZ buttons for cameras that turn, and the list of the
// recordings its device holds for a day (GET /api/v1/cameras/{id}/records, GB/T 28181 RecordInfo).
import { api, get, post } from "./api.js";
import { errorText, fmtDuration, fmtTime, h, toast } from "./dom.js";
import { t } from "./i18n.js";
import { svg } from "./map.js";

/** A small camera glyph; grey when offline. Drawn around (0,0) like the other markers. */
export function cameraMarker(c, size = 1) {
  const g = svg("g", { class: `mk mk-camera${c.status === "online" ? "" : " mk-camera-off"}` });
  const inner = svg("g", { transform: `scale(${size})` });
  inner.append(svg("rect", { x: -8, y: -5, width: 11, height: 10, rx: 2, class: "mk-body" }));
  inner.append(svg("path", { d: "M3,-2 L8,-5 L8,5 L3,2 Z", class: "mk-body" }));
  g.append(inner);
  const title = svg("title");
  title.textContent = `${c.name || c.id} · ${t(c.status === "online" ? "camera.online" : "camera.offline")}`;
  g.append(title);
  return g;
}

export function cameraSignature(c, extra = "") {
  return `${c.name}|${c.status}|${extra}`;
}

const open = new Map(); // camera id -> close()

/** Wait until the browser has gathered its ICE candidates (the offer carries them: one round trip). */
function gathered(pc, limit = 3000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, limit);
  });
}

const PTZ = [
  ["up", "▲"],
  ["left", "◀"],
  ["right", "▶"],
  ["down", "▼"],
  ["zoom_in", "＋"],
  ["zoom_out", "－"],
];

function ptzPad(c) {
  const send = (action) =>
    post(`/api/v1/cameras/${c.id}/ptz`, { action, speed: 128 }).catch((err) => toast(errorText(err), "error"));
  return h(
    "div.camera-ptz",
    { "aria-label": t("camera.ptz") },
    PTZ.map(([action, glyph]) =>
      h(
        `button.btn.btn-small.ptz-${action}`,
        {
          type: "button",
          title: t(`camera.ptz_${action}`),
          // Hold to move, release to stop (GB/T 28181 PTZ commands move until told to stop).
          onpointerdown: () => send(action),
          onpointerup: () => send("stop"),
          onpointerleave: (ev) => ev.buttons && send("stop"),
        },
        glyph,
      ),
    ),
  );
}

/** The recordings the camera's device holds for one local day, asked when the list is opened. */
function recordsList(c) {
  const day = h("input.camera-records-day", { type: "date", "aria-label": t("camera.records_day") });
  const today = new Date();
  day.value = `${today.getFullYear()}-${String(today.getMonth() + 1).padStart(2, "0")}-${String(today.getDate()).padStart(2, "0")}`;
  const list = h("ul.camera-records-list", { "aria-live": "polite" });
  const load = async () => {
    const start = new Date(`${day.value}T00:00:00`);
    if (Number.isNaN(start.getTime())) return;
    const end = new Date(start.getTime() + 24 * 3600 * 1000);
    list.replaceChildren(h("li.muted", t("camera.records_loading")));
    try {
      const r = await get(`/api/v1/cameras/${c.id}/records`, { from: start.toISOString(), to: end.toISOString() });
      const items = r.records.map((x) =>
        h(
          "li.camera-record",
          h(
            "button.btn.btn-small.camera-play",
            { type: "button", title: t("camera.play_back"), onclick: () => openCameraViewer(c, { start: x.start, end: x.end }) },
            "▶",
          ),
          ` ${fmtTime(x.start)}–${fmtTime(x.end)}`,
          x.seconds != null ? h("span.muted", ` ${fmtDuration(x.seconds)}`) : null,
        ),
      );
      if (!r.complete) items.push(h("li.camera-error", t("camera.records_partial")));
      list.replaceChildren(...(items.length ? items : [h("li.muted", t("camera.records_none"))]));
    } catch (err) {
      list.replaceChildren(h("li.camera-error", errorText(err)));
    }
  };
  day.addEventListener("change", load);
  const box = h("details.camera-records", h("summary", t("camera.records")), day, list);
  box.addEventListener("toggle", () => box.open && load());
  return box;
}

/**
 * Open (or bring forward) the viewer of camera `c` ({id, name, status, ptz}): live, or with
 * `playback` ({start, end}) its recording of that time (POST /api/v1/cameras/{id}/playback).
 */
export async function openCameraViewer(c, playback = null) {
  if (!c) return;
  const key = playback ? `${c.id}@${playback.start}` : c.id;
  if (open.has(key)) return;
  const video = h("video", { autoplay: true, muted: true, playsInline: true });
  const status = h("span.muted", t("camera.connecting"));
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
  let session = null;
  const panel = h(
    "div.camera-viewer",
    { dataset: { camera: c.id, playback: playback ? "true" : undefined }, role: "dialog", "aria-label": c.name || c.id },
    h(
      "div.camera-head",
      h("strong", c.name || c.id),
      playback ? h("span.camera-playback", t("camera.playback_of", { from: fmtTime(playback.start), to: fmtTime(playback.end) })) : null,
      status,
      h("button.btn.btn-small.camera-close", { type: "button", title: t("camera.close"), onclick: () => close() }, "✕"),
    ),
    video,
    c.ptz && !playback ? ptzPad(c) : null,
    playback ? null : recordsList(c),
  );
  const close = () => {
    open.delete(key);
    panel.remove();
    // Say goodbye before hanging up: closing the connection first would end the session by itself.
    if (session) api("DELETE", `/api/v1/cameras/${c.id}/view/${session}`).catch(() => {}).finally(() => pc.close());
    else pc.close();
  };
  open.set(key, close);
  panel.style.setProperty("--stack", String(open.size - 1));
  document.body.append(panel);
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.ontrack = (ev) => {
    video.srcObject = ev.streams[0] || new MediaStream([ev.track]);
  };
  video.addEventListener("playing", () => status.replaceChildren(t("camera.online")), { once: true });
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const offer = { type: "offer", sdp: pc.localDescription.sdp };
    const r = playback
      ? await post(`/api/v1/cameras/${c.id}/playback`, { offer, start: playback.start, end: playback.end })
      : await post(`/api/v1/cameras/${c.id}/view`, { offer });
    session = r.session;
    if (!open.has(key)) {
      close();
      return;
    }
    await pc.setRemoteDescription(r.answer);
  } catch (err) {
    status.replaceChildren(errorText(err));
    status.classList.add("camera-error");
  }
}
