// meterseal console: live alerts over SSE, charts with uPlot. No inline scripts anywhere (CSP: script-src 'self').
"use strict";
(function () {
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"];

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);   // textContent: whatever an alert says stays text
    if (cls) td.className = cls;
    row.appendChild(td);
  }

  function utc(value) {  // "YYYY-MM-DD HH:MM:SS" in UTC, as the server's templates show times
    const d = new Date(value);
    return isNaN(d.getTime()) ? String(value == null ? "" : value) : d.toISOString().replace("T", " ").slice(0, 19);
  }

  function alertRow(a) {
    const tr = document.createElement("tr");
    tr.className = "sev-" + String(a.severity).replace(/[^a-z]/g, "");
    cell(tr, utc(a.detected_at_ms));
    cell(tr, a.severity); cell(tr, a.kind); cell(tr, a.region);
    cell(tr, String(a.meter_tok || "").slice(0, 12), "tok");
    cell(tr, utc(a.ts)); cell(tr, a.reason);
    return tr;
  }

  function filterQuery() {
    const form = document.getElementById("alert-filter");
    if (!form) return "";
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) params.set(k, v);
    return params.toString();
  }

  function liveAlerts(tbody) {
    let source = null;
    const state = document.getElementById("feed-state");
    function connect(reload) {
      if (source) source.close();
      const q = filterQuery();
      if (reload) {
        fetch("/api/alerts" + (q ? "?" + q : ""), {credentials: "same-origin"}).then(r => r.json()).then(data => {
          tbody.replaceChildren(...data.alerts.slice(-100).reverse().map(alertRow));
        });
      }
      source = new EventSource(tbody.dataset.sse + (q ? "?" + q : ""));
      source.addEventListener("ready", () => { if (state) state.textContent = "feed: live"; tbody.dataset.live = "1"; });
      source.addEventListener("alert", ev => {
        tbody.prepend(alertRow(JSON.parse(ev.data)));
        while (tbody.children.length > 200) tbody.lastElementChild.remove();
      });
      source.addEventListener("logged-out", () => { source.close(); window.location.href = "/login"; });
      source.onerror = () => { if (state) state.textContent = "feed: reconnecting…"; };
    }
    const form = document.getElementById("alert-filter");
    if (form) form.addEventListener("change", () => connect(true));
    connect(false);
  }

  function draw(container, x, series, title) {
    container.replaceChildren();
    const width = Math.max(320, container.clientWidth || 800);
    const opts = {
      title: title, width: width, height: 280,
      scales: {x: {time: true}},
      series: [{}].concat(series.map((s, i) => ({label: s.label, stroke: COLORS[i % COLORS.length], width: 2,
                                                 dash: s.dash}))),
      axes: [{}, {label: "kWh"}],
    };
    new uPlot(opts, [x].concat(series.map(s => s.values)), container);
    container.dataset.rendered = "1";
  }

  function regionChart(container) {
    const range = document.getElementById("u-range");
    const refresh = document.getElementById("u-refresh");
    const note = document.getElementById("usage-note");
    let timer = null;
    function load() {
      fetch(container.dataset.source + "?range=" + encodeURIComponent(range.value), {credentials: "same-origin"})
        .then(r => r.json()).then(d => {
          const series = Object.entries(d.series).map(([name, values]) => ({label: name, values: values}));
          draw(container, d.x, series, "kWh per " + (d.step_s === 3600 ? "hour" : "day") + ", " + d.start + " to " + d.end);
          if (note) note.textContent = d.readings + " readings · updated " + new Date().toLocaleTimeString();
        });
    }
    function schedule() {
      if (timer) clearInterval(timer);
      const s = parseInt(refresh.value, 10);
      if (s > 0) timer = setInterval(load, s * 1000);
    }
    range.addEventListener("change", load);
    refresh.addEventListener("change", schedule);
    load(); schedule();
  }

  function meterChart(container) {
    const meter = document.getElementById("c-meter");
    const period = document.getElementById("c-period");
    const total = document.getElementById("usage-total");
    function load() {
      const url = "/api/meters/" + encodeURIComponent(meter.value) + "/usage?period=" + encodeURIComponent(period.value);
      fetch(url, {credentials: "same-origin"}).then(r => r.json()).then(d => {
        draw(container, d.x, [{label: "this " + d.period, values: d.current},
                              {label: "previous " + d.period, values: d.previous, dash: [6, 4]}],
             d.start + " to " + d.end);
        if (total) total.textContent = d.total + " kWh (previous " + d.period + ": " + d.previous_total + " kWh)";
      });
    }
    meter.addEventListener("change", load);
    period.addEventListener("change", load);
    load();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const tbody = document.getElementById("alert-rows");
    if (tbody && tbody.dataset.sse) liveAlerts(tbody);
    const rc = document.getElementById("region-chart");
    if (rc) regionChart(rc);
    const mc = document.getElementById("meter-chart");
    if (mc) meterChart(mc);
    const proof = document.getElementById("proof-form");
    if (proof) proof.addEventListener("submit", ev => {
      ev.preventDefault();
      const id = document.getElementById("record-id").value.trim();
      if (id) window.location.href = "/api/ledger/proof/" + encodeURIComponent(id) + "?download=1";
    });
    if (document.body.classList.contains("kiosk")) setTimeout(() => window.location.reload(), 300000);
  });
})();
