"use strict";

// The comparison block of the list page: the searched-for calls' figures per voice API
// (GET /api/calls/compare with the list's own filters, which calls.js keeps in the address bar).
(() => {
  const { el, getJSON, formatCost, formatMs, poll } = CallLog;
  const section = document.getElementById("compare");
  const tbody = section.querySelector("tbody");
  const NAMES = { realtime: "Realtime API", live: "Live API" };  // "Live" alone is a call in progress
  const FILTERS = ["q", "number", "since", "until", "end_reason", "upstream_api"];

  function figure(value, format) {
    return value === null || value === undefined ? "—" : format(value);
  }

  async function load() {
    const address = new URLSearchParams(window.location.search);
    const query = new URLSearchParams();
    for (const name of FILTERS) if (address.get(name)) query.set(name, address.get(name));
    let data;
    try {
      data = await getJSON(`/api/calls/compare?${query}`);
    } catch (err) {
      section.hidden = true;
      return;
    }
    tbody.replaceChildren(
      ...data.apis.map((api) =>
        el(
          "tr",
          { dataset: { api: api.upstream_api } },
          el("th", { scope: "row", text: NAMES[api.upstream_api] || api.upstream_api }),
          el("td", { class: "num", text: String(api.calls) }),
          el("td", { class: "num", text: api.minutes.toFixed(1) }),
          el("td", { class: "num", text: figure(api.turn_latency_p50_ms, formatMs) }),
          el("td", { class: "num", text: figure(api.barge_ins_per_call, (v) => v.toFixed(2)) }),
          el("td", { class: "num", text: figure(api.heard_after_stop_p95_ms, formatMs) }),
          el("td", { class: "num", text: figure(api.cost_per_minute_usd, formatCost) }),
        ),
      ),
    );
    section.hidden = data.apis.length === 0;
  }

  // calls.js updates the address when a search is made or cleared; follow it once it has.
  document.getElementById("filters").addEventListener("submit", () => setTimeout(load));
  document.getElementById("clear").addEventListener("click", () => setTimeout(load));
  load();
  poll(load, () => true);
})();
