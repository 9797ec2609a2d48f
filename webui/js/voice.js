// The console's voice: one WebRTC audio session with dispatchd per call (answer, or a call out).
// The microphone goes to the caller, the caller's audio to an <audio> element; a data channel
// brings what the server tells (the caller's DTMF keys, hold, ringing, answered, ended) and takes
// keys to send to the caller. The offer is sent whole (ICE gathered first): dispatchd answers in one go.

export class VoiceSession {
  constructor({ iceServers = [], onMessage = () => {}, onState = () => {} } = {}) {
    this.iceServers = iceServers;
    this.onMessage = onMessage;
    this.onState = onState;
    this.pc = null;
    this.channel = null;
    this.stream = null;
    this.audio = null;
    this.keys = [];
    this.closed = false;
  }

  // The offer to send with POST …/answer or POST /callouts: {type: "offer", sdp}.
  async offer() {
    this.stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true }, video: false });
    const pc = new RTCPeerConnection({ iceServers: this.iceServers, bundlePolicy: "max-bundle" });
    this.pc = pc;
    for (const track of this.stream.getAudioTracks()) pc.addTrack(track, this.stream);
    this.channel = pc.createDataChannel("hotline");
    this.channel.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg.type === "dtmf") this.keys.push(msg.key);
      this.onMessage(msg);
    };
    pc.ontrack = (ev) => {
      if (!this.audio) {
        this.audio = document.createElement("audio");
        this.audio.autoplay = true;
        this.audio.hidden = true;
        document.body.append(this.audio);
      }
      this.audio.srcObject = ev.streams[0] || new MediaStream([ev.track]);
      this.audio.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => this.onState(pc.connectionState);
    await pc.setLocalDescription(await pc.createOffer());
    await this.gathered(3000);
    return { type: "offer", sdp: pc.localDescription.sdp };
  }

  gathered(limit) {
    const pc = this.pc;
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (pc.iceGatheringState === "complete") {
          pc.removeEventListener("icegatheringstatechange", done);
          resolve();
        }
      };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, limit); // host candidates are in by now; dispatchd needs no more
    });
  }

  async accept(answer) {
    await this.pc.setRemoteDescription(answer);
  }

  // A DTMF key to the caller (RFC 4733 on the caller's side), e.g. into a department's menu.
  sendKey(key) {
    if (this.channel && this.channel.readyState === "open") this.channel.send(JSON.stringify({ type: "dtmf", key }));
  }

  // Audio statistics for diagnostics and tests: what arrived from the caller.
  async inbound() {
    if (!this.pc) return null;
    const stats = await this.pc.getStats();
    for (const s of stats.values()) {
      if (s.type === "inbound-rtp" && s.kind === "audio") return { packets: s.packetsReceived || 0, level: s.audioLevel || 0, energy: s.totalAudioEnergy || 0 };
    }
    return null;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    if (this.pc) this.pc.close();
    if (this.audio) this.audio.remove();
  }
}
