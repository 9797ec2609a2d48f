// The meeting page (/meet/{id}?t=TOKEN): join with camera and microphone, watch the chair and the
// speaker, and — for the chair — roll call (点名), rotation (轮巡), mute, recording and ending. The
// chair, and sites it allows, may watch a wall (电视墙) of 1/4/9/16 tiles beside the speaker.
// Chromium and Firefox publish the camera in three simulcast layers (rids l, m, h); the server forwards each
// tile the layer its size needs.
// Signalling is described in docs/video.md: this page always makes the SDP offer, the server answers.

const TEXT = {
  "zh-CN": {
    title: "视频会商", connecting: "正在连接…", connected: "已接入", failed: "连接失败", ended: "会议已结束",
    recording: "● 录制中", nobody: "等待主持人…", waiting_sites: "等待各方接入…", waiting_picture: "等待画面…", me: "本方", mic_off: "关闭麦克风", mic_on: "打开麦克风",
    raise: "举手", lower: "放下手", leave: "退出", controls: "主持控制", interval: "轮巡间隔（秒）",
    wall: "电视墙", layout: "分屏", layout_off: "关闭", prev: "上一页", next: "下一页", page: "第 {page}/{pages} 页",
    page_rotate: "翻页轮巡", page_rotate_stop: "停止翻页", allow_wall: "允许电视墙", deny_wall: "收回电视墙",
    rotate: "开始轮巡", rotate_stop: "停止轮巡", clear: "取消点名", record: "开始录制", record_stop: "停止录制",
    end: "结束会议", sites: "参会方", rollcall: "点名", mute: "静音", unmute: "取消静音", chair: "主持",
    hand: "✋ 举手", offline: "未接入", muted_by_chair: "主持人已将您静音", no_camera: "未能打开摄像头，仅收看",
    left: "您已退出会议", confirm_end: "确定结束会议？", speaker: "发言",
    no_codec: "本浏览器不支持本会议的 {codec} 视频编码，无法入会。请改用其他浏览器，或请召集方改用 VP8。",
    no_webrtc: "本浏览器不支持 WebRTC 音视频，无法入会。请改用 Chrome、Edge、Firefox 或 Safari。",
  },
  en: {
    title: "Video consultation", connecting: "Connecting…", connected: "Connected", failed: "Connection failed",
    ended: "The meeting has ended", recording: "● Recording", nobody: "Waiting for the chair…", waiting_sites: "Waiting for the sites to join…", waiting_picture: "Waiting for a picture…", me: "Me",
    mic_off: "Mute microphone", mic_on: "Unmute microphone", raise: "Raise hand", lower: "Lower hand",
    leave: "Leave", controls: "Chair controls", interval: "Rotation interval (s)", rotate: "Rotate sites",
    wall: "Video wall", layout: "Tiles", layout_off: "Off", prev: "Previous page", next: "Next page",
    page: "Page {page}/{pages}", page_rotate: "Rotate pages", page_rotate_stop: "Stop page rotation",
    allow_wall: "Allow wall", deny_wall: "Take wall back",
    rotate_stop: "Stop rotation", clear: "Clear speaker", record: "Start recording", record_stop: "Stop recording",
    end: "End meeting", sites: "Sites", rollcall: "Call", mute: "Mute", unmute: "Unmute", chair: "Chair",
    hand: "✋ Hand up", offline: "not joined", muted_by_chair: "The chair muted you",
    no_camera: "Camera unavailable: watching only", left: "You left the meeting", confirm_end: "End the meeting?",
    speaker: "Speaker",
    no_codec: "This browser cannot do this meeting's {codec} video, so it cannot join. Use another browser, or ask the convener for VP8.",
    no_webrtc: "This browser has no WebRTC audio and video, so it cannot join. Use Chrome, Edge, Firefox or Safari.",
  },
};

const params = new URLSearchParams(location.search);
const meetingId = location.pathname.split("/").filter(Boolean).pop();
const token = params.get("t") || "";
let lang = params.get("lang") || localStorage.getItem("dispatchd.lang") || "zh-CN";
if (!(lang in TEXT)) lang = "zh-CN";
const t = (key) => TEXT[lang][key] || TEXT["zh-CN"][key] || key;
const $ = (sel) => document.querySelector(sel);

