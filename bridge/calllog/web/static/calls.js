"use strict";

(() => {
  const { el, getJSON, formatWhen, liveDuration, formatCost, reasonBadge, directionBadge, poll, END_REASONS } = CallLog;
  const form = document.getElementById("filters");
  const tbody = document.querySelector("#calls tbody");
  const status = document.getElementById("status");
  const empty = document.getElementById("empty");
  const more = document.getElementById("more");
  const FILTERS = ["q", "number", "since", "until", "end_reason"];

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
    for (const name of FILTERS) {
      let value = form.elements[name].value.trim();
      if (!value) continue;
      if (name === "since" || name === "until") value = new Date(value).toISOString();
      params.set(name, value);
    }
    return params;
  }

  function formFromAddress() {
    const params = new URLSearchParams(window.location.search);
    applied = new URLSearchParams();
    for (const name of FILTERS) if (params.get(name)) applied.set(name, params.get(name));
    for (const name of FILTERS) {
      const value = params.get(name) || "";
      form.elements[name].value = name === "since" || name === "until" ? (value ? toLocalInput(value) : "") : value;
    }
  }

  function row(call, query) {
    const href = `/calls/${encodeURIComponent(call.call_id)}${query.get("q") ? `?q=${encodeURIComponent(query.get("q"))}` : ""}`;
    const notes = [];
    if (call.barge_in_count) notes.push(`${call.barge_in_count} barge-in${call.barge_in_count > 1 ? "s" : ""}`);
    if (call.error_count) notes.push(`${call.error_count} error${call.error_count > 1 ? "s" : ""}`);
    if (call.direction && call.direction !== "inbound" && !call.outbound_status) notes.push(call.direction);
    const direction = directionBadge(call);
    const tr = el(
      "tr",
      { class: call.status === "in_progress" ? "clickable live-row" : "clickable", dataset: { href } },
      el("td", {}, el("a", { href, text: formatWhen(call.started_at) })),
      el("td", { class: "number", text: call.from_number }),
      el("td", { class: "number", text: call.to_number }),
      el("td", { text: liveDuration(call) }),
      el("td", {}, reasonBadge(call), direction && " ", direction),
      el("td", { class: "num", text: formatCost(call.cost_usd) }),
      el("td", { class: call.error_count ? "notes problem-text" : "notes", text: notes.join(" · ") }),
    );
    tr.addEventListener("click", (event) => {
      if (event.target.closest("a")) return;
      window.location.href = href;
    });
    return tr;
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
    if (!append) tbody.replaceChildren();
    for (const call of data.calls) tbody.append(row(call, params));
    nextCursor = data.next_cursor;
    more.hidden = !nextCursor;
    const shown = tbody.children.length;
    empty.hidden = shown > 0;
    const filtered = [...params.keys()].length > 0;
    status.textContent = shown
      ? `${shown}${nextCursor ? "+" : ""} call${shown === 1 ? "" : "s"}${filtered ? " match" : ""}, newest first`
      : "";
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
