// mondemand dashboard: live tables over server-sent events, daily-against-week charts with uPlot.
// Every name shown comes from the wire, so text is only ever set with textContent.
"use strict";

(function () {
  const MAX_ERRORS = 100;
  const HISTORY_REFRESH_MS = 60000;
  const ALERTS_REFRESH_MS = 2000;
  const view = {
    prog: null,          // selected prog_id
    metric: null,        // {prog_id, name, host, kind, context} whose history is shown
    series: [],          // rows of the selected program
    stream: null,
    lastError: 0,
    clockOffset: 0,      // server time minus browser time, seconds
    charts: [],
    historyTimer: null,
    range: "day",        // day, week or month
    filter: "",          // the series filter box
  };
  // A statset's sub-statistics and its NAME.bot10 / NAME.top10 gauges are shown as one row per metric.
  const STAT_ORDER = ["count", "sum", "min", "max", "avg", "bot10", "top10", "median", "pctl_75", "pctl_90",
                      "pctl_95", "pctl_98", "pctl_99"];
  const TAIL_SUFFIXES = { ".bot10": "bot10", ".top10": "top10" };
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

  function fmtBytes(v) {
    if (v === null || v === undefined) return "–";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 120) return `${Math.round(seconds)} s`;
    if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
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
    renderHealth(overview.processes);
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

  function renderHealth(processes) {
    // One row per process and host: up/down from the last report, and the client's process statistics.
    const entries = [];
    for (const prog of processes) {
      for (const h of prog.hosts) if (h.host !== "all") entries.push([prog.prog_id, h]);
    }
    const body = $("health").tBodies[0];
    const rows = keyedRows(body, entries.map(([p, h]) => `${p}\u0000${h.host}`), () => el("tr", {},
      el("td", { class: "prog" }), el("td", { class: "host" }), el("td", { class: "state" }),
      el("td", { class: "num uptime" }), el("td", { class: "num memory" }), el("td", { class: "num cpu" }),
      el("td", { class: "num errors" }), el("td", { class: "num warnings" })));
    entries.forEach(([prog, h], i) => {
      const tr = rows[i];
      const p = h.process || {};
      tr.dataset.prog = prog;
      tr.dataset.host = h.host;
      tr.dataset.status = h.status;
      setText(tr.querySelector(".prog"), prog);
      setText(tr.querySelector(".host"), h.host);
      setText(tr.querySelector(".state"), h.status === "live" ? "up" : `down (${fmtAge(h.age)})`);
      setText(tr.querySelector(".uptime"), fmtDuration(p.uptime_s));
      setText(tr.querySelector(".memory"), fmtBytes(p.rss_bytes));
      setText(tr.querySelector(".cpu"), p.cpu_pct === undefined || p.cpu_pct === null ? "–" : `${p.cpu_pct} %`);
      setText(tr.querySelector(".errors"), fmtNumber(p.errors_per_min));
      setText(tr.querySelector(".warnings"), fmtNumber(p.warnings_per_min));
    });
  }

  // ---- series of one program ---------------------------------------------------------------------

  function groupSeries(rows) {
    // Rows of one metric (name, host, context, kind) become one group; the tail gauges join their statset.
    const groups = new Map();
    const keyOf = (name, row, kind) => JSON.stringify([name, row.host, row.context, kind]);
    for (const row of rows) {
      if (row.kind !== "statset") continue;
      const key = keyOf(row.name, row, "statset");
      let g = groups.get(key);
      if (!g) {
        g = { id: "g" + key, prog_id: row.prog_id, name: row.name, host: row.host, context: row.context, kind: "statset",
              namespace: row.namespace, stats: {}, rows: [], status: row.status, age: row.age };
        groups.set(key, g);
      }
      g.stats[row.type] = row;
      g.rows.push(row);
      if (row.age < g.age) { g.age = row.age; g.status = row.status; }
    }
    const out = [];
    for (const row of rows) {
      if (row.kind === "statset") continue;
      const suffix = Object.keys(TAIL_SUFFIXES).find((s) => row.name.endsWith(s));
      if (suffix && row.kind === "gauge") {
        const g = groups.get(keyOf(row.name.slice(0, -suffix.length), row, "statset"));
        if (g) { g.stats[TAIL_SUFFIXES[suffix]] = row; g.rows.push(row); continue; }
      }
      out.push({ id: "g" + keyOf(row.name, row, row.kind), prog_id: row.prog_id, name: row.name, host: row.host, context: row.context,
                 kind: row.kind, namespace: row.namespace, stats: { [row.type]: row }, rows: [row],
                 status: row.status, age: row.age, single: row });
    }
    const all = [...groups.values(), ...out];
    const order = (g) => [g.name, contextText(g.context, false), g.namespace === "agg" ? 0 : 1, g.host];
    all.sort((a, b) => {
      const x = order(a), y = order(b);
      for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i] < y[i] ? -1 : 1;
      return 0;
    });
    return all;
  }

  function groupMatches(g) {
    const q = view.filter.trim().toLowerCase();
    if (!q) return true;
    return [g.name, g.host, g.kind, contextText(g.context, true)].join(" ").toLowerCase().includes(q);
  }

  function renderSeries(rows, now) {
    view.series = rows;
    setText($("program-title"), view.prog === null ? "Select a process" : view.prog);
    const table = $("series");
    table.hidden = view.prog === null;
    $("series-filter").hidden = view.prog === null;
    const groups = groupSeries(rows);
    view.groups = groups;
    const byId = new Map(groups.map((g) => [g.id, g]));
    const trs = keyedRows(table.tBodies[0], groups.map((g) => g.id), (id) => {
      const g = byId.get(id);
      const isAgg = g.namespace === "agg";
      const tr = el("tr", {
          "data-id": g.id, "data-name": g.name, "data-host": g.host, "data-type": g.kind,
          class: isAgg ? "agg" : "" },
        el("td", {}, g.name),
        el("td", {}, g.kind),
        el("td", {}, isAgg ? el("span", { class: "badge agg" }, "agg") : null, isAgg ? " " : null, g.host),
        el("td", {}, contextText(g.context, true)),
        el("td", { class: "num value" }),
        el("td", { class: "num average" }),
        el("td", { class: "age" }));
      tr.addEventListener("click", () => selectMetric(metricOf(byId.get(id) || g)));
      return tr;
    });
    groups.forEach((g, i) => {
      const tr = trs[i];
      tr.dataset.status = g.status;
      tr.hidden = !groupMatches(g);
      tr.classList.toggle("selected", sameMetric(metricOf(g), view.metric));
      const value = tr.querySelector(".value");
      if (g.single) {
        const row = g.single;
        setText(value, fmtNumber(row.value));
        setText(tr.querySelector(".average"), row.kind === "counter"
          ? (row.rate === null ? "–" : fmtNumber(row.rate) + "/s") : fmtNumber(row.average));
      } else {
        const present = STAT_ORDER.filter((s) => g.stats[s] !== undefined);
        tr.dataset.stats = present.join(",");
        const text = present.map((s) => `${s} ${fmtNumber(g.stats[s].value)}`).join(" · ");
        if (value.dataset.shown !== text) {
          value.dataset.shown = text;
          value.replaceChildren(...present.map((s, j) => el("span", { class: "stat", "data-stat": s },
            (j ? " · " : "") + `${s} ${fmtNumber(g.stats[s].value)}`)));
        }
        const avg = g.stats.avg ? g.stats.avg.value
          : (g.stats.sum && g.stats.count && g.stats.count.value ? g.stats.sum.value / g.stats.count.value : null);
        setText(tr.querySelector(".average"), fmtNumber(avg));
      }
      const age = tr.querySelector(".age");
      age.className = g.status === "stopped" ? "age stopped-text" : "age";
      setText(age, g.status === "stored" ? "stored only" : fmtAge(g.age));
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
      const g = (view.groups || []).find((r) => r.id === tr.dataset.id);
      tr.classList.toggle("selected", !!g && sameMetric(metricOf(g), metric));
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
                                         kind: metric.kind, range: view.range });
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
    const periods = { day: ["Today", "the same weekday last week"], week: ["The last 7 days", "the 7 before"],
                      month: ["The last 30 days", "the 30 before"] }[data.range || "day"];
    $("history-note").textContent =
      `${periods[0]} (from ${data.today.date}, solid) against ${periods[1]} (from ${data.week.date}, dashed), ` +
      `time in ${data.timezone}` + (data.rate ? "; counters as a rate per second." : ".") +
      (data.missing.length ? ` Not stored: ${data.missing.join(", ")}.` : "");
    renderCharts(data);
  }

  function renderCharts(data) {
    // Day: time of day; week and month: the day (d1 = the first day of the range) and, for a week, the hour.
    const fmtX = data.range === "month" ? (v) => `d${Math.floor(v / 86400) + 1}`
      : data.range === "week" ? (v) => `d${Math.floor(v / 86400) + 1} ${fmtTimeOfDay(v % 86400)}` : fmtTimeOfDay;
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
          { label: "time", value: (u, v) => (v === null ? "–" : fmtX(v)) },
          { label: `today ${data.today.date}`, stroke: "#2563eb", width: 1.5, spanGaps: false,
            points: { show: c.today_points < 60, size: 5 }, value: (u, v) => fmtNumber(v) },
          { label: `week ago ${data.week.date}`, stroke: "#9ca3af", width: 1.2, dash: [6, 4], spanGaps: false,
            points: { show: c.week_points < 60, size: 4 }, value: (u, v) => fmtNumber(v) },
        ],
        axes: [
          { values: (u, ticks) => ticks.map(fmtX), space: 40,
            incrs: data.range === "month" ? [86400, 172800, 432000, 604800]
              : data.range === "week" ? [21600, 43200, 86400] : [900, 1800, 3600, 7200, 10800, 21600, 43200] },
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

  // ---- alerts: rules, firing series, history; silences and acknowledgements --------------------------

  function describeLabels(labels) {
    const ctx = Object.entries(labels.context || {}).map(([k, v]) => `${k}=${v}`).join(", ");
    return `${labels.prog_id}${labels.metric ? " " + labels.metric : ""} on ${labels.host}` + (ctx ? ` (${ctx})` : "");
  }

  async function postAlert(action, body) {
    const resp = await fetch(`api/alerts/${action}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const data = await resp.json();
    $("alerts-note").textContent = resp.ok ? "" : `Refused: ${data.error}`;
    loadAlerts();
  }

  function button(label, onClick, cls) {
    const b = el("button", { type: "button", class: cls || "" }, label);
    b.addEventListener("click", (ev) => { ev.stopPropagation(); onClick(); });
    return b;
  }

  function renderAlerts(doc) {
    $("alerts-panel").hidden = false;
    $("alerts-firing").textContent = `(${doc.firing} firing)`;
    const now = doc.time;
    const firing = [];
    for (const [name, rule] of Object.entries(doc.rules)) {
      for (const s of rule.series) if (s.state === "firing") firing.push([name, s]);
    }
    const list = $("alerts-firing-list");
    list.replaceChildren(...firing.map(([name, s]) => {
      const muted = s.silenced_until ? ` · silenced until ${fmtClock(s.silenced_until)}` : "";
      return el("li", { "data-rule": name, "data-key": s.key, "data-acked": String(!!s.acked),
                        "data-silenced": String(!!s.silenced_until) },
        el("span", { class: "priority" }, name), " ",
        el("span", { class: "message" }, describeLabels(s.labels)),
        el("span", { class: "meta" }, ` since ${s.since}` + (s.value === null ? "" : ` · value ${fmtNumber(s.value)}`) +
          (s.acked ? " · acknowledged" : "") + muted),
        doc.writable ? el("span", { class: "actions" },
          s.acked ? null : button("ack", () => postAlert("ack", { rule: name, series: s.key }), "ack"),
          s.silenced_until ? button("unsilence", () => postAlert("silence", { rule: name, series: s.key, seconds: 0 }),
                                    "unsilence")
            : button("silence 1 h", () => postAlert("silence", { rule: name, series: s.key, seconds: 3600 }),
                     "silence")) : null);
    }));
    $("alerts-none").hidden = firing.length > 0;
    const silencedRules = new Map((doc.silences.silences || []).filter((x) => x.series === null && x.until > now)
      .map((x) => [x.rule, x.until]));
    const body = $("alert-rules").tBodies[0];
    body.replaceChildren(...Object.entries(doc.rules).map(([name, rule]) => {
      const until = silencedRules.get(name);
      return el("tr", { "data-rule": name, "data-silenced": String(!!until) },
        el("td", {}, name), el("td", {}, rule.kind), el("td", {}, rule.selector),
        el("td", { class: "num" }, String(rule.series.length)), el("td", { class: "num" }, String(rule.firing)),
        el("td", {}, until ? `until ${fmtClock(until)} ` : "",
          !doc.writable ? null : until
            ? button("unsilence", () => postAlert("silence", { rule: name, series: null, seconds: 0 }), "unsilence")
            : button("silence 1 h", () => postAlert("silence", { rule: name, series: null, seconds: 3600 }),
                     "silence")));
    }));
    $("alerts-history").replaceChildren(...(doc.history || []).slice(0, 30).map((h) =>
      el("li", { "data-state": h.state, "data-muted": String(!!h.muted) },
        el("span", { class: "priority" }, h.repeat ? "reminder" : h.state), " ",
        el("span", { class: "message" }, `${h.alert}: ${h.summary}`),
        el("span", { class: "meta" }, ` ${h.time_iso}` + (h.muted ? " · not sent (silenced or acknowledged)" : "")))));
  }

  async function loadAlerts() {
    try {
      const resp = await fetch("api/alerts");
      if (resp.status === 404) return;  // no alert view configured
      const doc = await resp.json();
      if (!resp.ok) { $("alerts-panel").hidden = false; $("alerts-note").textContent = doc.error; return; }
      renderAlerts(doc);
    } catch (err) {
      $("alerts-note").textContent = `Alerts unavailable: ${err.message}`;
    }
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
    // The server sends what changed since its last frame (docs/dashboard.md, "The event stream"):
    // rows to add or replace, keys that went, the order when it changed; `full` starts the tables afresh.
    const tables = { processes: { rows: new Map(), order: [] }, series: { rows: new Map(), order: [] } };
    const apply = (table, delta, key) => {
      if (delta.full) table.rows = new Map();
      for (const row of delta.upsert) table.rows.set(String(row[key]), row);
      for (const gone of delta.remove) table.rows.delete(gone);
      if (delta.order !== null) table.order = delta.order;
      return table.order.map((k) => table.rows.get(k)).filter((row) => row !== undefined);
    };
    stream.addEventListener("live", (ev) => {
      const data = JSON.parse(ev.data);
      const now = data.now;
      const processes = apply(tables.processes, data.processes, "prog_id");
      for (const prog of processes) for (const h of prog.hosts) h.age = Math.max(0, now - h.last_seen);
      renderOverview({ ...data.overview, processes });
      if (data.prog_id !== undefined) {
        const rows = apply(tables.series, data.series, "id");
        for (const row of rows) row.age = row.received === null ? null : Math.max(0, now - row.received);
        if (data.prog_id === view.prog) renderSeries(rows, now);
      }
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

  $("series-filter").addEventListener("input", (ev) => {
    view.filter = ev.target.value;
    for (const tr of $("series").tBodies[0].rows) {
      const g = (view.groups || []).find((r) => r.id === tr.dataset.id);
      tr.hidden = !!g && !groupMatches(g);
    }
  });

  for (const button of $("history-ranges").querySelectorAll("button")) {
    button.addEventListener("click", () => {
      view.range = button.dataset.range;
      for (const b of $("history-ranges").querySelectorAll("button")) b.classList.toggle("selected", b === button);
      if (view.metric !== null) { destroyCharts(); loadHistory();
        view.historyTimer = setInterval(loadHistory, HISTORY_REFRESH_MS); }
    });
  }

  const initial = readHash();
  if (initial !== null) {
    view.prog = initial;
    $("program-title").textContent = initial;
    loadSeries();
  }
  openStream();
  loadAlerts();
  setInterval(loadAlerts, ALERTS_REFRESH_MS);
  window.mondemandDashboard = view;  // for the browser tests and for poking around in the console
})();
