// mondemand dashboard: live tables over server-sent events, daily-against-week charts with uPlot.
// Every name shown comes from the wire, so text is only ever set with textContent.
"use strict";

(function () {
  const MAX_ERRORS = 100;
  const HISTORY_REFRESH_MS = 60000;
  const view = {
    prog: null,          // selected prog_id
    metric: null,        // {prog_id, name, host, kind, context} whose history is shown
    series: [],          // rows of the selected program
    stream: null,
    lastError: 0,
    clockOffset: 0,      // server time minus browser time, seconds
    charts: [],
    historyTimer: null,
  };
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function fmtNumber(v) {
    if (v === null || v === undefined) return "–";
    const abs = Math.abs(v);
    if (Number.isInteger(v) && abs < 1e15) return v.toLocaleString("en-US");
    if (abs >= 1000) return v.toLocaleString("en-US", { maximumFractionDigits: 1 });
    if (abs >= 1) return v.toLocaleString("en-US", { maximumFractionDigits: 3 });
    return v.toPrecision(3);
  }

  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 1) return "just now";
    if (seconds < 90) return `${Math.round(seconds)} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} d ago`;
  }

  function fmtClock(epoch) {
    return new Date(epoch * 1000).toLocaleTimeString("en-GB", { hour12: false });
  }

  function fmtTimeOfDay(seconds) {
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60);
    return `${String(h).padStart(2, "0")}:${String(m).padStart(2, "0")}`;
  }

  function contextText(pairs, withStat) {
    return pairs.filter(([k]) => withStat || k !== "stat").map(([k, v]) => `${k}=${v}`).join(", ");
  }

  function sameMetric(a, b) {
    if (!a || !b) return false;
    return a.prog_id === b.prog_id && a.name === b.name && a.host === b.host && a.kind === b.kind &&
      JSON.stringify(a.context) === JSON.stringify(b.context);
  }

  function metricOf(row) {
    return { prog_id: row.prog_id, name: row.name, host: row.host, kind: row.kind, context: row.context };
  }

  // ---- location hash: #prog=P ------------------------------------------------------------

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    return params.get("prog");
  }

  function writeHash() {
    const params = new URLSearchParams();
    if (view.prog !== null) params.set("prog", view.prog);
    history.replaceState(null, "", "#" + params.toString());
  }

  // ---- processes ------------------------------------------------------------------------------

  // Rows are kept per key and updated in place, so a row under the pointer is never replaced.
  function keyedRows(body, keys, make) {
    const existing = new Map([...body.rows].map((tr) => [tr.dataset.key, tr]));
    keys.forEach((key, i) => {
      let tr = existing.get(key);
      if (tr === undefined) {
        tr = make(key);
        tr.dataset.key = key;
      }
      existing.delete(key);
      if (body.rows[i] !== tr) body.insertBefore(tr, body.rows[i] || null);
    });
    for (const tr of existing.values()) tr.remove();
    return [...body.rows];
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function renderOverview(overview) {
    view.clockOffset = overview.now - Date.now() / 1000;
    setText($("title"), overview.title + " dashboard");
    setText($("clock"), fmtClock(overview.now));
    const body = $("processes").tBodies[0];
    const rows = keyedRows(body, overview.processes.map((p) => p.prog_id), (prog) => {
      const tr = el("tr", { "data-prog": prog },
        el("td", {}, el("span", { class: "dot" }), el("span", { class: "name" }, prog)),
        el("td", {}, el("ul", { class: "hosts" })),
        el("td", { class: "age" }));
      tr.addEventListener("click", () => selectProgram(prog));
      return tr;
    });
    overview.processes.forEach((prog, i) => {
      const tr = rows[i];
      tr.dataset.status = prog.status;
      tr.classList.toggle("selected", prog.prog_id === view.prog);
      tr.querySelector(".dot").className = `dot ${prog.status}`;
      setText(tr.querySelector(".age"), fmtAge(overview.now - prog.last_seen));
      const hosts = tr.querySelector(".hosts");
      const wanted = prog.hosts.map((h) => `${h.host}\u0000${h.status}`).join("\u0001");
      if (hosts.dataset.shown !== wanted) {
        hosts.dataset.shown = wanted;
        hosts.replaceChildren(...prog.hosts.map((h) => el("li", { "data-host": h.host, "data-status": h.status },
          el("span", { class: `dot ${h.status}`, title: h.status }), h.host,
          h.status === "stopped" ? el("span", { class: "stopped-text" }, " stopped reporting") : null)));
      }
    });
    $("no-processes").hidden = overview.processes.length > 0;
    const stored = $("stored-programs");
    const storedKey = JSON.stringify(overview.stored_programs);
    if (stored.dataset.shown !== storedKey) {
      stored.dataset.shown = storedKey;
      stored.replaceChildren();
      for (const name of overview.stored_programs) {
        const item = el("li", { "data-prog": name }, el("span", { class: "dot stored" }), name);
        item.addEventListener("click", () => selectProgram(name));
        stored.append(item);
      }
    }
    $("stored-panel").hidden = overview.stored_programs.length === 0;
    if (view.prog === null && overview.processes.length > 0) selectProgram(overview.processes[0].prog_id);
  }

  // ---- series of one program ---------------------------------------------------------------------

  function renderSeries(rows, now) {
    view.series = rows;
    setText($("program-title"), view.prog === null ? "Select a process" : view.prog);
    const table = $("series");
    table.hidden = view.prog === null;
    const byId = new Map(rows.map((r) => [r.id, r]));
    const trs = keyedRows(table.tBodies[0], rows.map((r) => r.id), (id) => {
      const row = byId.get(id);
      const isAgg = row.namespace === "agg";
      const tr = el("tr", {
          "data-id": row.id, "data-name": row.name, "data-host": row.host, "data-type": row.type,
          class: isAgg ? "agg" : "" },
        el("td", {}, row.name),
        el("td", {}, row.type),
        el("td", {}, isAgg ? el("span", { class: "badge agg" }, "agg") : null, isAgg ? " " : null, row.host),
        el("td", {}, contextText(row.context, true)),
        el("td", { class: "num value" }),
        el("td", { class: "num average" }),
        el("td", { class: "age" }));
      tr.addEventListener("click", () => selectMetric(metricOf(byId.get(id) || row)));
      return tr;
    });
    rows.forEach((row, i) => {
      const tr = trs[i];
      const average = row.kind === "counter" ? (row.rate === null ? "–" : fmtNumber(row.rate) + "/s")
                                             : fmtNumber(row.average);
      tr.dataset.status = row.status;
      tr.classList.toggle("selected", sameMetric(metricOf(row), view.metric));
      setText(tr.querySelector(".value"), fmtNumber(row.value));
      setText(tr.querySelector(".average"), average);
      const age = tr.querySelector(".age");
      age.className = row.status === "stopped" ? "age stopped-text" : "age";
      setText(age, row.status === "stored" ? "stored only" : fmtAge(row.age));
    });
  }

  async function loadSeries() {
    if (view.prog === null) return;
    const resp = await fetch(`api/series?prog_id=${encodeURIComponent(view.prog)}`);
    if (resp.ok) {
      const data = await resp.json();
      if (data.prog_id === view.prog) renderSeries(data.series, data.now);
    }
  }

  function selectProgram(prog) {
    if (prog === view.prog) return;
    view.prog = prog;
    view.metric = null;
    $("history").hidden = true;
    destroyCharts();
    writeHash();
    for (const tr of $("processes").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.prog === prog);
    loadSeries();
    openStream();
  }

  // ---- daily-against-week history -----------------------------------------------------------------

  function destroyCharts() {
    for (const chart of view.charts) chart.destroy();
    view.charts = [];
    $("charts").replaceChildren();
    if (view.historyTimer !== null) clearInterval(view.historyTimer);
    view.historyTimer = null;
  }

  function selectMetric(metric) {
    view.metric = metric;
    for (const tr of $("series").tBodies[0].rows) {
      const row = view.series.find((r) => r.id === tr.dataset.id);
      tr.classList.toggle("selected", !!row && sameMetric(metricOf(row), metric));
    }
    destroyCharts();
    loadHistory();
    view.historyTimer = setInterval(loadHistory, HISTORY_REFRESH_MS);
  }

  function siblingHosts(metric) {
    // The same metric (name, kind, context without stat) on every host, aggregates first.
    const plain = contextText(metric.context, false);
    const seen = new Map();
    for (const row of view.series) {
      if (row.name !== metric.name || contextText(row.context, false) !== plain) continue;
      const m = metricOf(row);
      const id = JSON.stringify([m.host, m.kind, m.context]);
      if (!seen.has(id)) seen.set(id, { metric: m, agg: row.namespace === "agg" });
    }
    return [...seen.values()].sort((a, b) => (b.agg - a.agg) || a.metric.host.localeCompare(b.metric.host));
  }

  function renderHostChips(metric) {
    const chips = $("history-hosts");
    chips.replaceChildren();
    for (const { metric: m, agg } of siblingHosts(metric)) {
      const label = agg ? `agg ${m.host} (${contextText(m.context.filter(([k]) => k === "stat"), true)})` : m.host;
      const button = el("button", { type: "button", class: sameMetric(m, metric) ? "selected" : "" }, label);
      button.addEventListener("click", () => selectMetric(m));
      chips.append(button);
    }
  }

  async function loadHistory() {
    const metric = view.metric;
    if (metric === null) return;
    const params = new URLSearchParams({ prog_id: metric.prog_id, name: metric.name, host: metric.host,
                                         kind: metric.kind });
    for (const [k, v] of metric.context) params.append("ctx", `${k}=${v}`);
    const section = $("history");
    section.hidden = false;
    $("history-title").textContent = `${metric.name} on ${metric.host}` +
      (metric.context.length ? ` [${contextText(metric.context, true)}]` : "");
    renderHostChips(metric);
    let data;
    try {
      const resp = await fetch(`api/history?${params}`);
      data = await resp.json();
      if (!resp.ok) throw new Error(data.error || resp.statusText);
    } catch (err) {
      $("history-note").textContent = `No history: ${err.message}`;
      return;
    }
    if (!sameMetric(metric, view.metric)) return;
    $("history-note").textContent =
      `Today (${data.today.date}, solid) against the same weekday last week (${data.week.date}, dashed), ` +
      `time of day in ${data.timezone}` + (data.rate ? "; counters as a rate per second." : ".") +
      (data.missing.length ? ` Not stored: ${data.missing.join(", ")}.` : "");
    renderCharts(data);
  }

  function renderCharts(data) {
    for (const chart of view.charts) chart.destroy();
    view.charts = [];
    const box = $("charts");
    box.replaceChildren();
    for (const c of data.charts) {
      const holder = el("div", { class: "chart", "data-stat": c.stat });
      holder.append(el("h4", {}, c.stat + (data.rate && c.cf ? " (/s)" : "")));
      box.append(holder);
      if (c.error) {
        holder.append(el("p", { class: "error" }, c.error));
        continue;
      }
      holder.setAttribute("data-today-points", String(c.today_points));
      holder.setAttribute("data-week-points", String(c.week_points));
      const opts = {
        width: Math.max(240, holder.clientWidth - 12), height: 200,
        scales: { x: { time: false, range: [0, data.x.length * data.step] } },
        series: [
          { label: "time", value: (u, v) => (v === null ? "–" : fmtTimeOfDay(v)) },
          { label: `today ${data.today.date}`, stroke: "#2563eb", width: 1.5, spanGaps: false,
            points: { show: c.today_points < 60, size: 5 }, value: (u, v) => fmtNumber(v) },
          { label: `week ago ${data.week.date}`, stroke: "#9ca3af", width: 1.2, dash: [6, 4], spanGaps: false,
            points: { show: c.week_points < 60, size: 4 }, value: (u, v) => fmtNumber(v) },
        ],
        axes: [
          { values: (u, ticks) => ticks.map(fmtTimeOfDay), space: 40,
            incrs: [900, 1800, 3600, 7200, 10800, 21600, 43200] },
          { values: (u, ticks) => ticks.map(fmtNumber), size: 60 },
        ],
        legend: { live: true },
      };
      view.charts.push(new uPlot(opts, [data.x, c.today, c.week], holder));
    }
    if (data.charts.length === 0) box.append(el("p", { class: "empty" }, "No stored history for this metric."));
  }

  // ---- errors and warnings ------------------------------------------------------------------------

  function addError(line, fresh) {
    const list = $("errors");
    const when = new Date(line.time * 1000).toLocaleString("en-GB", { hour12: false });
    const item = el("li", { class: `level-${line.level}${fresh ? " fresh" : ""}`, "data-seq": String(line.seq) },
      el("span", { class: "priority" }, line.priority),
      el("span", { class: "message" }, line.message),
      line.repeat > 1 ? el("span", { class: "badge" }, ` ×${line.repeat}`) : null,
      el("span", { class: "meta" }, `${when} · ${line.prog_id} @ ${line.host} · ${line.file}:${line.line}`));
    list.prepend(item);
    while (list.children.length > MAX_ERRORS) list.lastElementChild.remove();
    view.lastError = Math.max(view.lastError, line.seq);
    $("no-errors").hidden = true;
    $("error-count").textContent = `(${list.children.length})`;
  }

  // ---- the event stream -----------------------------------------------------------------------------

  function openStream() {
    if (view.stream !== null) view.stream.close();
    const params = new URLSearchParams({ after: String(view.lastError) });
    if (view.prog !== null) params.set("prog_id", view.prog);
    const stream = new EventSource(`api/stream?${params}`);
    view.stream = stream;
    const status = $("connection");
    stream.addEventListener("open", () => { status.textContent = "live"; status.dataset.state = "open"; });
    stream.addEventListener("error", () => { status.textContent = "reconnecting…"; status.dataset.state = "error"; });
    stream.addEventListener("live", (ev) => {
      const data = JSON.parse(ev.data);
      renderOverview(data.overview);
      if (data.prog_id !== undefined && data.prog_id === view.prog) renderSeries(data.series, data.overview.now);
    });
    stream.addEventListener("log", (ev) => {
      const line = JSON.parse(ev.data);
      if (line.seq > view.lastError) addError(line, view.lastError > 0);
    });
  }

  setInterval(() => {
    $("clock").textContent = fmtClock(Date.now() / 1000 + view.clockOffset);
  }, 1000);

  window.addEventListener("resize", () => { if (view.metric !== null) loadHistory(); });

  const initial = readHash();
  if (initial !== null) {
    view.prog = initial;
    $("program-title").textContent = initial;
    loadSeries();
  }
  openStream();
  window.mondemandDashboard = view;  // for the browser tests and for poking around in the console
})();
