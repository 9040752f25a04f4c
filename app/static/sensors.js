// Sensor pages: live tiles polled every 2 s, and an SVG trend (min/max band, mean line, episode spans).
// Our own small progressive script: the pages are readable without it.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";

  function fmt(v) { return (Math.abs(v) >= 1000 || Math.abs(v) < 0.01) ? v.toPrecision(3) : v.toFixed(2); }

  function renderTiles(section, tiles) {
    tiles.forEach(function (t) {
      var tile = section.querySelector('[data-sensor="' + t.id + '"]');
      if (!tile) { return; }
      tile.className = "sensor-tile state-" + t.state;
      tile.querySelector(".value").textContent = (t.latest && t.latest.value !== null) ? fmt(t.latest.value) : "–";
      tile.querySelector(".alarms").textContent = t.open.map(function (e) { return e.rule; }).join(", ");
    });
  }

  function pollTiles(section) {
    var url = section.getAttribute("data-live-url");
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (doc) { if (doc) { renderTiles(section, doc.tiles); } })
        .catch(function () { /* offline for a moment: keep the last values */ })
        .then(function () { window.setTimeout(tick, 2000); });
    }
    tick();
  }

  function el(name, attrs) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }

  function drawTrend(figure) {
    var svg = figure.querySelector("svg");
    var episodes = JSON.parse(figure.getAttribute("data-episodes") || "[]");
    fetch(figure.getAttribute("data-url"), { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (doc) {
        var b = doc.buckets, W = 900, H = 320, pad = 40;
        if (!b.length) { svg.appendChild(el("text", { x: 20, y: 40 })).textContent = "No readings in this window."; return; }
        var t0 = Date.parse(doc.start), t1 = Date.parse(doc.end);
        var lo = Math.min.apply(null, b.map(function (x) { return x.min; }));
        var hi = Math.max.apply(null, b.map(function (x) { return x.max; }));
        if (hi === lo) { hi += 1; lo -= 1; }
        var X = function (t) { return pad + (W - 2 * pad) * (t - t0) / (t1 - t0); };
        var Y = function (v) { return H - pad - (H - 2 * pad) * (v - lo) / (hi - lo); };
        episodes.forEach(function (e) {
          var x0 = X(Date.parse(e.start)), x1 = Math.max(X(Date.parse(e.end)), x0 + 2);
          svg.appendChild(el("rect", { x: x0, y: pad, width: x1 - x0, height: H - 2 * pad,
            "class": "episode-span " + e.severity }));
        });
        var band = b.map(function (x) { return X(Date.parse(x.t)) + "," + Y(x.max); })
          .concat(b.slice().reverse().map(function (x) { return X(Date.parse(x.t)) + "," + Y(x.min); }));
        svg.appendChild(el("polygon", { points: band.join(" "), "class": "band" }));
        svg.appendChild(el("polyline", { points: b.map(function (x) { return X(Date.parse(x.t)) + "," + Y(x.avg); }).join(" "),
          "class": "mean" }));
        svg.appendChild(el("text", { x: 4, y: pad, "class": "axis" })).textContent = fmt(hi);
        svg.appendChild(el("text", { x: 4, y: H - pad, "class": "axis" })).textContent = fmt(lo);
      });
  }

  document.querySelectorAll(".sensor-tiles[data-live-url]").forEach(pollTiles);
  document.querySelectorAll("figure.trend").forEach(drawTrend);
})();
