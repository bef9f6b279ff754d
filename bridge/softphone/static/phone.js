// The softphone: a call into the bridge from this browser. It speaks exactly the Twilio Media Streams
// protocol (docs/protocols.md §T3, §T4, §T5), so the bridge handles it like any phone call: same call,
// barge-in, call log.

const FRAME_MS = 20;
const ULAW_RATE = 8000;
const MAX_LOG_ENTRIES = 400;

// Read by the browser tests; also handy in the console.
const softphone = {
  state: "idle", // idle | connecting | in-call | ended | failed
  framesSent: 0,
  framesReceived: 0,
  bytesPlayed: 0,
  marksEchoed: 0,
  clears: 0,
  firstAudioMs: null,
};
window.softphone = softphone;

const $ = (id) => document.getElementById(id);

function randomHex(bytes) {
  const values = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(values, (b) => b.toString(16).padStart(2, "0")).join("");
}

function toBase64(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}

function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function seconds(value) {
  return `${value.toFixed(1)} s`;
}

function clock(ms) {
  const total = Math.floor(ms / 1000);
  return `${Math.floor(total / 60)}:${String(total % 60).padStart(2, "0")}`;
}

// ---- the page's furniture -----------------------------------------------------------------------

function setState(state, text) {
  softphone.state = state;
  document.body.dataset.state = state;
  $("status").textContent = text;
  const live = state === "connecting" || state === "in-call";
  $("call").disabled = live;
  $("mute").disabled = state !== "in-call";
  $("hangup").disabled = !live;
}

function showLevel(id, rms) {
  // -60 dBFS (quiet room) to 0 dBFS across the bar.
  const db = rms > 0 ? 20 * Math.log10(rms) : -100;
  const fraction = Math.max(0, Math.min(1, (db + 60) / 60));
  $(id).style.transform = `scaleX(${fraction})`;
}

class EventLog {
  constructor(list) {
    this.list = list;
    this.origin = 0;
    this.markEntry = null; // consecutive mark echoes share one line, or they would bury everything else
    this.markCount = 0;
  }

  clear(origin) {
    this.list.replaceChildren();
    this.origin = origin;
    this.markEntry = null;
  }

  add(kind, text) {
    const entry = document.createElement("li");
    entry.className = kind;
    const at = document.createElement("time");
    at.textContent = `+${((performance.now() - this.origin) / 1000).toFixed(2)} s`;
    const said = document.createElement("span");
    said.textContent = text;
    entry.append(at, said);
    this.list.append(entry);
    while (this.list.childElementCount > MAX_LOG_ENTRIES) this.list.firstElementChild.remove();
    this.list.scrollTop = this.list.scrollHeight;
    this.markEntry = null;
    return entry;
  }

  mark(name) {
    if (this.markEntry === null) {
      this.markCount = 0;
      const entry = this.add("mark", "");
      this.markEntry = entry;
    }
    this.markCount += 1;
    this.markEntry.lastChild.textContent = `Marks echoed after playing: ${this.markCount} (last “${name}”)`;
    this.markEntry.firstChild.textContent = `+${((performance.now() - this.origin) / 1000).toFixed(2)} s`;
  }
}

const eventLog = new EventLog($("log"));

function showFigures(call) {
  $("fig-duration").textContent = call.connectedAt ? clock(performance.now() - call.connectedAt) : "—";
  const first = softphone.firstAudioMs;
  $("fig-first-audio").textContent = first === null ? "—" : `${(first / 1000).toFixed(2)} s`;
  $("fig-barge-ins").textContent = String(softphone.clears);
  $("fig-sent").textContent = seconds((softphone.framesSent * FRAME_MS) / 1000);
  $("fig-heard").textContent = seconds(softphone.bytesPlayed / ULAW_RATE);
  $("fig-marks").textContent = String(softphone.marksEchoed);
}

// ---- one call -----------------------------------------------------------------------------------

