"use strict";

// Helpers shared by the list page and the call page. All text goes in through textContent,
// never innerHTML, so nothing a caller says can turn into markup.
const CallLog = (() => {
  const END_REASONS = {
    caller_hangup: "Caller hung up",
    assistant_ended: "Assistant ended the call",
    transferred: "Transferred",
    error: "Error",
    upstream_failure: "AI service failed",
    shutdown: "Server shut down",
    interrupted: "Cut short (server restart)",
    timeout: "Timed out",
    operator_ended: "Ended by an operator",
    voicemail: "Left a voicemail",
    machine: "Answering machine: hung up",
    busy: "Busy",
    no_answer: "No answer",
    failed: "Could not be placed",
    canceled: "Canceled",
  };
  const PROBLEM_REASONS = new Set(["error", "upstream_failure", "interrupted", "timeout", "shutdown", "failed"]);
  const ANSWERED_BY = { human: "person", machine: "machine", fax: "fax", unknown: "unknown" };
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

  async function getJSON(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401) {
      // The session ended: reloading shows the sign-in form.
      window.location.reload();
      throw new Error("signed out");
    }
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try {
        message = (await response.json()).error || message;
      } catch (_) {
        // not JSON: keep the status line
      }
      throw new Error(message);
    }
    return response.json();
  }

  function formatWhen(iso) {
    return new Date(iso).toLocaleString(undefined, {
      weekday: "short", day: "numeric", month: "short", year: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
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
    return formatDuration(call.duration_s);
  }

  function formatCost(usd) {
    if (usd === null || usd === undefined) return "—";
    if (usd === 0) return "$0.00";
    return usd < 0.01 ? `$${usd.toFixed(4)}` : `$${usd.toFixed(3)}`;
  }

  function formatMs(ms) {
    if (ms === null || ms === undefined) return "—";
    return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
  }

  function clock(offsetSeconds) {
    const tenths = Math.max(Math.round(offsetSeconds * 10), 0);
    const minutes = Math.floor(tenths / 600);
    const rest = tenths % 600;
    return `${String(minutes).padStart(2, "0")}:${String(Math.floor(rest / 10)).padStart(2, "0")}.${rest % 10}`;
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

  // Poll `tick` every 2 s while `wanted()` holds and the tab is visible; simple and self-healing.
  function poll(tick, wanted) {
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

  return { END_REASONS, el, getJSON, formatWhen, formatDuration, liveDuration, formatCost, formatMs, clock, reasonBadge, directionBadge, poll };
})();