const state = {
  ws: null, pc: null, you: null, meeting: null, slots: 2, iceServers: [], local: null,
  roster: [], screen: {}, slotMap: [], shown: [], wall: null, hand: false, micOn: true, recording: false,
  ended: false, wanted: null,
};

// Simulcast (RFC 8853) where the browser sends it the way the server reads it (rids in the RTP
// header extension): Chromium and the browsers built on it, and Firefox. Safari publishes one
// encoding; the server forwards that to every size.
const SIMULCAST = /Chrome\/\d+|Firefox\/\d+/.test(navigator.userAgent)
  ? [
    { rid: "l", scaleResolutionDownBy: 4, maxBitrate: 150000 },
    { rid: "m", scaleResolutionDownBy: 2, maxBitrate: 500000 },
    { rid: "h", maxBitrate: 1500000 },
  ]
  : null;

function setStatus(key) { $("#status").dataset.i18n = key; $("#status").textContent = t(key); }
function showError(message) { $("#error").textContent = message || ""; }

function translate() {
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  $("#lang").textContent = lang === "en" ? "中文" : "EN";
  if (state.meeting) {
    $("#title").textContent = state.meeting.title;
    $("#title").title = state.meeting.title;
  }
  $("#mic").textContent = t(state.micOn ? "mic_off" : "mic_on");
  $("#hand").textContent = t(state.hand ? "lower" : "raise");
  $("#rotate").textContent = t(state.screen.rotation ? "rotate_stop" : "rotate");
  $("#record").textContent = t(state.recording ? "record_stop" : "record");
  renderWallControls();
  renderRoster();
  renderScreen();
}

function mayWatchWall() {
  if (!state.you) return false;
  return state.you.role === "chair" || (state.screen.wall_allowed || []).includes(state.you.id);
}

function renderWallControls() {
  const box = $("#wallctl");
  box.hidden = !mayWatchWall();
  const wall = state.wall;
  $("#layout").value = String(wall ? wall.tiles : 0);
  $("#pageinfo").textContent = wall ? t("page").replace("{page}", wall.page + 1).replace("{pages}", wall.pages) : "";
  for (const id of ["#prev", "#next", "#pagerotate"]) $(id).disabled = !wall;
  $("#pagerotate").textContent = t(wall && wall.interval ? "page_rotate_stop" : "page_rotate");
}

function send(type, fields = {}) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ type, ...fields }));
}

async function openCamera() {
  const facing = params.get("camera") === "environment" ? "environment" : "user";
  // Three simulcast layers need a picture large enough to divide (Chromium sends fewer below 960×540).
  const size = SIMULCAST ? { width: { ideal: 1280 }, height: { ideal: 720 } } : { width: { ideal: 640 }, height: { ideal: 480 } };
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { ...size, frameRate: { ideal: 15 }, facingMode: facing },
    });
  } catch (err) {
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err2) {
      showError(t("no_camera"));
      return null;
    }
  }
}

function supportsCodec(kind, codec) {
  // A browser that lists what it can receive and lacks the meeting's codec cannot take part: the
  // server never transcodes (Firefox without its OpenH264 plugin has no H.264).
  if (!window.RTCRtpReceiver || !RTCRtpReceiver.getCapabilities) return true;
  const caps = RTCRtpReceiver.getCapabilities(kind);
  const want = `${kind}/${codec}`.toLowerCase();
  return !caps || caps.codecs.some((c) => c.mimeType.toLowerCase() === want);
}

function preferCodec(transceiver, kind, codec) {
  // Forwarding never transcodes: offer the meeting's codec first (where the browser lets us).
  if (!transceiver.setCodecPreferences || !window.RTCRtpReceiver || !RTCRtpReceiver.getCapabilities) return;
  const caps = RTCRtpReceiver.getCapabilities(kind);
  if (!caps) return;
  const want = `${kind}/${codec}`.toLowerCase();
  const first = caps.codecs.filter((c) => c.mimeType.toLowerCase() === want);
  const rest = caps.codecs.filter((c) => c.mimeType.toLowerCase() !== want);
  if (first.length) {
    try { transceiver.setCodecPreferences([...first, ...rest]); } catch (err) { /* older browsers */ }
  }
}

