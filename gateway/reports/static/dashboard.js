// slm-gateway savings dashboard: fetches ./report (the same JSON as GET /admin/report) and draws
// small SVG charts. No libraries, no network beyond this gateway. Every drawn mark carries its number
// in data-value, so what the page shows can be checked against the JSON report.
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var KEY_STORE = "slmgw-admin-key";
  var ROUTE_COLORS = { slm: "#3ecf8e", llm: "#4f8cff", cache: "#f5a524", none: "#f0506e" };
  var $ = function (id) { return document.getElementById(id); };
  var tip = document.createElement("div");
  tip.className = "tip hidden";
  document.body.appendChild(tip);

  // ---- the admin key: #key=... (never sent to the server) or ?key=..., then sessionStorage ----
  function takeKeyFromUrl() {
    var hash = new URLSearchParams(location.hash.replace(/^#/, ""));
    var query = new URLSearchParams(location.search);
    var key = hash.get("key") || query.get("key");
    if (key) {
      sessionStorage.setItem(KEY_STORE, key);
      query.delete("key");
      var qs = query.toString();
      history.replaceState(null, "", location.pathname + (qs ? "?" + qs : ""));
    }
  }
  function adminKey() { return sessionStorage.getItem(KEY_STORE); }

  // ---- formatting ----
  function money(v) {
    if (v === null || v === undefined) return "–";
    if (v === 0) return "$0";
    var a = Math.abs(v);
    var digits = a >= 100 ? 0 : a >= 1 ? 2 : a >= 0.01 ? 4 : 6;
    return (v < 0 ? "-$" : "$") + a.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  function num(v) { return v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US", { maximumFractionDigits: 1 }); }
  function pct(v) { return v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US", { maximumFractionDigits: 2 }) + "%"; }
  function ms(v) { return v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US", { maximumFractionDigits: 1 }) + " ms"; }

  // ---- tiny SVG helpers ----
  function el(name, attrs, parent) {
    var node = document.createElementNS(SVGNS, name);
    for (var k in attrs) if (attrs[k] !== undefined && attrs[k] !== null) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }
  function text(parent, x, y, s, attrs) {
    var t = el("text", Object.assign({ x: x, y: y }, attrs || {}), parent);
    t.textContent = s;
    return t;
  }
  function svg(container, w, h) {
    container.textContent = "";
    return el("svg", { viewBox: "0 0 " + w + " " + h, role: "img", preserveAspectRatio: "xMidYMid meet" }, container);
  }
  function hover(node, label) {
    node.addEventListener("mousemove", function (e) {
      tip.textContent = label; tip.classList.remove("hidden");
      tip.style.left = e.clientX + 12 + "px"; tip.style.top = e.clientY + 12 + "px";
    });
    node.addEventListener("mouseleave", function () { tip.classList.add("hidden"); });
    el("title", {}, node).textContent = label;
  }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v))), m = v / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }
  function empty(root, w, h, msg) { text(root, w / 2, h / 2, msg || "No data in this period", { "text-anchor": "middle", class: "empty" }); }
  function legend(container, items) {
    var box = document.createElement("div");
    box.className = "legend";
    items.forEach(function (it) {
      var span = document.createElement("span"), i = document.createElement("i");
      i.style.background = it[1]; span.appendChild(i); span.appendChild(document.createTextNode(it[0]));
      box.appendChild(span);
    });
    container.appendChild(box);
  }
  function yAxis(root, x0, x1, y0, y1, max, fmt) {
    var g = el("g", { class: "grid" }, root);
    for (var i = 0; i <= 4; i++) {
      var v = (max * i) / 4, y = y0 - ((y0 - y1) * i) / 4;
      el("line", { x1: x0, x2: x1, y1: y, y2: y }, g);
      text(g, x0 - 6, y + 4, fmt(v), { "text-anchor": "end" });
    }
  }

  // ---- charts ----
  function savingsChart(container, report) {
    var days = report.groups, shadow = report.shadow;
    var W = 900, H = 260, L = 70, R = 12, T = 12, B = 34;
    var root = svg(container, W, H);
    if (!days.length) { empty(root, W, H); return; }
    var series = [["baseline_cost_usd", "#5b6b8c", "baseline (estimate)"], ["cost_usd", "#4f8cff", "actual cost"],
                  ["savings_usd", "#3ecf8e", "savings"]];
    if (shadow) series.push(["shadow_savings_usd", "#a678f5", "would-be savings (shadow)"]);
    var max = 0;
    days.forEach(function (d) { series.forEach(function (s) { max = Math.max(max, d[s[0]]); }); });
    max = niceMax(max);
    yAxis(root, L, W - R, H - B, T, max, money);
    var slot = (W - L - R) / days.length, bw = Math.min(22, (slot * 0.8) / series.length);
    days.forEach(function (d, i) {
      var x0 = L + i * slot + (slot - bw * series.length) / 2;
      series.forEach(function (s, j) {
        var v = d[s[0]], h = Math.max(0, ((H - B - T) * v) / max);
        var r = el("rect", { x: x0 + j * bw, y: H - B - h, width: Math.max(1, bw - 2), height: h, rx: 2, fill: s[1],
                             "data-day": d.key, "data-series": s[0], "data-value": v }, root);
        hover(r, d.key + " · " + s[2] + ": " + money(v));
      });
      if (days.length <= 16 || i % Math.ceil(days.length / 16) === 0)
        text(root, L + i * slot + slot / 2, H - B + 16, d.key.slice(5), { "text-anchor": "middle" });
    });
    legend(container, series.map(function (s) { return [s[2], s[1]]; }));
  }

  function qualityChart(container, report) {
    var W = 900, H = 240, L = 70, R = 12, T = 12, B = 34;
    var root = svg(container, W, H);
    var audit = report.audit || {}, byDay = audit.by_day || {};
    var days = Object.keys(byDay).sort();
    if (!days.length) { empty(root, W, H, "No audits in this period (policy audit.sample_rate)"); return; }
    var domains = Object.keys(audit.by_domain || {}).sort();
    var colors = ["#4f8cff", "#3ecf8e", "#f5a623", "#a678f5", "#ef5b5b", "#5bc0de"];
    yAxis(root, L, W - R, H - B, T, 100, function (v) { return v + "%"; });
    var slot = (W - L - R) / days.length;
    var y = function (p) { return H - B - (H - B - T) * p; };
    domains.forEach(function (dom, j) {
      var color = colors[j % colors.length], pts = [];
      days.forEach(function (day, i) {
        var a = byDay[day][dom];
        if (!a || a.non_inferior_rate === null) return;
        var x = L + i * slot + slot / 2 + (j - (domains.length - 1) / 2) * 5;
        el("line", { x1: x, x2: x, y1: y(a.ci_low), y2: y(a.ci_high), stroke: color, "stroke-width": 2, opacity: 0.45 }, root);
        var c = el("circle", { cx: x, cy: y(a.non_inferior_rate), r: 4, fill: color, "data-day": day, "data-domain": dom,
                               "data-value": a.non_inferior_rate }, root);
        hover(c, day + " · " + dom + ": " + (100 * a.non_inferior_rate).toFixed(1) + "% non-inferior over " + a.samples +
              " audits (95% CI " + (100 * a.ci_low).toFixed(0) + "–" + (100 * a.ci_high).toFixed(0) + "%)");
        pts.push(x + "," + y(a.non_inferior_rate));
      });
      if (pts.length > 1) el("polyline", { points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 1.5 }, root);
    });
    days.forEach(function (day, i) {
      if (days.length <= 16 || i % Math.ceil(days.length / 16) === 0)
        text(root, L + i * slot + slot / 2, H - B + 16, day.slice(5), { "text-anchor": "middle" });
    });
    legend(container, domains.map(function (d, j) {
      var g = (audit.guardrails || {})[d];
      return [d + (g ? " (guardrail: " + g.action + ")" : ""), colors[j % colors.length]];
    }));
  }

  function routeChart(container, totals) {
    var W = 420, H = 230, cx = 115, cy = 115, r = 90, ri = 56;
    var root = svg(container, W, H);
    var routes = Object.keys(totals.requests_by_route).filter(function (k) { return totals.requests_by_route[k] > 0; });
    var total = routes.reduce(function (a, k) { return a + totals.requests_by_route[k]; }, 0);
    if (!total) { empty(root, W, H); return; }
    var a0 = -Math.PI / 2;
    routes.forEach(function (k, i) {
      var v = totals.requests_by_route[k], frac = v / total, a1 = a0 + frac * 2 * Math.PI;
      var node;
      if (frac >= 0.9999) {
        node = el("path", { d: "M" + cx + " " + (cy - r) + "a" + r + " " + r + " 0 1 1 0 " + 2 * r + "a" + r + " " + r + " 0 1 1 0 " + -2 * r +
          "M" + cx + " " + (cy - ri) + "a" + ri + " " + ri + " 0 1 0 0 " + 2 * ri + "a" + ri + " " + ri + " 0 1 0 0 " + -2 * ri + "Z", "fill-rule": "evenodd" }, root);
      } else {
        var large = a1 - a0 > Math.PI ? 1 : 0, p = function (rad, a) { return (cx + rad * Math.cos(a)) + " " + (cy + rad * Math.sin(a)); };
        node = el("path", { d: "M" + p(r, a0) + "A" + r + " " + r + " 0 " + large + " 1 " + p(r, a1) + "L" + p(ri, a1) +
          "A" + ri + " " + ri + " 0 " + large + " 0 " + p(ri, a0) + "Z" }, root);
      }
      node.setAttribute("fill", ROUTE_COLORS[k] || "#888");
      node.setAttribute("data-route", k);
      node.setAttribute("data-value", v);
      hover(node, k + ": " + num(v) + " requests (" + pct((100 * v) / total) + ")");
      a0 = a1;
      var ly = 40 + i * 26;
      el("rect", { x: 240, y: ly - 10, width: 12, height: 12, rx: 2, fill: ROUTE_COLORS[k] || "#888" }, root);
      text(root, 260, ly, k.toUpperCase() + "  " + num(v) + "  (" + pct((100 * v) / total) + ")", { "data-route-label": k });
    });
    text(root, cx, cy - 2, num(total), { "text-anchor": "middle", class: "big" });
    text(root, cx, cy + 16, "requests", { "text-anchor": "middle" });
  }

  function escalationChart(container, totals) {
    var reasons = Object.keys(totals.escalation_reasons);
    var W = 420, rowH = 26, H = Math.max(120, 30 + reasons.length * rowH), L = 150, R = 50;
    var root = svg(container, W, H);
    if (!reasons.length) { empty(root, W, H, "No escalations in this period"); return; }
    var max = Math.max.apply(null, reasons.map(function (k) { return totals.escalation_reasons[k]; }));
    text(root, 0, 14, totals.escalations + " of " + totals.slm_bound + " SLM-bound requests escalated (" + pct(totals.escalation_rate) + ")");
    reasons.forEach(function (k, i) {
      var v = totals.escalation_reasons[k], y = 28 + i * rowH, w = ((W - L - R) * v) / max;
      text(root, L - 8, y + 14, k.length > 24 ? k.slice(0, 23) + "…" : k, { "text-anchor": "end" });
      var r = el("rect", { x: L, y: y + 2, width: Math.max(2, w), height: rowH - 8, rx: 3, fill: "#f5a524", "data-reason": k, "data-value": v }, root);
      hover(r, k + ": " + v);
      text(root, L + w + 6, y + 14, num(v));
    });
  }

  function latencyChart(container, totals) {
    var routes = Object.keys(totals.latency_by_route);
    var W = 900, H = 230, L = 70, R = 12, T = 12, B = 30;
    var root = svg(container, W, H);
    if (!routes.length) { empty(root, W, H); return; }
    var max = 0;
    routes.forEach(function (k) { max = Math.max(max, totals.latency_by_route[k].p95_ms || 0, totals.latency_by_route[k].p50_ms || 0); });
    max = niceMax(max);
    yAxis(root, L, W - R, H - B, T, max, function (v) { return num(v); });
    var slot = (W - L - R) / routes.length, bw = Math.min(60, slot / 3);
    routes.forEach(function (k, i) {
      var x0 = L + i * slot + slot / 2 - bw;
      [["p50_ms", 0.95], ["p95_ms", 0.5]].forEach(function (s, j) {
        var v = totals.latency_by_route[k][s[0]] || 0, h = ((H - B - T) * v) / max;
        var r = el("rect", { x: x0 + j * bw, y: H - B - h, width: bw - 4, height: h, rx: 3, fill: ROUTE_COLORS[k] || "#888",
                             "fill-opacity": s[1], "data-route": k, "data-series": s[0], "data-value": v }, root);
        hover(r, k + " " + s[0].replace("_ms", "") + ": " + ms(v));
      });
      text(root, L + i * slot + slot / 2, H - B + 18, k.toUpperCase() + " (" + num(totals.latency_by_route[k].requests) + ")", { "text-anchor": "middle" });
    });
    legend(container, [["p50 (solid)", "#8a96ad"], ["p95 (faded)", "rgba(138,150,173,.5)"]]);
  }

  // ---- KPIs and table ----
  function kpis(totals, shadow, audit) {
    var box = $("kpis");
    box.textContent = "";
    var items = [
      ["requests", "Requests", num], ["cost_usd", "Actual cost", money], ["baseline_cost_usd", "Baseline cost", money],
      ["savings_usd", "Savings", money, "good"], ["savings_pct", "Savings %", pct, "good"],
      ["cache_hit_rate", "Cache hit rate", pct], ["escalation_rate", "Escalation rate", pct],
    ];
    if (shadow) items.push(["shadow_savings_usd", "Would-be savings", money, "shadow"], ["shadow_savings_pct", "Would-be savings %", pct, "shadow"]);
    if (audit && audit.samples) {
      totals = Object.assign({ non_inferior_pct: audit.non_inferior_rate === null ? null : 100 * audit.non_inferior_rate }, totals);
      items.push(["net_savings_usd", "Net savings (after audits)", money, "good"], ["non_inferior_pct", "Non-inferior %", pct]);
    }
    items.forEach(function (it) {
      var d = document.createElement("div");
      d.className = "kpi " + (it[3] || "");
      d.setAttribute("data-kpi", it[0]);
      d.setAttribute("data-value", totals[it[0]]);
      var l = document.createElement("div"); l.className = "label"; l.textContent = it[1];
      var v = document.createElement("div"); v.className = "value"; v.textContent = it[2](totals[it[0]]);
      d.appendChild(l); d.appendChild(v); box.appendChild(d);
    });
  }

  function table(report) {
    var t = $("table");
    t.textContent = "";
    $("table-title").textContent = "Breakdown by " + report.by;
    var cols = [["key", report.by, String], ["requests", "requests", num], ["total_tokens", "tokens", num],
      ["cost_usd", "cost", money], ["baseline_cost_usd", "baseline", money], ["savings_usd", "savings", money],
      ["savings_pct", "savings %", pct], ["cache_hit_rate", "cache hit %", pct], ["escalation_rate", "escalation %", pct],
      ["latency_p50_ms", "p50", ms], ["latency_p95_ms", "p95", ms]];
    if (report.shadow) cols.push(["shadow_savings_usd", "would-be savings", money]);
    var head = t.createTHead().insertRow();
    cols.forEach(function (c) { var th = document.createElement("th"); th.textContent = c[1]; head.appendChild(th); });
    var body = t.createTBody();
    report.groups.concat([Object.assign({ key: "TOTAL" }, report.totals)]).forEach(function (g) {
      var tr = body.insertRow();
      if (g.key === "TOTAL") tr.className = "total";
      tr.setAttribute("data-key", g.key);
      cols.forEach(function (c) {
        var td = tr.insertCell();
        td.textContent = c[2](g[c[0]]);
        td.setAttribute("data-field", c[0]);
        if (c[0] !== "key") td.setAttribute("data-value", g[c[0]] === null ? "" : g[c[0]]);
      });
    });
  }

  // ---- loading ----
  function status(msg, isError) { var s = $("status"); s.textContent = msg; s.className = "status" + (isError ? " error" : ""); }

  function fetchReport(since, by) {
    return fetch("report?since=" + encodeURIComponent(since) + "&by=" + encodeURIComponent(by), {
      headers: { Authorization: "Bearer " + adminKey() }, cache: "no-store",
    }).then(function (r) {
      if (r.status === 401 || r.status === 403) { var e = new Error("auth"); e.auth = true; throw e; }
      if (!r.ok) return r.text().then(function (t) { throw new Error("HTTP " + r.status + ": " + t.slice(0, 200)); });
      return r.json();
    });
  }

  function load() {
    if (!adminKey()) { $("keyform").classList.remove("hidden"); status(""); return; }
    $("keyform").classList.add("hidden");
    var since = $("since").value, by = $("by").value;
    status("Loading…");
    document.body.setAttribute("data-state", "loading");
    var daily = fetchReport(since, "day");
    var grouped = by === "day" ? daily : fetchReport(since, by);
    Promise.all([daily, grouped]).then(function (res) {
      var d = res[0], g = res[1];
      window.slmgwReport = { daily: d, grouped: g };
      kpis(d.totals, d.shadow, d.audit);
      $("note").textContent = d.totals.requests
        ? "Saved " + money(d.totals.savings_usd) + " of an estimated " + money(d.totals.baseline_cost_usd) +
          " baseline (" + (d.baseline_models.join(", ") || "–") + ")" +
          (d.shadow ? "; shadow mode: " + money(d.totals.shadow_savings_usd) + " would-be savings on " + num(d.totals.shadow_requests) + " requests." : ".")
        : "No requests recorded in this period.";
      savingsChart($("chart-savings"), d);
      qualityChart($("chart-quality"), d);
      routeChart($("chart-routes"), d.totals);
      escalationChart($("chart-escalations"), d.totals);
      latencyChart($("chart-latency"), d.totals);
      table(g);
      $("generated").textContent = "Generated " + d.generated_at.slice(0, 19).replace("T", " ") + " UTC.";
      status("");
      document.body.setAttribute("data-state", "ready");
    }).catch(function (e) {
      document.body.setAttribute("data-state", "error");
      if (e.auth) {
        sessionStorage.removeItem(KEY_STORE);
        $("keyform").classList.remove("hidden");
        $("keyerror").textContent = "That key was refused.";
        status("");
      } else {
        status("Could not load the report: " + e.message, true);
      }
    });
  }

  takeKeyFromUrl();
  $("keyentry").addEventListener("submit", function (e) {
    e.preventDefault();
    var k = $("keyinput").value.trim();
    if (k) { sessionStorage.setItem(KEY_STORE, k); $("keyinput").value = ""; $("keyerror").textContent = ""; load(); }
  });
  $("refresh").addEventListener("click", load);
  $("forget").addEventListener("click", function () { sessionStorage.removeItem(KEY_STORE); location.reload(); });
  $("since").addEventListener("change", load);
  $("by").addEventListener("change", load);
  load();
})();
