"use strict";

(() => {
  const {
    el, getJSON, formatWhen, liveDuration, formatCost, formatMs, formatSpoken, clock, party, callTitle,
    reasonBadge, directionBadge, dispositionBadge, operatorAction, poll, END_REASONS,
  } = CallLog;
  const callId = decodeURIComponent(window.location.pathname.split("/").pop());
  const highlight = new URLSearchParams(window.location.search).get("q") || "";
  const status = document.getElementById("status");
  const sections = document.getElementById("sections");
  const timeline = document.getElementById("timeline");
  const revealButton = document.getElementById("reveal");
  const WORDLESS = {
    off: "not transcribed",
    failed: "the transcription failed",
    empty: "no words could be made out",
  };
  let reveal = false;
  let call = null;

  document.getElementById("transcript-link").href = `/api/calls/${encodeURIComponent(callId)}/transcript`;
  if (highlight) document.getElementById("back").href = `/calls?q=${encodeURIComponent(highlight)}`;

  function set(id, text) {
    document.getElementById(id).textContent = text;
  }

  // The words searched for, marked wherever they were found.
  const marked = (text) => CallLog.marked(text, highlight);

  function renderOverview() {
    const title = callTitle(call);
    set("title", title);
    document.title = `${title} · Call log`;
    const direction = directionBadge(call);
    document.getElementById("badge").replaceChildren(reasonBadge(call), ...(direction ? [" ", direction] : []));
    document.getElementById("disposition").replaceChildren(dispositionBadge(call.disposition) || "");

    // The gist first: what the caller wanted and what happened, before any figure.
    const intent = document.getElementById("intent");
    intent.parentElement.hidden = !call.intent;
    let summary = call.summary || "";
    if (!summary) {
      if (call.end_reason === "stream_never_connected") {
        summary = "The carrier asked for this call and the bridge answered, but the call's audio never reached it: "
          + "no media stream connected (a firewall or proxy in the way, a wrong public URL, a refused stream token).";
      } else if (call.status === "in_progress") {
        summary = "The summary is written once the call has ended.";
      } else if (Date.now() - Date.parse(call.ended_at) < 60000) {
        summary = "The summary is on its way.";
      } else {
        summary = "No summary for this call.";
      }
    }
    const summaryNode = document.getElementById("summary");
    summaryNode.replaceChildren(...(call.summary ? marked(summary) : [summary]));
    summaryNode.classList.toggle("muted", !call.summary);
    intent.replaceChildren(...marked(call.intent || ""));

    set("from", party(call, "from"));
    set("to", party(call, "to"));
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
    revealButton.hidden = call.carrier === "browser";

    const n = (v) => Number(v || 0).toLocaleString();
    const facts = [
      ["Call id", call.call_id],
      ["Carrier call id", call.call_sid || "—"],
      ["Stream id", call.stream_sid || "—"],
      ["Carrier · direction", `${call.carrier} · ${call.direction}`],
      ["Handled by", call.owner_id || "—"],
      ["Input tokens", `${n(call.input_text_tokens)} text, ${n(call.input_audio_tokens)} audio (${n(call.input_cached_tokens)} cached)`],
      ["Output tokens", `${n(call.output_text_tokens)} text, ${n(call.output_audio_tokens)} audio`],
      ["Errors", String(call.error_count)],
      ["Ended", call.ended_at ? formatWhen(call.ended_at) : "—"],
    ];
    if (call.outbound_status) {
      const asked = call.outbound_request || {};
      const answered = call.answered_by ? `answered by ${call.answered_by}${call.message_end ? ` (greeting ended: ${call.message_end})` : ""}` : "not answered yet";
      facts.push(["Placed call", `${call.outbound_status} · ${answered} · machine detection ${asked.machine_detection || "off"}`]);
    }
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

  // What the assistant said, and, when the caller cut it off, the rest it would have said: greyed,
  // marked as never heard.
  function assistantWords(d) {
    const heard = String(d.text || "");
    const full = typeof d.full_text === "string" ? d.full_text : "";
    const words = heard ? marked(heard) : [el("span", { class: "muted", text: "(cut off before a word was heard)" })];
    if (d.interrupted && full.length > heard.length && full.startsWith(heard)) {
      const rest = full.slice(heard.length);
      words.push(
        el("span", { class: "unheard", title: "Never heard: the caller cut in" }, rest),
        el("span", { class: "unheard-label", text: " not heard" }),
      );
    }
    return words;
  }

  function operatorNote(e) {
    const d = e.data || {};
    const failed = d.outcome !== "done";
    return el(
      "div",
      { class: `note operator${failed ? " problem" : ""}`, dataset: { kind: e.kind, outcome: d.outcome || "" } },
      el("time", { text: at(e) }),
      el("span", { class: "operator-tag", text: "Operator" }),
      el("strong", { class: "operator-name", text: d.operator || "unknown" }),
      el("span", { class: "operator-did", text: operatorAction(d) }),
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
        case "caller_spoke": {
          const spoke = d.spoken_ms ? `Caller spoke (${formatSpoken(d.spoken_ms)})` : "Caller spoke";
          const why = WORDLESS[d.words] ? ` — ${WORDLESS[d.words]}` : "";
          const node = bubble("caller", "Caller", e, [el("span", { class: "wordless", text: `${spoke}${why}` })]);
          node.classList.add("wordless-turn");
          nodes.push(node);
          break;
        }
        case "assistant_transcript": {
          const barge = bargeByItem.get(d.item_id);
          const extra = [];
          if (pendingLatency !== null) {
            extra.unshift(el("p", { class: "meta", text: `replied after ${formatMs(pendingLatency)}` }));
            pendingLatency = null;
          }
          if (barge) extra.push(cutMarker(barge));
          else if (d.interrupted) extra.push(el("p", { class: "cut-marker", text: "✂ Cut off by the caller" }));
          const node = bubble("assistant", "Assistant", e, assistantWords(d), extra);
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
        case "operator_action":
          nodes.push(operatorNote(e));
          break;
        case "note":
          nodes.push(
            note(
              e,
              "added",
              el("span", { class: "added-tag", text: d.source === "before_response" ? "Added by the before-response hook" : "Added to the conversation" }),
              el("span", { text: String(d.text || "") }),
            ),
          );
          break;
        case "session_restored":
          nodes.push(note(e, "quiet", `The AI session was replaced; the conversation so far (${d.items} lines) went on in the new one`));
          break;
        case "call_progress":
          nodes.push(note(e, d.status === "failed" ? "problem" : "quiet", progressText(d)));
          break;
        case "answering":
          nodes.push(note(e, "quiet", answeringText(d)));
          break;
        default:
          nodes.push(note(e, "quiet", `${e.kind}: ${json(d)}`));
      }
      // The recording's player (recording.js) plays each line from its time when it is clicked.
      if (nodes.length > before && typeof CallRecording !== "undefined") CallRecording.line(nodes[nodes.length - 1], e);
    }
    if (call.status === "in_progress") nodes.push(el("p", { class: "live-tail" }, el("span", { class: "dot" }), " Call in progress — updating live"));
    else if (call.ended_at) {
      const label = END_REASONS[call.end_reason] || call.end_reason || "Ended";
      nodes.push(note({ at: call.ended_at, kind: "end" }, "end", `Call ended — ${label}`));
    }
    if (!events.length && call.status !== "in_progress") nodes.unshift(el("p", { class: "muted", text: "Nothing was said on this call." }));
    timeline.replaceChildren(...nodes);
  }

  // A placed call's progress as the carrier reported it.
  function progressText(d) {
    if (d.answered_by) return `Carrier: answered by ${d.answered_by}${d.message_end ? `, greeting ended (${d.message_end})` : ""}`;
    const status = d.status || d.carrier_status || "";
    return `Carrier: ${status.replace("_", " ")}${d.error ? ` — ${d.error}` : ""}`;
  }

  // What the call did once it knew (or stopped waiting to know) who answered.
  function answeringText(d) {
    const action = {
      converse: "the assistant speaks",
      leave_message: "the assistant leaves its message",
      await_message_end: "waiting for the machine's beep",
      hang_up: "hung up on the machine",
    }[d.action];
    if (!action) return `Answered by ${d.answered_by || "?"}`;
    return d.assumed ? `No answer type in time: ${action}, as to a person` : `Answered by ${d.answered_by}: ${action}`;
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
    sections.hidden = false;
    renderOverview();
    renderTimeline();
    document.dispatchEvent(new CustomEvent("calllog:call", { detail: call }));
    // Follow a live call like a chat, unless the reader has scrolled up to read.
    if (call.status === "in_progress" && nearBottom) window.scrollTo(0, document.body.scrollHeight);
  }

  revealButton.addEventListener("click", () => {
    reveal = !reveal;
    load();
  });

  // A live call, and a call that ended a moment ago (its summary is on its way), stay fresh.
  const fresh = () =>
    call !== null &&
    (call.status === "in_progress" || (!call.summary && Date.now() - Date.parse(call.ended_at) < 60000));
  load();
  poll(load, fresh);
})();