async function startPeer() {
  const pc = new RTCPeerConnection({ iceServers: state.iceServers, bundlePolicy: "max-bundle" });
  state.pc = pc;
  window.meet.pc = pc;
  if (state.local) {
    for (const track of state.local.getTracks()) {
      const init = { direction: "sendonly", streams: [state.local] };
      if (track.kind === "video" && SIMULCAST) init.sendEncodings = SIMULCAST;
      const tr = pc.addTransceiver(track, init);
      if (track.kind === "video") preferCodec(tr, "video", state.meeting.codec);
    }
  }
  for (let i = 0; i < state.slots; i++) {
    preferCodec(pc.addTransceiver("video", { direction: "recvonly" }), "video", state.meeting.codec);
  }
  for (let i = 0; i < state.slots; i++) pc.addTransceiver("audio", { direction: "recvonly" });
  pc.ontrack = (ev) => attachTrack(ev.transceiver, ev.track);
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "connected") setStatus("connected");
    if (pc.connectionState === "failed") setStatus("failed");
  };
  await offer();
}

/** Receive on at least `video` video and `audio` audio m-lines, adding recvonly transceivers. */
function addSlots(video, audio) {
  const pc = state.pc;
  const have = { video: 0, audio: 0 };
  for (const tr of pc.getTransceivers()) {
    const kind = tr.receiver.track && tr.receiver.track.kind;
    if (tr.direction === "recvonly" && kind in have) have[kind] += 1;
  }
  for (let i = have.video; i < (video || 0); i++) {
    preferCodec(pc.addTransceiver("video", { direction: "recvonly" }), "video", state.meeting.codec);
  }
  for (let i = have.audio; i < (audio || 0); i++) pc.addTransceiver("audio", { direction: "recvonly" });
}

async function offer() {
  const pc = state.pc;
  await pc.setLocalDescription(await pc.createOffer());
  // Send the offer with every candidate in it: aiortc answers with all of its own at once.
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000);
  });
  send("offer", { sdp: pc.localDescription.sdp });
}

function tileFor(index) {
  // One tile per receiving video m-line, made as the server adds slots (a wall of up to 16 and the speaker).
  let tile = document.querySelector(`.tile[data-slot="${index}"]`);
  if (!tile) {
    tile = document.createElement("figure");
    tile.className = "tile";
    tile.dataset.slot = String(index);
    tile.hidden = true;
    const video = document.createElement("video");
    video.autoplay = true; video.playsInline = true; video.muted = true;
    tile.append(video, document.createElement("figcaption"));
    $("#stage").append(tile);
  }
  return tile;
}

function attachTrack(transceiver, track) {
  const stream = new MediaStream([track]);
  const mid = transceiver.mid;
  if (track.kind === "video") {
    const index = state.pc.getTransceivers().filter((x) => x.receiver.track.kind === "video" && x.direction === "recvonly").indexOf(transceiver);
    const tile = tileFor(index);
    tile.dataset.mid = mid; tile.querySelector("video").srcObject = stream;
  } else {
    const index = state.pc.getTransceivers().filter((x) => x.receiver.track.kind === "audio" && x.direction === "recvonly").indexOf(transceiver);
    const el = document.getElementById(`a${index}`);
    if (el) el.srcObject = stream;
  }
  renderScreen();
}

function labelOf(pid) {
  const found = state.roster.find((p) => p.id === pid);
  return found ? found.label : pid;
}

