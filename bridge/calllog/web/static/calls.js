"use strict";

(() => {
  const {
    el, getJSON, formatWhen, liveDuration, formatCost, reasonBadge, dispositionBadge, directionBadge, party, plural, marked, poll,
    END_REASONS,
  } = CallLog;
  const form = document.getElementById("filters");
  const table = document.getElementById("calls");
  const status = document.getElementById("status");
  const empty = document.getElementById("empty");
  const more = document.getElementById("more");
  // The filters are the form's fields marked data-filter; their names are /api/calls's parameters.
  const fields = [...form.querySelectorAll("[data-filter]")];
  const FOUND_IN = {
    caller: "what the caller said",
    assistant: "what the assistant said",
    summary: "the summary",
    call_sid: "the call SID",
    call_id: "the call id",
    stream_sid: "the stream SID",
    from_number: "the caller's number",
    to_number: "the number called",
  };

  const select = form.elements.end_reason;
  for (const [value, label] of Object.entries(END_REASONS)) select.append(el("option", { value, text: label }));

  let nextCursor = null;
  let pagesShown = 1;
  // What the list shows: the filters last searched for, not whatever is half-typed in the form.
  let applied = new URLSearchParams();

  // The address bar holds the API's own filter values (times in UTC), so a search can be bookmarked
  // or sent to a colleague; the date inputs show them in the viewer's local time.
  function toLocalInput(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function filtersFromForm() {
    const params = new URLSearchParams();
    for (const field of fields) {
      let value = field.value.trim();
      if (!value) continue;
      if ("time" in field.dataset) value = new Date(value).toISOString();
      params.set(field.name, value);
    }
    return params;
  }

  function formFromAddress() {
    const params = new URLSearchParams(window.location.search);
    applied = new URLSearchParams();
    for (const field of fields) {
      const value = params.get(field.name) || "";
      if (value) applied.set(field.name, value);
      field.value = "time" in field.dataset ? (value ? toLocalInput(value) : "") : value;
    }
  }

  // The one line that says what the call was about: the search hit, else the summary's gist, else
  // what the caller said first.
  function gist(call, searched) {
    const parts = [];
    const match = call.match;
    if (match) {
      const where = FOUND_IN[match.field] || match.field;
      const lines = match.lines > 1 ? ` (${plural(match.lines, "line")})` : "";
      const snippet = el("span", { class: "snippet" }, "“", ...marked(match.text, searched), "”");
      parts.push(el("span", { class: "match" }, el("span", { class: "found" }, `Found in ${where}${lines}: `), snippet));
    }
    const about = el("span", { class: "about" });
    const badge = dispositionBadge(call.disposition);
    if (badge) about.append(badge, " ");
    if (call.intent) about.append(el("strong", { class: "intent", text: call.intent }));
    if (call.summary) about.append(call.intent ? " — " : "", el("span", { class: "summary-text", text: call.summary }));
    if (!call.intent && !call.summary) {
      if (call.end_reason === "stream_never_connected") {
        about.append(el("span", { class: "muted", text: "The webhook was answered, but the call's audio never reached the bridge." }));
      } else if (call.first_words) {
        about.append(el("span", { class: "muted", text: "Caller: " }), el("span", { class: "first-words", text: call.first_words.text }));
      } else {
        about.append(el("span", { class: "muted", text: call.status === "in_progress" ? "Nothing said yet." : "No words were recorded." }));
      }
    }
    if (!match || call.intent || call.summary) parts.push(about);
    const notes = [];
    if (call.barge_in_count) notes.push(plural(call.barge_in_count, "barge-in"));
    if (call.error_count) notes.push(plural(call.error_count, "error"));
    if (call.direction && call.direction !== "inbound" && call.direction !== "browser" && !call.outbound_status) notes.push(call.direction);
    if (call.upstream_api === "live") notes.push("Live API");
    if (notes.length) parts.push(el("span", { class: call.error_count ? "notes problem-text" : "notes", text: notes.join(" · ") }));
    return parts;
  }

  function callRows(call, query) {
    const searched = query.get("q") || "";
    const href = `/calls/${encodeURIComponent(call.call_id)}${searched ? `?q=${encodeURIComponent(searched)}` : ""}`;
    const direction = directionBadge(call);
    const tbody = el(
      "tbody",
      { class: call.status === "in_progress" ? "call clickable live-row" : "call clickable", dataset: { href, callId: call.call_id } },
      el(
        "tr",
        { class: "main" },
        el("td", { "data-label": "Started" }, el("a", { href, text: formatWhen(call.started_at) })),
        el("td", { class: "number", "data-label": "Caller", text: party(call, "from") }),
        el("td", { class: "number", "data-label": "Called", text: party(call, "to") }),
        el("td", { "data-label": "Duration", text: liveDuration(call) }),
        el("td", { "data-label": "How it ended" }, reasonBadge(call), direction && " ", direction),
        el("td", { class: "num", "data-label": "Cost (est.)", text: formatCost(call.cost_usd) }),
      ),
      el("tr", { class: "gist" }, el("td", { colspan: "6" }, el("div", { class: "gist-line" }, ...gist(call, searched)))),
    );
    tbody.addEventListener("click", (event) => {
      if (event.target.closest("a")) return;
      window.location.href = href;
    });
    return tbody;
  }

  function updateExportLinks(params) {
    const suffix = params.toString() ? `?${params}` : "";
    document.getElementById("export-csv").href = `/api/calls/export.csv${suffix}`;
    document.getElementById("export-jsonl").href = `/api/calls/export.jsonl${suffix}`;
  }

  let generation = 0;

  async function load({ append = false } = {}) {
    const mine = ++generation; // a slow answer to an older request must not overwrite a newer one
    const params = applied;
    const query = new URLSearchParams(params);
    query.set("limit", "50");
    if (append && nextCursor) query.set("cursor", nextCursor);
    let data;
    try {
      data = await getJSON(`/api/calls?${query}`);
    } catch (err) {
      if (mine !== generation) return;
      status.textContent = `Could not load calls: ${err.message}`;
      status.classList.add("problem-text");
      return;
    }
    if (mine !== generation) return;
    status.classList.remove("problem-text");
    if (!append) for (const old of table.querySelectorAll("tbody.call")) old.remove();
    for (const call of data.calls) table.append(callRows(call, params));
    nextCursor = data.next_cursor;
    more.hidden = !nextCursor;
    const shown = table.querySelectorAll("tbody.call").length;
    empty.hidden = shown > 0;
    const filtered = [...params.keys()].length > 0;
    const count = `${shown}${nextCursor ? "+" : ""} call${shown === 1 && !nextCursor ? "" : "s"}`;
    const verb = shown === 1 && !nextCursor ? "matches" : "match";
    status.textContent = shown ? `${count}${filtered ? ` ${verb}` : ""}, newest first` : "";
    updateExportLinks(params);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    applied = filtersFromForm();
    history.replaceState(null, "", applied.toString() ? `?${applied}` : window.location.pathname);
    pagesShown = 1;
    load();
  });
  document.getElementById("clear").addEventListener("click", () => {
    form.reset();
    applied = new URLSearchParams();
    history.replaceState(null, "", window.location.pathname);
    pagesShown = 1;
    load();
  });
  more.addEventListener("click", () => {
    pagesShown += 1;
    load({ append: true });
  });

  formFromAddress();
  load();
  // Keep the first page fresh (new calls, live ones ending); older pages stay put once opened.
  poll(() => load(), () => pagesShown === 1);
})();
