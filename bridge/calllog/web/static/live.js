"use strict";

// The live board: every call in progress, whichever replica carries it (the API reads the shared
// call log), refreshed every two seconds; a call's card stays put while it changes, so a hang-up
// button being confirmed is not swept away by the refresh.
(() => {
  const {
    el, getJSON, postJSON, formatWhen, liveDuration, formatMs, party, plural, reasonBadge, lineText, poll,
  } = CallLog;
  const board = document.getElementById("board");
  const status = document.getElementById("status");
  const quiet = document.getElementById("quiet");
  const problem = document.getElementById("problem");
  const cards = new Map(); // call id -> its card
  const CONFIRM_MS = 4000;

  function field(label, valueNode) {
    return el("div", { class: "field" }, el("span", { class: "label", text: label }), valueNode);
  }

  function newCard(call) {
    const href = `/calls/${encodeURIComponent(call.call_id)}`;
    const hangup = el("button", { type: "button", class: "hangup", "data-role": "hangup", text: "Hang up" });
    hangup.addEventListener("click", () => hangUp(card, hangup));
    const card = el(
      "article",
      { class: "live-card card", dataset: { callId: call.call_id } },
      el(
        "header",
        {},
        el("a", { class: "who", href, "data-role": "who" }),
        el("span", { "data-role": "badge" }),
        el("span", { class: "duration", "data-role": "duration" }),
      ),
      el("p", { class: "where muted", "data-role": "where" }),
      el("p", { class: "last-line", "data-role": "last-line" }),
      el(
        "div",
        { class: "figures" },
        field("Barge-ins", el("span", { "data-role": "barge-ins" })),
        field("Response time", el("span", { "data-role": "latency" })),
        field("Errors", el("span", { "data-role": "errors" })),
        field("Started", el("span", { "data-role": "started" })),
      ),
      el("div", { class: "card-actions" }, hangup, el("span", { class: "action-status", "data-role": "action-status", role: "status" })),
    );
    return card;
  }

  function part(card, role) {
    return card.querySelector(`[data-role="${role}"]`);
  }

  function fill(card, call) {
    card._call = call;
    const live = call.status === "in_progress";
    card.classList.toggle("ended", !live);
    part(card, "who").textContent = party(call, "from");
    part(card, "where").textContent = `to ${party(call, "to")} · on ${call.owner_id || "an unknown replica"}`;
    part(card, "badge").replaceChildren(reasonBadge(call));
    part(card, "duration").textContent = liveDuration(call);
    const line = lineText(call.last_line);
    part(card, "last-line").textContent = line || (live ? "Nothing said yet." : "Nothing was said.");
    part(card, "last-line").classList.toggle("muted", !line);
    part(card, "barge-ins").textContent = String(call.barge_in_count || 0);
    part(card, "latency").textContent =
      call.turn_latency_p50_ms === null ? "—" : `${formatMs(call.turn_latency_p50_ms)} (slowest ${formatMs(call.turn_latency_max_ms)})`;
    part(card, "errors").textContent = String(call.error_count || 0);
    part(card, "errors").classList.toggle("problem-text", call.error_count > 0);
    part(card, "started").textContent = formatWhen(call.started_at, { withDay: false });
    part(card, "hangup").hidden = !live;
  }

  async function hangUp(card, button) {
    const call = card._call;
    const said = part(card, "action-status");
    if (button.dataset.confirming !== "yes") {
      // One click arms it: a hang-up is not to be done by a slip of the mouse.
      button.dataset.confirming = "yes";
      button.textContent = "Really hang up?";
      button.classList.add("danger");
      setTimeout(() => disarm(button), CONFIRM_MS);
      return;
    }
    disarm(button);
    button.disabled = true;
    said.textContent = "Hanging up…";
    try {
      await postJSON(`/api/calls/${encodeURIComponent(call.call_id)}/hangup`);
      said.textContent = "Hung up.";
      await refresh();
    } catch (err) {
      said.textContent = `Could not hang up: ${err.message}`;
      said.classList.add("problem-text");
      button.disabled = false;
    }
  }

  function disarm(button) {
    delete button.dataset.confirming;
    button.textContent = "Hang up";
    button.classList.remove("danger");
  }

  async function refresh() {
    let data;
    try {
      data = await getJSON("/api/calls/live");
    } catch (err) {
      problem.textContent = `Could not load the calls in progress: ${err.message}`;
      problem.hidden = false;
      return;
    }
    problem.hidden = true;
    const seen = new Set();
    for (const call of data.calls) {
      seen.add(call.call_id);
      let card = cards.get(call.call_id);
      if (!card) {
        card = newCard(call);
        cards.set(call.call_id, card);
      }
      fill(card, call);
    }
    for (const [id, card] of cards) {
      if (!seen.has(id)) {
        card.remove();
        cards.delete(id);
      }
    }
    // Live calls first, newest first; then the ones that just ended.
    const order = data.calls
      .slice()
      .sort((a, b) => (a.status === b.status ? 0 : a.status === "in_progress" ? -1 : 1))
      .map((call) => cards.get(call.call_id));
    board.replaceChildren(...order);
    const live = data.calls.filter((call) => call.status === "in_progress").length;
    const ended = data.calls.length - live;
    status.textContent = `${plural(live, "call")} in progress${ended ? ` · ${ended} just ended` : ""}`;
    quiet.hidden = live > 0 || ended > 0;
  }

  // The durations tick between refreshes.
  setInterval(() => {
    for (const card of cards.values()) part(card, "duration").textContent = liveDuration(card._call);
  }, 1000);

  refresh();
  poll(refresh);
})();