class Call {
  constructor() {
    this.streamSid = `MZ${randomHex(16)}`;
    this.callSid = `CA${randomHex(16)}`;
    this.accountSid = `AC${"0".repeat(32)}`; // no Twilio account is involved
    this.sequence = 0; // one counter over every message after `connected`, as Twilio numbers them
    this.chunk = 0;
    this.socket = null;
    this.context = null;
    this.microphone = null;
    this.player = null;
    this.connectedAt = 0;
    this.live = false; // `start` sent and the socket still open
    this.ended = false;
    this.hungUp = false;
    this.lastMediaAt = 0;
    this.ticker = 0;
  }

  async start() {
    if (!window.isSecureContext || !navigator.mediaDevices || !window.AudioWorkletNode) {
      throw new Error("The microphone needs a secure page: open this over https, or on localhost.");
    }
    // Created before any await, while the click still counts as a user gesture for autoplay.
    this.context = new AudioContext({ latencyHint: "interactive" });
    await Promise.all([
      this.context.audioWorklet.addModule("/phone/static/capture-worklet.js"),
      this.context.audioWorklet.addModule("/phone/static/playback-worklet.js"),
    ]);
    try {
      this.microphone = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
      });
    } catch (error) {
      throw new Error(`No microphone: ${error.message}. Allow it for this page and call again.`);
    }
    if (this.ended) return this.release();
    await this.context.resume();

    this.player = new AudioWorkletNode(this.context, "softphone-playback", {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [1],
    });
    this.player.port.onmessage = (event) => this.fromPlayer(event.data);
    this.player.connect(this.context.destination);

    const capture = new AudioWorkletNode(this.context, "softphone-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      channelCount: 1,
      channelCountMode: "explicit",
    });
    capture.port.onmessage = (event) => this.fromMicrophone(event.data);
    this.context.createMediaStreamSource(this.microphone).connect(capture);

    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.socket = new WebSocket(`${scheme}://${location.host}/phone/media`);
    this.socket.onopen = () => this.opened();
    this.socket.onmessage = (event) => this.fromBridge(event.data);
    this.socket.onclose = (event) => this.closed(event);
  }

  send(event, fields) {
    const message = { event, sequenceNumber: String(++this.sequence), ...fields, streamSid: this.streamSid };
    this.socket.send(JSON.stringify(message));
  }

  opened() {
    this.socket.send(JSON.stringify({ event: "connected", protocol: "Call", version: "1.0.0" }));
    this.send("start", {
      start: {
        accountSid: this.accountSid,
        streamSid: this.streamSid,
        callSid: this.callSid,
        tracks: ["inbound"],
        mediaFormat: { encoding: "audio/x-mulaw", sampleRate: ULAW_RATE, channels: 1 },
        customParameters: {
          from: "browser",
          to: "softphone",
          direction: "browser",
          ...($("record").checked ? { record: "1" } : {}),
        },
      },
    });
    this.live = true;
    this.connectedAt = performance.now();
    eventLog.add("info", `Connected; call ${this.callSid}`);
    setState("in-call", "In call");
    this.ticker = setInterval(() => {
      $("timer").textContent = clock(performance.now() - this.connectedAt);
      showFigures(this);
    }, 250);
  }

  fromMicrophone({ frame, rms }) {
    showLevel("mic-level", rms);
    if (!this.live) return; // frames from before the call started would arrive as a burst
    this.chunk += 1;
    const media = {
      track: "inbound",
      chunk: String(this.chunk),
      timestamp: String((this.chunk - 1) * FRAME_MS),
      payload: toBase64(frame),
    };
    this.send("media", { media });
    softphone.framesSent += 1;
  }

  fromBridge(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      eventLog.add("problem", "The bridge sent a message that is not JSON; ignored");
      return;
    }
    if (message.event === "media") {
      softphone.framesReceived += 1;
      const now = performance.now();
      if (now - this.lastMediaAt > 500) eventLog.add("audio", "Assistant audio arriving");
      this.lastMediaAt = now;
      const audio = fromBase64(message.media.payload);
      this.player.port.postMessage({ type: "audio", data: audio }, [audio.buffer]);
    } else if (message.event === "mark") {
      this.player.port.postMessage({ type: "mark", name: message.mark.name });
    } else if (message.event === "clear") {
      softphone.clears += 1;
      this.player.port.postMessage({ type: "clear" });
    }
  }

  fromPlayer(message) {
    if (message.type === "marks") {
      for (const name of message.names) {
        this.echoMark(name);
        eventLog.mark(name);
      }
    } else if (message.type === "cleared") {
      for (const name of message.names) this.echoMark(name);
      const marks = message.names.length === 1 ? "1 mark" : `${message.names.length} marks`;
      const dropped = (message.droppedMs / 1000).toFixed(2);
      eventLog.add("clear", `Barge-in: the bridge cleared playback (${dropped} s dropped, ${marks} returned)`);
    } else if (message.type === "first") {
      softphone.firstAudioMs = Math.round(performance.now() - this.connectedAt);
      eventLog.add("audio", `Assistant started speaking, ${softphone.firstAudioMs} ms after connecting`);
    } else if (message.type === "progress") {
      softphone.bytesPlayed = message.played; // one µ-law byte per 8 kHz sample
      showLevel("out-level", message.rms);
    }
  }

  echoMark(name) {
    if (!this.live) return;
    this.send("mark", { mark: { name } });
    softphone.marksEchoed += 1;
  }

  mute(muted) {
    // A disabled track still flows, as silence: the bridge keeps getting a frame every 20 ms, like from a phone.
    for (const track of this.microphone.getAudioTracks()) track.enabled = !muted;
    $("mute").setAttribute("aria-pressed", String(muted));
    $("mute").textContent = muted ? "Unmute" : "Mute";
    eventLog.add("info", muted ? "Microphone muted" : "Microphone on");
  }

  hangUp() {
    if (this.ended) return;
    this.hungUp = true;
    if (this.live) this.send("stop", { stop: { accountSid: this.accountSid, callSid: this.callSid } });
    this.finish("ended", "You hung up");
  }

  closed(event) {
    if (this.ended) return;
    if (!this.live) {
      this.finish("failed", "Could not reach the bridge. Are you signed in? (see /calls)");
      return;
    }
    const reason = event.reason ? ` (${event.reason.replaceAll("_", " ")})` : "";
    this.finish("ended", `The bridge ended the call${reason}`);
  }

  finish(state, text) {
    if (this.ended) return;
    this.ended = true;
    this.live = false;
    clearInterval(this.ticker);
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) this.socket.close(1000, "hung up");
    this.release();
    showLevel("mic-level", 0);
    showLevel("out-level", 0);
    showFigures(this);
    eventLog.add(state === "failed" ? "problem" : "info", text);
    setState(state, state === "failed" ? "Call failed" : "Call ended");
    if (this.connectedAt) {
      // The bridge logs a browser call under the call SID this page made up.
      $("call-link").querySelector("a").href = `/calls/${encodeURIComponent(this.callSid)}`;
      $("call-link").hidden = false;
    }
  }

  release() {
    if (this.microphone) for (const track of this.microphone.getTracks()) track.stop();
    if (this.context && this.context.state !== "closed") this.context.close();
  }
}

let current = null;

$("call").addEventListener("click", async () => {
  if (current && !current.ended) return;
  for (const key of ["framesSent", "framesReceived", "bytesPlayed", "marksEchoed", "clears"]) softphone[key] = 0;
  softphone.firstAudioMs = null;
  $("timer").textContent = "";
  $("mute").textContent = "Mute";
  $("mute").setAttribute("aria-pressed", "false");
  eventLog.clear(performance.now());
  $("call-link").hidden = true;
  setState("connecting", "Connecting…");
  eventLog.add("info", "Starting the microphone and calling the bridge");
  current = new Call();
  showFigures(current);
  try {
    await current.start();
  } catch (error) {
    current.finish("failed", error.message);
  }
});

$("mute").addEventListener("click", () => {
  if (current && current.live) current.mute($("mute").getAttribute("aria-pressed") !== "true");
});

$("hangup").addEventListener("click", () => current && current.hangUp());

// Leaving the page hangs up properly rather than leaving the bridge to notice a dropped socket.
window.addEventListener("pagehide", () => current && current.hangUp());

setState("idle", "Ready to call");
