// papayya ui: keep the numbers of running runs fresh by polling the JSON endpoints every few seconds.
// No framework; the pages work without it.
(function () {
  "use strict";
  var EVERY = 3000;
  var OUTCOMES = ["succeeded", "degraded", "failed"];

  function fmt(n) { return Number(n || 0).toLocaleString("en-US"); }
  // Money for people, the server's rule (papayya.budgets.usd) on the exact decimal string the API
  // sends: cents from a dollar up, four significant digits below (half up), at least cents.
  function money(v) {
    if (v === null || v === undefined) return "unknown";
    var text = String(v).trim();
    var sign = text.charAt(0) === "-" ? "-" : "";
    if (sign) text = text.slice(1);
    var parts = text.split(".");
    var whole = (parts[0] || "0").replace(/^0+(?=\d)/, ""), frac = parts[1] || "";
    if (!/^\d+$/.test(whole) || !/^\d*$/.test(frac)) return "$" + String(v);
    var keep;
    if (whole !== "0") keep = 2;
    else {
      var first = frac.search(/[1-9]/);
      if (first < 0) return "$0.00";
      keep = first + 4;
    }
    var scale = 10n ** BigInt(keep);
    var n = BigInt(whole + frac.padEnd(keep, "0").slice(0, keep));  // the amount x 10^keep, cut
    if ((frac.charAt(keep) || "0") >= "5") n += 1n;  // half up
    var intPart = n / scale;
    var fracPart = (n % scale).toString().padStart(keep, "0");
    if (intPart >= 1n) fracPart = fracPart.slice(0, 2);  // from a dollar up (0.99996 became 1): cents
    else fracPart = fracPart.replace(/0+$/, "").padEnd(2, "0");
    return sign + "$" + intPart.toLocaleString("en-US") + "." + fracPart;
  }
  function cost(v, unpriced) {
    if (v === null || v === undefined) return "unknown";
    return money(v) + (unpriced ? " + unknown" : "");
  }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function badge(status) { return el("span", { "class": "badge s-" + status }, status); }
  // Item statuses in lifecycle order (the server's, from a legend's data-order), then any other.
  var ORDER = ["queued", "running", "paused", "stalled", "waiting", "succeeded", "degraded", "failed", "cancelled"];
  function ordered(keys) {
    function rank(k) { var i = ORDER.indexOf(k); return i < 0 ? ORDER.length : i; }
    return keys.slice().sort(function (a, b) { return rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0); });
  }
  // What the legend lists, as pages.legend_counts: every status with items, and the outcomes at zero.
  function legendCounts(counts) {
    var merged = {};
    OUTCOMES.forEach(function (o) { merged[o] = 0; });
    Object.keys(counts).forEach(function (k) { if (counts[k]) merged[k] = counts[k]; });
    var out = {};
    ordered(Object.keys(merged)).forEach(function (k) { out[k] = merged[k]; });
    return out;
  }
  function bar(counts, total) {
    var wrap = el("div", { "class": "bar-stack", role: "img" });
    var shown = legendCounts(counts);
    var label = [];
    Object.keys(shown).forEach(function (k) {
      label.push(k + " " + shown[k]);
      if (!shown[k]) return;
      var seg = el("span", { "class": "seg s-" + k, title: k + " " + shown[k], "data-status": k, "data-count": String(shown[k]) });
      seg.style.width = (total ? (100 * shown[k] / total) : 0) + "%";
      wrap.appendChild(seg);
    });
    wrap.setAttribute("aria-label", label.join(", "));
    return wrap;
  }
  function legend(box, counts, ofText) {
    box.textContent = "";
    var shown = legendCounts(counts);
    Object.keys(shown).forEach(function (k) {
      var key = el("span", { "class": "key s-" + k, "data-status": k, "data-count": String(shown[k]) }, k + " ");
      key.appendChild(el("b", {}, fmt(shown[k])));
      box.appendChild(key);
    });
    box.appendChild(el("span", { "class": "sub" }, ofText));
  }
  function getJSON(url, done) {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) done(data); })
      .catch(function () { /* the next poll tries again */ });
  }

  // A run row (runs list, tenant page): status, progress, outcome counts, cost.
  function fillRow(tr, r) {
    var status = tr.querySelector('[data-f="status"]');
    status.textContent = "";
    status.appendChild(badge(r.status));
    if (r.status === "paused" && r.paused_reason) status.appendChild(el("div", { "class": "sub" }, r.paused_reason.split(": ")[0]));
    var progress = tr.querySelector('[data-f="progress"]');
    progress.textContent = "";
    progress.appendChild(bar(r.counts, r.total));
    progress.appendChild(el("div", { "class": "sub num" }, fmt(r.done) + "/" + fmt(r.total)));
    OUTCOMES.forEach(function (o) { tr.querySelector('[data-f="' + o + '"]').textContent = fmt(r.counts[o]); });
    var c = tr.querySelector('[data-f="cost"]');
    c.textContent = cost(r.cost_usd, r.unpriced_calls > 0);
    if (r.budget_usd !== null && r.budget_usd !== undefined) c.appendChild(el("div", { "class": "sub" }, "of " + money(r.budget_usd)));
  }
  function newRow(r) {
    var tr = el("tr", { "data-run": r.run_id });
    var link = el("td", { "class": "mono" });
    link.appendChild(el("a", { href: "/runs/" + r.run_id }, r.run_id.slice(0, 8)));
    tr.appendChild(link);
    var t = el("td");
    t.appendChild(el("a", { href: "/tenants/" + encodeURIComponent(r.tenant) }, r.tenant));
    tr.appendChild(t);
    tr.appendChild(el("td", {}, r.agent));
    tr.appendChild(el("td", { "data-f": "status" }));
    tr.appendChild(el("td", { "data-f": "progress", "class": "progress-cell" }));
    OUTCOMES.forEach(function (o) { tr.appendChild(el("td", { "class": "num", "data-f": o })); });
    tr.appendChild(el("td", { "class": "num", "data-f": "cost" }));
    tr.appendChild(el("td", { "class": "sub" }, (r.created_at || "").replace("T", " ").slice(0, 16) + "Z"));
    return tr;
  }
  function pollRuns(table) {
    var url = table.getAttribute("data-poll");
    var body = table.tBodies[0];
    getJSON(url, function (runs) {
      var anyLive = false;
      runs.slice().reverse().forEach(function (r) {
        var tr = body.querySelector('tr[data-run="' + r.run_id + '"]');
        if (!tr) { tr = newRow(r); body.insertBefore(tr, body.firstChild); }
        fillRow(tr, r);
        if (r.status === "running") anyLive = true;
      });
      table.setAttribute("data-live", anyLive ? "1" : "0");
    });
  }

  // The run page: while it runs, the status, the outcome bar and counts, and the cost; reload when it stops.
  function pollRun(section) {
    getJSON(section.getAttribute("data-live"), function (r) {
      if (r.status !== "running") { window.location.reload(); return; }
      var old = section.querySelector(".progress .bar-stack");
      old.parentNode.replaceChild(bar(r.counts, r.total), old);
      legend(section.querySelector('[data-f="counts"]'), r.counts, "of " + fmt(r.total) + " items");
      section.querySelector('[data-f="cost"]').textContent = cost(r.cost_usd, r.unpriced_calls > 0);
    });
  }

  function tick() {
    var order = document.querySelector("[data-order]");
    if (order) ORDER = order.getAttribute("data-order").split(" ");
    if (document.hidden) return;
    document.querySelectorAll("table[data-poll]").forEach(pollRuns);
    document.querySelectorAll("section[data-live]").forEach(pollRun);
  }
  document.addEventListener("DOMContentLoaded", function () { setInterval(tick, EVERY); });
})();
