"use strict";

// The call page's recording: a player with the waveform of both channels (caller above, assistant
// below), the conversation's lines and the barge-ins marked on the same time axis, in the page's one
// #recording element. The timeline tells it about each of its lines with CallRecording.line(node,
// event); a line is then played from its time when clicked. Everything here reads the call from the
// API itself, so the page's own script only has that one hook to call.
//
// Times: a line's place in the audio is its event's `at` minus the recording's `started_at` (sample 0).
// The waveform comes from the recording's peaks (`?format=peaks`, made when the recording was stored),
// so an hour-long call draws at once; the audio streams with range requests only as it is played.
const CallRecording = (() => {
  const { el, getJSON, clock, poll } = CallLog;
  const SPEEDS = [1, 1.5, 2];
  const MARKED = { caller_transcript: "caller", assistant_transcript: "assistant", barge_in: "barge" };
  const COLORS = {
    caller: "#5c6b7a",
    assistant: "#1f5fbf",
    unplayed: "#c3cdd8",
    barge: "#b42318",
    playhead: "#1d2733",
    played: "rgba(31, 95, 191, 0.07)",
  };

  const callId = decodeURIComponent(window.location.pathname.split("/").pop());
  let root = null; // the #recording element
  let call = null;
  let player = null; // { audio, canvas, clockText, playButton } once the recording is ready
  let peaks = null; // { caller: Uint8Array, assistant: Uint8Array, seconds } once loaded
  let columns = null; // per canvas column, the loudest bucket of each channel (recomputed on resize)
  let startedAt = 0; // ms since the epoch of sample 0
  let pendingSeek = null; // where to go once the seek under way is done

  // -- the hook: the timeline registers each line --------------------------------------------------

  function line(node, event) {
    if (!event || !event.at) return;
    node.dataset.recordingAt = event.at;
    if (player) decorate(node);
  }

  function decorate(node) {
    const time = node.querySelector("time");
    if (time && !time.hasAttribute("tabindex")) {
      time.tabIndex = 0;
      time.setAttribute("role", "button");
      time.title = "Play the recording from here";
    }
  }

  function offsetOf(at) {
    return Math.max(0, (Date.parse(at) - startedAt) / 1000);
  }

  function lineNodes() {
    return [...document.querySelectorAll("[data-recording-at]")];
  }

  // -- state: not recorded, being stored, failed, ready --------------------------------------------

  async function load() {
    try {
      call = await getJSON(`/api/calls/${encodeURIComponent(callId)}`);
    } catch (err) {
      return; // the page itself says why the call cannot be shown
    }
    const recording = call.recording;
    if (!recording) {
      root.hidden = true;
      return;
    }
    root.hidden = false;
    if (recording.status === "ready") {
      if (!player) mount(recording);
      return;
    }
    const text =
      recording.status === "failed"
        ? `The recording failed: ${recording.error || "no reason was given"}.`
        : "This call is being recorded. The recording will be here shortly after the call ends.";
    root.replaceChildren(
      el("h2", { text: "Recording" }),
      el("p", { class: recording.status === "failed" ? "problem-text" : "muted", text }),
    );
  }

  // -- the player ----------------------------------------------------------------------------------

  function mount(recording) {
    startedAt = Date.parse(recording.started_at);
    const base = recording.url;
    const audio = el("audio", { preload: "metadata" });
    for (const fmt of ["flac", "wav"]) {
      if (recording.formats.includes(fmt)) {
        audio.append(el("source", { src: `${base}?format=${fmt}`, type: `audio/${fmt}` }));
      }
    }
    const playButton = el("button", { type: "button", class: "play", "aria-label": "Play", text: "▶" });
    const canvas = el("canvas", { class: "wave", role: "slider", tabindex: "0", "aria-label": "Position in the recording" });
    const clockText = el("span", { class: "clock", text: "00:00.0" });
    const speed = el(
      "select",
      { class: "speed", "aria-label": "Playback speed" },
      ...SPEEDS.map((s) => el("option", { value: String(s), text: `${s}×` })),
    );
    const downloads = el(
      "span",
      { class: "downloads" },
      ...["wav", "flac"]
        .filter((fmt) => recording.formats.includes(fmt))
        .map((fmt) => el("a", { href: `${base}?format=${fmt}`, download: `call-${callId}.${fmt}`, text: fmt.toUpperCase() })),
    );
    root.replaceChildren(
      el(
        "div",
        { class: "recording-head" },
        el("h2", { text: "Recording" }),
        el("span", { class: "legend" }, el("span", { class: "key caller" }), "Caller", el("span", { class: "key assistant" }), "Assistant", el("span", { class: "key barge" }), "Barge-in"),
        downloads,
      ),
      el(
        "div",
        { class: "recording-body" },
        playButton,
        el("div", { class: "wave-box" }, canvas, el("span", { class: "lane caller", text: "Caller" }), el("span", { class: "lane assistant", text: "Assistant" })),
      ),
      el("div", { class: "recording-foot" }, clockText, speed),
      audio,
    );
    player = { audio, canvas, clockText, playButton };
    document.body.classList.add("has-recording");
    lineNodes().forEach(decorate);

    playButton.addEventListener("click", () => (audio.paused ? play() : audio.pause()));
    speed.addEventListener("change", () => {
      audio.playbackRate = Number(speed.value);
    });
    audio.addEventListener("play", () => {
      playButton.textContent = "❚❚";
      playButton.setAttribute("aria-label", "Pause");
      requestAnimationFrame(animate);
    });
    audio.addEventListener("pause", () => {
      playButton.textContent = "▶";
      playButton.setAttribute("aria-label", "Play");
    });
    audio.addEventListener("seeked", seeked);
    for (const name of ["timeupdate", "loadedmetadata", "durationchange"]) audio.addEventListener(name, update);
    canvas.addEventListener("click", (e) => {
      const box = canvas.getBoundingClientRect();
      seek(((e.clientX - box.left) / box.width) * seconds());
    });
    canvas.addEventListener("mousemove", (e) => {
      const box = canvas.getBoundingClientRect();
      canvas.title = clock(((e.clientX - box.left) / box.width) * seconds());
    });
    canvas.addEventListener("keydown", (e) => {
      const step = { ArrowLeft: -5, ArrowRight: 5 }[e.key];
      if (step !== undefined) {
        seek(audio.currentTime + step);
        e.preventDefault();
      }
    });
    new ResizeObserver(() => {
      columns = null;
      draw();
    }).observe(canvas);
    if (recording.formats.includes("peaks")) loadPeaks(base);
    update();
  }

  async function loadPeaks(base) {
    try {
      const data = await getJSON(`${base}?format=peaks`);
      const bytes = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
      peaks = { caller: bytes(data.caller), assistant: bytes(data.assistant), seconds: data.samples / data.rate };
    } catch (err) {
      console.warn("no waveform for this recording", err);
      return;
    }
    columns = null;
    draw();
  }

  function seconds() {
    const audio = player && player.audio;
    if (audio && Number.isFinite(audio.duration) && audio.duration > 0) return audio.duration;
    if (peaks) return peaks.seconds;
    return (call && call.recording && call.recording.duration_s) || 1;
  }

  function play() {
    // A browser may refuse to start sound the user did not ask for; the position is set either way.
    player.audio.play().catch(() => {});
  }

  function seek(t, andPlay = false) {
    if (!player) return;
    const target = Math.min(Math.max(0, t), seconds());
    // One seek at a time: Chromium can hang for good on a seek made while another is under way (a
    // reader clicking line after line). The last one asked for follows when the current one is done.
    if (player.audio.seeking) pendingSeek = target;
    else player.audio.currentTime = target;
    update();
    if (andPlay) play();
  }

  function seeked() {
    if (pendingSeek !== null) {
      const target = pendingSeek;
      pendingSeek = null;
      player.audio.currentTime = target;
    }
    update();
  }

  function update() {
    if (!player) return;
    const t = pendingSeek ?? player.audio.currentTime;
    player.clockText.textContent = `${clock(t)} / ${clock(seconds())}`;
    player.canvas.setAttribute("aria-valuenow", String(Math.round(t)));
    player.canvas.setAttribute("aria-valuetext", clock(t));
    highlight(t);
    draw();
  }

  function animate() {
    if (!player || player.audio.paused) return;
    update();
    requestAnimationFrame(animate);
  }

  // The line being heard: the last one that began at or before the playhead.
  function highlight(t) {
    let current = null;
    let best = -Infinity;
    for (const node of lineNodes()) {
      const at = offsetOf(node.dataset.recordingAt);
      if (at <= t + 0.05 && at > best) {
        best = at;
        current = node;
      }
    }
    for (const node of document.querySelectorAll(".now-playing")) if (node !== current) node.classList.remove("now-playing");
    if (current && (t > 0 || !player.audio.paused)) current.classList.add("now-playing");
  }

  // -- the waveform --------------------------------------------------------------------------------

  function columnPeaks(width) {
    const n = peaks.caller.length;
    const out = { caller: new Float32Array(width), assistant: new Float32Array(width) };
    let loudest = 1;
    for (const name of ["caller", "assistant"]) {
      const source = peaks[name];
      for (let x = 0; x < width; x++) {
        const from = Math.floor((x / width) * n);
        const to = Math.max(from + 1, Math.floor(((x + 1) / width) * n));
        let max = 0;
        for (let i = from; i < to && i < n; i++) if (source[i] > max) max = source[i];
        out[name][x] = max;
        if (max > loudest) loudest = max;
      }
    }
    // Square root: quiet speech stays visible beside a loud moment.
    for (const name of ["caller", "assistant"]) for (let x = 0; x < width; x++) out[name][x] = Math.sqrt(out[name][x] / loudest);
    return out;
  }

  function draw() {
    if (!player) return;
    const canvas = player.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
      columns = null;
    }
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    const total = seconds();
    const playX = Math.round((player.audio.currentTime / total) * width);
    ctx.fillStyle = COLORS.played;
    ctx.fillRect(0, 0, playX, height);
    const lane = height / 2;
    ctx.fillStyle = COLORS.unplayed;
    ctx.fillRect(0, lane - 0.5 * ratio, width, Math.max(1, ratio)); // the line between the lanes
    if (peaks) {
      if (!columns || columns.caller.length !== width) columns = columnPeaks(width);
      ["caller", "assistant"].forEach((name, index) => {
        const middle = lane * index + lane / 2;
        const values = columns[name];
        for (let x = 0; x < width; x++) {
          const h = Math.max(values[x] > 0 ? ratio : 0, values[x] * lane * 0.9);
          if (!h) continue;
          ctx.fillStyle = x < playX ? COLORS[name] : COLORS.unplayed;
          ctx.fillRect(x, middle - h / 2, 1, h);
        }
      });
    }
    // The conversation on the same axis: where each line began (in its speaker's lane) and each barge-in.
    for (const event of (call && call.events) || []) {
      const kind = MARKED[event.kind];
      if (!kind) continue;
      const x = Math.round((offsetOf(event.at) / total) * width);
      ctx.fillStyle = COLORS[kind];
      if (kind === "barge") {
        ctx.fillRect(x - ratio, 0, 2 * ratio, height);
      } else {
        const top = kind === "caller" ? 0 : lane;
        ctx.fillRect(x, top, Math.max(1, ratio), 6 * ratio);
      }
    }
    ctx.fillStyle = COLORS.playhead;
    ctx.fillRect(playX - ratio, 0, 2 * ratio, height);
  }

  // -- clicks on the timeline's lines --------------------------------------------------------------

  function lineTarget(event) {
    if (!player) return null;
    const node = event.target.closest("[data-recording-at]");
    if (!node || event.target.closest("a, button, input, select, summary")) return null;
    return node;
  }

  document.addEventListener("click", (event) => {
    const node = lineTarget(event);
    // Selecting a line's words to copy them is not asking to hear it.
    if (!node || String(window.getSelection() || "")) return;
    seek(offsetOf(node.dataset.recordingAt), true);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" && event.key !== " ") return;
    const node = lineTarget(event);
    if (!node || !event.target.matches("time")) return;
    event.preventDefault();
    seek(offsetOf(node.dataset.recordingAt), true);
  });

  document.addEventListener("DOMContentLoaded", () => {
    root = document.getElementById("recording");
    if (!root) return;
    load();
    poll(load, () => !player && call !== null && (call.status === "in_progress" || (call.recording && call.recording.status === "recording")));
  });

  return { line, seek };
})();
