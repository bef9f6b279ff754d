"use strict";

(() => {
  const { el, getJSON, formatWhen, liveDuration, formatCost, formatMs, clock, reasonBadge, poll } = CallLog;
  const callId = decodeURIComponent(window.location.pathname.split("/").pop());
  const highlight = new URLSearchParams(window.location.search).get("q") || "";
  const status = document.getElementById("status");
  const timeline = document.getElementById("timeline");
  const revealButton = document.getElementById("reveal");
  let reveal = false;
  let call = null;

  document.getElementById("transcript-link").href = `/api/calls/${encodeURIComponent(callId)}/transcript`;
  if (highlight) document.getElementById("back").href = `/calls?q=${encodeURIComponent(highlight)}`;

  function set(id, text) {
    document.getElementById(id).textContent = text;
  }

  // The search words, marked inside a transcript line (built from text nodes, never HTML).
  function marked(text) {
    if (!highlight) return [text];
    const parts = [];
    const lower = text.toLowerCase();
    const needle = highlight.toLowerCase();
    let from = 0;
    for (let at = lower.indexOf(needle); at !== -1 && needle; at = lower.indexOf(needle, from)) {
      parts.push(text.slice(from, at), el("mark", { text: text.slice(at, at + needle.length) }));
      from = at + needle.length;
    }
    parts.push(text.slice(from));
    return parts;
  }

  function renderSummary() {
    document.getElementById("summary").hidden = false;
    const who = call.direction === "outbound" ? `Call to ${call.to_number}` : `Call from ${call.from_number}`;
    set("title", who);
    document.title = `${who} · Call log`;
    document.getElementById("badge").replaceChildren(reasonBadge(call));
    set("from", call.from_number);
    set("to", call.to_number);
    set("started", formatWhen(call.started_at));
    set("duration", liveDuration(call));
    set("cost", formatCost(call.cost_usd));
    document.getElementById("cost").title =
      "Estimated from token usage and list prices; the provider's bill is authoritative.";
    set(
      "latency",
      call.turn_latency_p50_ms === null
        ? "—"
        : `typically ${formatMs(call.turn_latency_p50_ms)}, slowest ${formatMs(call.turn_latency_max_ms)}`,
    );
    set("barge-ins", String(call.barge_in_count));
    set("model", `${call.model} · ${call.voice}`);
    revealButton.textContent = reveal ? "Hide full numbers" : "Show full numbers";

    const n = (v) => Number(v || 0).toLocaleString();
    const facts = [
      ["Call id", call.call_id],
      ["Carrier call id", call.call_sid || "—"],
      ["Stream id", call.stream_sid || "—"],
      ["Carrier · direction", `${call.carrier} · ${call.direction}`],
      ["Input tokens", `${n(call.input_text_tokens)} text, ${n(call.input_audio_tokens)} audio (${n(call.input_cached_tokens)} cached)`],
      ["Output tokens", `${n(call.output_text_tokens)} text, ${n(call.output_audio_tokens)} audio`],
      ["Errors", String(call.error_count)],
    ];
    if (call.ended_at) facts.push(["Ended", formatWhen(call.ended_at)]);
    if (call.disposition) facts.push(["Disposition", call.disposition]);
    if (call.summary) facts.push(["Summary", call.summary]);
    document.getElementById("tech").replaceChildren(
      ...facts.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v }))),
    );
  }

  function at(event) {
    return clock((Date.parse(event.at) - Date.parse(call.started_at)) / 1000);
  }

  function bubble(side, who, event, body, extra = []) {
    return el(
      "article",
      { class: `bubble ${side}`, dataset: { kind: event.kind } },
      el("header", {}, el("span", { class: "who", text: who }), el("time", { text: at(event) })),
      el("p", { class: "said" }, ...body),
      ...extra,
    );
  }

  function note(event, cls, ...children) {
    return el("div", { class: `note ${cls}`, dataset: { kind: event.kind } }, el("time", { text: at(event) }), ...children);
  }

  function cutMarker(barge) {
    const d = barge.data;
    const heard = d.heard_ms !== undefined ? `the caller heard ${formatMs(d.heard_ms)}` : "";
    const sent = d.sent_ms !== undefined ? ` of ${formatMs(d.sent_ms)} sent` : "";
    const reaction = d.reaction_ms !== undefined ? `; the assistant stopped ${formatMs(d.reaction_ms)} after the caller spoke` : "";
    return el(
      "p",
      { class: "cut-marker", dataset: { kind: "barge_in" } },
      el("span", { class: "scissors", "aria-hidden": "true", text: "✂" }),
      ` Caller cut in at ${at(barge)}`,
      heard ? ` — ${heard}${sent}${reaction}` : "",
    );
  }

  function json(value) {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    return text && text.length > 400 ? `${text.slice(0, 400)}…` : text;
  }

  function renderTimeline() {
    const events = call.events;
    const assistantItems = new Set(
      events.filter((e) => e.kind === "assistant_transcript" && e.data.item_id).map((e) => e.data.item_id),
    );
    const bargeByItem = new Map();
    for (const e of events) if (e.kind === "barge_in" && assistantItems.has(e.data.item_id)) bargeByItem.set(e.data.item_id, e);
    const results = new Map();
    for (const e of events) if (e.kind === "tool_result") results.set(e.data.call_id, e);
    const calledTools = new Set(events.filter((e) => e.kind === "tool_call").map((e) => e.data.call_id));

    const nodes = [];
    let pendingLatency = null;
    for (const e of events) {
      const d = e.data || {};
      const before = nodes.length;
      switch (e.kind) {
        case "caller_transcript":
          nodes.push(bubble("caller", "Caller", e, marked(String(d.text || "…"))));
          break;
        case "assistant_transcript": {
          const barge = bargeByItem.get(d.item_id);
          const extra = [];
          if (pendingLatency !== null) {
            extra.unshift(el("p", { class: "meta", text: `replied after ${formatMs(pendingLatency)}` }));
            pendingLatency = null;
          }
          if (barge) extra.push(cutMarker(barge));
          else if (d.interrupted) extra.push(el("p", { class: "cut-marker", text: "✂ Cut off by the caller" }));
          const node = bubble("assistant", "Assistant", e, marked(String(d.text || "…")), extra);
          if (barge || d.interrupted) node.classList.add("cut");
          nodes.push(node);
          break;
        }
        case "barge_in":
          if (!assistantItems.has(d.item_id)) nodes.push(note(e, "barge", cutMarker(e)));
          break;
        case "turn_latency":
          pendingLatency = d.ms;
          break;
        case "greeting_latency":
          nodes.push(note(e, "quiet", `Greeting started ${formatMs(d.ms)} after the call connected`));
          break;
        case "tool_call": {
          const result = results.get(d.call_id);
          const children = [
            el("strong", { text: `Tool: ${d.name}` }),
            el("code", { class: "args", text: json(d.arguments) }),
          ];
          if (result) children.push(toolOutcome(result));
          else children.push(el("span", { class: "pending", text: "waiting for result…" }));
          nodes.push(note(e, result && !result.data.ok ? "tool problem" : "tool", ...children));
          break;
        }
        case "tool_result":
          if (!calledTools.has(d.call_id)) nodes.push(note(e, d.ok ? "tool" : "tool problem", el("strong", { text: `Tool: ${d.name}` }), toolOutcome(e)));
          break;
        case "dtmf":
          nodes.push(note(e, "dtmf", "Caller pressed ", el("kbd", { text: String(d.digit) })));
          break;
        case "error":
          nodes.push(
            note(e, "problem", el("strong", { text: `Error${d.source ? ` (${d.source})` : ""}` }), `${d.code ? ` ${d.code}` : ""}: ${d.message || ""}`),
          );
          break;
        case "note":
          nodes.push(note(e, "quiet", String(d.text || "")));
          break;
        default:
          nodes.push(note(e, "quiet", `${e.kind}: ${json(d)}`));
      }
      // The recording's player (recording.js) plays each line from its time when it is clicked.
      if (nodes.length > before && typeof CallRecording !== "undefined") CallRecording.line(nodes[nodes.length - 1], e);
    }
    if (call.status === "in_progress") nodes.push(el("p", { class: "live-tail" }, el("span", { class: "dot" }), " Call in progress — updating live"));
    else if (call.ended_at) {
      const label = CallLog.END_REASONS[call.end_reason] || call.end_reason || "Ended";
      nodes.push(note({ at: call.ended_at, kind: "end" }, "end", `Call ended — ${label}`));
    }
    if (!events.length && call.status !== "in_progress") nodes.unshift(el("p", { class: "muted", text: "Nothing was recorded for this call." }));
    timeline.replaceChildren(...nodes);
  }

  function toolOutcome(result) {
    const d = result.data;
    const took = d.duration_ms !== undefined ? ` in ${formatMs(d.duration_ms)}` : "";
    return d.ok
      ? el("span", { class: "outcome" }, `✓ returned${took}: `, el("code", { text: json(d.result) }))
      : el("span", { class: "outcome problem-text" }, `✗ failed${took}: ${json(d.error)}`);
  }

  async function load() {
    const nearBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
    try {
      call = await getJSON(`/api/calls/${encodeURIComponent(callId)}${reveal ? "?reveal=1" : ""}`);
    } catch (err) {
      status.textContent = err.message === "no such call" ? "There is no call with this id." : `Could not load the call: ${err.message}`;
      status.hidden = false;
      return;
    }
    status.hidden = true;
    renderSummary();
    renderTimeline();
    // Follow a live call like a chat, unless the reader has scrolled up to read.
    if (call.status === "in_progress" && nearBottom) window.scrollTo(0, document.body.scrollHeight);
  }

  revealButton.addEventListener("click", () => {
    reveal = !reveal;
    load();
  });

  load();
  poll(load, () => call !== null && call.status === "in_progress");
})();