function renderScreen() {
  // Without a wall every picture is on the stage; with one, the speaker stays large on the stage and
  // the other pictures fill the wall's grid, in the order the server lists them (roll order).
  let shown = 0;
  const wall = state.wall;
  const grid = $("#wall");
  grid.hidden = !wall;
  if (wall) grid.style.setProperty("--cols", String(Math.ceil(Math.sqrt(wall.tiles))));
  $("#screen").classList.toggle("walled", !!wall);
  const order = (pid) => { const i = state.shown.indexOf(pid); return i < 0 ? 99 : i; };
  const tiles = [...document.querySelectorAll(".tile")];
  for (const tile of tiles) {
    const slot = state.slotMap.find((s) => s.kind === "video" && s.mid === tile.dataset.mid);
    const pid = slot && slot.participant;
    tile.hidden = !pid;
    tile.dataset.size = (slot && slot.size) || "";
    if (pid) {
      shown += 1;
      // Who is on screen, by name; the chair's own label already says 主持.
      const label = labelOf(pid);
      const role = pid === state.screen.chair ? (label.includes("主持") ? "" : t("chair")) : pid === state.screen.speaker ? t("speaker") : "";
      tile.querySelector("figcaption").textContent = `${label}${role ? " · " + role : ""}`;
      tile.dataset.participant = pid;
      tile.style.order = String(order(pid));
      const video = tile.querySelector("video");
      if (video.paused) video.play().catch(() => {});
    } else {
      delete tile.dataset.participant;
    }
    const home = wall && slot && slot.size !== "large" ? grid : $("#stage");
    if (tile.parentElement !== home) home.append(tile);
  }
  // Nothing on screen: the chair waits for the sites; a site waits for the chair only while the
  // chair is not there, else for a picture.
  const empty = $("#empty");
  empty.hidden = shown > 0;
  const chairHere = state.roster.some((p) => p.id === state.screen.chair && p.online);
  empty.dataset.i18n = state.you && state.you.role === "chair" ? "waiting_sites" : chairHere ? "waiting_picture" : "nobody";
  empty.textContent = t(empty.dataset.i18n);
}

function renderRoster() {
  const list = $("#roster");
  list.replaceChildren();
  const isChair = state.you && state.you.role === "chair";
  for (const p of state.roster) {
    const li = document.createElement("li");
    li.dataset.participant = p.id;
    if (!p.online) li.classList.add("offline");
    if (p.id === state.screen.speaker) li.classList.add("speaker");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `${p.label}${p.online ? "" : " · " + t("offline")}`;
    li.append(name);
    if (p.hand) { const h = document.createElement("span"); h.textContent = t("hand"); li.append(h); }
    if (isChair && p.online && p.id !== state.you.id) {
      const allowed = (state.screen.wall_allowed || []).includes(p.id);
      const wallBtn = document.createElement("button");
      wallBtn.type = "button"; wallBtn.className = "allowwall"; wallBtn.textContent = t(allowed ? "deny_wall" : "allow_wall");
      wallBtn.onclick = () => send("wall_allow", { participant: p.id, allowed: !allowed });
      li.append(wallBtn);
      const call = document.createElement("button");
      call.type = "button"; call.className = "rollcall"; call.textContent = t("rollcall");
      call.onclick = () => send("rollcall", { participant: p.id });
      const mute = document.createElement("button");
      mute.type = "button"; mute.className = "mute"; mute.textContent = t(p.muted ? "unmute" : "mute");
      mute.onclick = () => send("mute", { participant: p.id, muted: !p.muted });
      li.append(call, mute);
    }
    list.append(li);
  }
}

