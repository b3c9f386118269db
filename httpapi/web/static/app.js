// Live progress of a batch page: one EventSource on the batch's progress stream
// (server-sent events), the numbers and the bar updated as events arrive, the page
// reloaded once the store holds the batch complete (failed items, preview, retry).
(function () {
  "use strict";
  var box = document.getElementById("progress");
  if (!box || !window.EventSource) return;
  if (box.dataset.state === "complete") return;

  function set(name, text) {
    var el = box.parentNode.querySelector('[data-field="' + name + '"]');
    if (el) el.textContent = text;
  }
  function duration(s) {
    if (s === null || s === undefined) return "–";
    s = Math.round(s);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function show(p) {
    var pct = Math.floor(p.percent);
    box.querySelector("progress").value = p.percent;
    set("percent", pct + "%");
    set("done", p.done);
    set("expected", p.expected);
    set("ok", p.ok);
    set("failed", p.failed);
    set("in_flight", p.in_flight);
    set("rate", p.items_per_second > 0 ? p.items_per_second.toFixed(1) + " items/s" : "–");
    set("eta", duration(p.eta_seconds));
    set("cost", "$" + p.cost_usd.toFixed(4));
    box.dataset.percent = pct;
  }

  var es = new EventSource(box.dataset.progressUrl);
  es.addEventListener("progress", function (e) { show(JSON.parse(e.data)); });
  es.addEventListener("complete", function (e) {
    var p = JSON.parse(e.data);
    show(p);
    es.close();
    set("state", "complete");
    box.dataset.state = "complete";
    setTimeout(function () { window.location.replace(window.location.pathname); }, 400);
  });
  es.addEventListener("error", function (e) {
    if (e.data) { set("state", JSON.parse(e.data).error); es.close(); }
  });
})();
