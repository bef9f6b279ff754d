"use strict";

// Helpers shared by the list, the call page and the live board. All text goes in through
// textContent, never innerHTML, so nothing a caller says can turn into markup.
const CallLog = (() => {
  const END_REASONS = {
    caller_hangup: "Caller hung up",
    assistant_ended: "Assistant ended the call",
    operator_ended: "An operator hung up",
    transferred: "Transferred",
    error: "Error",
    upstream_failure: "AI service failed",
    shutdown: "Server shut down",
    interrupted: "Cut short (server restart)",
    timeout: "Timed out",
    stream_never_connected: "Never connected",
    voicemail: "Left a voicemail",
    machine: "Answering machine: hung up",
    busy: "Busy",
    no_answer: "No answer",
    failed: "Could not be placed",
    canceled: "Canceled",
  };
  const PROBLEM_REASONS = new Set([
    "error", "upstream_failure", "interrupted", "timeout", "shutdown", "stream_never_connected", "failed",
  ]);
  const ANSWERED_BY = { human: "person", machine: "machine", fax: "fax", unknown: "unknown" };
  const DISPOSITIONS = {
    resolved: "Resolved",
    follow_up_needed: "Follow-up needed",
    transferred: "Transferred",
    escalated: "Escalated",
    unresolved: "Unresolved",
    spam: "Spam",
  };
  const POLL_MS = 2000;

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  async function answerOf(response) {
    if (response.status === 401) {
      // The session ended: reloading shows the sign-in form.
      window.location.reload();
      throw new Error("signed out");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      // not JSON: the status line says what there is to say
    }
    if (!response.ok) throw new Error((body && body.error) || `HTTP ${response.status}`);
    return body;
  }

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    return answerOf(response);
  }

  async function postJSON(url, body = {}) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    return answerOf(response);
  }

  // Every time carries its time zone: a support team spans several, and a call log outlives its reader's.
  function formatWhen(iso, { withDay = true } = {}) {
    const options = { hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" };
    if (withDay) Object.assign(options, { weekday: "short", day: "numeric", month: "short", year: "numeric" });
    return new Date(iso).toLocaleString(undefined, options);
  }

  function formatDuration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const total = Math.round(seconds);
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = String(total % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  }

  function liveDuration(call) {
    if (call.status === "in_progress") {
      return formatDuration((Date.now() - Date.parse(call.started_at)) / 1000);
    }
    if (call.end_reason === "stream_never_connected") return "—";
    return formatDuration(call.duration_s);
  }

  // One form for every cost: dollars and three decimals (a tenth of a cent), so a column lines up.
  function formatCost(usd) {
    if (usd === null || usd === undefined) return "—";
    if (usd > 0 && usd < 0.0005) return "< $0.001";
    return `$${usd.toFixed(3)}`;
  }

  function formatMs(ms) {
    if (ms === null || ms === undefined) return "—";
    return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
  }

  // How long someone spoke: "4.3 s".
  function formatSpoken(ms) {
    return ms === null || ms === undefined ? "" : `${(ms / 1000).toFixed(1)} s`;
  }

  function plural(count, one, many = `${one}s`) {
    return `${count} ${count === 1 ? one : many}`;
  }

  function clock(offsetSeconds) {
    const tenths = Math.max(Math.round(offsetSeconds * 10), 0);
    const minutes = Math.floor(tenths / 600);
    const rest = tenths % 600;
    return `${String(minutes).padStart(2, "0")}:${String(Math.floor(rest / 10)).padStart(2, "0")}.${rest % 10}`;
  }

  // Who was on either end, never an empty string: a browser call has no phone number.
  function party(call, which) {
    const number = which === "from" ? call.from_number : call.to_number;
    if (call.carrier === "browser") return which === "from" ? "Softphone (browser)" : "The assistant";
    return number || "Unknown number";
  }

  function callTitle(call) {
    if (call.carrier === "browser") return "Softphone call";
    if (call.direction === "outbound") return call.to_number ? `Call to ${call.to_number}` : "Outbound call";
    return call.from_number ? `Call from ${call.from_number}` : "Call from an unknown number";
  }

  function reasonBadge(call) {
    if (call.status === "in_progress") {
      return el("span", { class: "badge live", title: "This call is happening now" }, el("span", { class: "dot" }), "Live");
    }
    const reason = call.end_reason || "";
    const cls = PROBLEM_REASONS.has(reason) ? "badge problem" : reason === "transferred" ? "badge info" : "badge";
    return el("span", { class: cls, title: reason }, END_REASONS[reason] || reason || "Ended");
  }

  // A call we placed: "Outbound", and who answered once the carrier said. Nothing for other calls.
  function directionBadge(call) {
    if (!call.outbound_status) return null;
    const answered = ANSWERED_BY[call.answered_by];
    const text = answered ? `Outbound · ${answered}` : "Outbound";
    return el("span", { class: "badge info", title: `Placed by the bridge: ${call.outbound_status}`, dataset: { direction: "outbound" } }, text);
  }

  function dispositionBadge(disposition) {
    if (!disposition) return null;
    const cls = disposition === "resolved" ? "badge ok" : disposition === "spam" ? "badge" : "badge attention";
    return el("span", { class: `${cls} disposition`, title: `Disposition: ${disposition}` }, DISPOSITIONS[disposition] || disposition.replaceAll("_", " "));
  }

  // `text` with each occurrence of `searched` marked, ignoring case (built from text nodes, never HTML).
  function marked(text, searched) {
    if (!searched) return [text];
    const parts = [];
    const lower = text.toLowerCase();
    const needle = searched.toLowerCase();
    let from = 0;
    for (let at = lower.indexOf(needle); at !== -1; at = lower.indexOf(needle, from)) {
      parts.push(text.slice(from, at), el("mark", { text: text.slice(at, at + needle.length) }));
      from = at + needle.length;
    }
    parts.push(text.slice(from));
    return parts;
  }

  // What an operator did, in words: "said “Please hold.”", "hung up the call".
  function operatorAction(data) {
    const quote = (text) => `“${text}”`;
    const what = {
      say: () => `had the assistant say ${quote(data.text || "")}`,
      inject: () => {
        const parts = [data.text ? `added the note ${quote(data.text)}` : "added a note", data.image ? " with an image" : ""];
        if (data.respond) parts.push(", for the assistant to answer");
        return parts.join("");
      },
      hangup: () => "hung up the call",
      transfer: () => `transferred the call to ${data.number || "another number"}`,
    }[data.action];
    const described = what ? what() : data.action;
    if (data.outcome === "done") return described;
    const tried = { say: "tried to have the assistant say", inject: "tried to add", hangup: "tried to hang up", transfer: "tried to transfer the call" }[data.action] || `tried: ${data.action}`;
    return `${tried}${data.action === "say" || data.action === "inject" ? ` ${quote(data.text || "")}` : ""} — ${data.outcome}${data.error ? `: ${data.error}` : ""}`;
  }

  // The latest line said in a call, as one line of text: who, and what (or how long) they said.
  function lineText(line) {
    if (!line) return "";
    const d = line.data || {};
    if (line.kind === "caller_transcript") return `Caller: ${d.text || ""}`;
    if (line.kind === "assistant_transcript") return `Assistant: ${d.text || ""}${d.interrupted ? " (cut off)" : ""}`;
    if (line.kind === "caller_spoke") return `Caller spoke${d.spoken_ms ? ` (${formatSpoken(d.spoken_ms)})` : ""}`;
    return "";
  }

  // The top bar marks the page it is on.
  for (const link of document.querySelectorAll(".topnav a")) {
    if (link.pathname === window.location.pathname) link.setAttribute("aria-current", "page");
  }

  // Poll `tick` every 2 s while `wanted()` holds and the tab is visible; simple and self-healing.
  function poll(tick, wanted = () => true) {
    let timer = null;
    const schedule = () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        if (wanted() && !document.hidden) {
          try {
            await tick();
          } catch (err) {
            console.warn("refresh failed", err);
          }
        }
        schedule();
      }, POLL_MS);
    };
    schedule();
  }

  return {
    END_REASONS, DISPOSITIONS, el, getJSON, postJSON, formatWhen, formatDuration, liveDuration, formatCost,
    formatMs, formatSpoken, plural, clock, marked, party, callTitle, reasonBadge, dispositionBadge, directionBadge,
    operatorAction, lineText, poll,
  };
})();