async function onMessage(msg) {
  switch (msg.type) {
    case "welcome":
      state.you = msg.you; state.meeting = msg.meeting; state.slots = msg.slots; state.iceServers = msg.ice_servers || [];
      $("#chair").hidden = msg.you.role !== "chair";
      document.title = `${msg.meeting.title} · ${t("title")}`;
      translate();
      if (!window.RTCPeerConnection) {
        // Some WebKit builds (e.g. WebKitGTK without its GStreamer WebRTC) have no peer connection.
        refuse(t("no_webrtc"));
        break;
      }
      if (!supportsCodec("video", msg.meeting.codec)) {
        refuse(t("no_codec").replace("{codec}", msg.meeting.codec));
        break;
      }
      state.local = await openCamera();
      if (state.local) $("#self video").srcObject = state.local; else $("#self").hidden = true;
      await startPeer();
      break;
    case "answer":
      await state.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
      if (state.wanted) {
        // Asked for more slots while our last offer was out: offer again now that it is answered.
        const { video, audio } = state.wanted;
        state.wanted = null;
        addSlots(video, audio);
        await offer();
      }
      break;
    case "renegotiate":
      // The server is to send us more than we have m-lines for (e.g. a wall with more pictures).
      // One offer at a time: an offer made before the last one is answered would not match it.
      if (state.pc.signalingState !== "stable") {
        const before = state.wanted || { video: 0, audio: 0 };
        state.wanted = { video: Math.max(before.video, msg.video || 0), audio: Math.max(before.audio, msg.audio || 0) };
        break;
      }
      addSlots(msg.video, msg.audio);
      await offer();
      break;
    case "roster":
      state.roster = msg.participants; state.screen = msg.screen || state.screen;
      translate();
      break;
    case "screen":
      state.screen = msg.screen; state.slotMap = msg.slots; state.shown = msg.shown || []; state.wall = msg.wall || null;
      translate();
      break;
    case "muted":
      setMic(!msg.muted);
      if (msg.muted) showError(t("muted_by_chair"));
      break;
    case "recording":
      state.recording = msg.on; $("#rec").hidden = !msg.on; translate();
      break;
    case "error":
      showError(msg.message);
      break;
    case "ended":
      finish("ended");
      break;
    default:
      break;
  }
}

function setMic(on) {
  state.micOn = on;
  if (state.local) for (const track of state.local.getAudioTracks()) track.enabled = on;
  translate();
}

function finish(key) {
  state.ended = true;
  setStatus(key);
  if (state.pc) state.pc.close();
  if (state.local) for (const track of state.local.getTracks()) track.stop();
  if (state.ws) state.ws.close();
}

function refuse(message) {
  // This browser cannot take part: say why, and leave the meeting before publishing anything.
  finish("failed");
  $("#self").hidden = true;
  showError(message);
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws/meet/${meetingId}?token=${encodeURIComponent(token)}&lang=${lang}`);
  state.ws = ws;
  let chain = Promise.resolve();
  ws.onmessage = (ev) => { chain = chain.then(() => onMessage(JSON.parse(ev.data))).catch((err) => showError(String(err))); };
  ws.onclose = () => { if (!state.ended) setStatus("failed"); };
}

$("#lang").onclick = () => { lang = lang === "en" ? "zh-CN" : "en"; localStorage.setItem("dispatchd.lang", lang); translate(); };
$("#mic").onclick = () => setMic(!state.micOn);
$("#hand").onclick = () => { state.hand = !state.hand; send("hand", { raised: state.hand }); translate(); };
$("#leave").onclick = () => { send("leave"); finish("left"); };
$("#rotate").onclick = () => {
  if (state.screen.rotation) send("rotate_stop");
  else send("rotate", { interval: Number($("#interval").value) || 10 });
};
$("#clear").onclick = () => send("rollcall", { participant: null });
$("#record").onclick = () => send("record", { on: !state.recording });
$("#end").onclick = () => { if (confirm(t("confirm_end"))) send("end"); };
$("#layout").onchange = () => send("layout", { tiles: Number($("#layout").value) });
$("#prev").onclick = () => { if (state.wall) send("page", { page: state.wall.page - 1 }); };
$("#next").onclick = () => { if (state.wall) send("page", { page: state.wall.page + 1 }); };
$("#pagerotate").onclick = () => {
  if (state.wall && state.wall.interval) send("page_rotate_stop");
  else send("page_rotate", { interval: Number($("#interval").value) || 10 });
};

// For tests and the curious: the live peer connection and a summary of what is being decoded.
window.meet = {
  pc: null,
  state,
  async framesDecoded() {
    if (!state.pc) return 0;
    let total = 0;
    (await state.pc.getStats()).forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") total += s.framesDecoded || 0; });
    return total;
  },
  async decodedByParticipant() {
    const out = {};
    if (!state.pc) return out;
    const byMid = {};
    (await state.pc.getStats()).forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") byMid[s.mid] = s.framesDecoded || 0; });
    for (const slot of state.slotMap) if (slot.kind === "video" && slot.participant) out[slot.participant] = byMid[slot.mid] || 0;
    return out;
  },
};

translate();
connect();
