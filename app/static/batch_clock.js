// Batch screens: the step clock (elapsed against allowed time) and hold-time deadlines, on the server's clock.
// The page carries the server time it was built at; the offset to this device's clock is applied to everything,
// so a tablet with a wrong clock still shows the right elapsed time.
(function () {
  "use strict";
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function hms(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    return pad(Math.floor(s / 3600)) + ":" + pad(Math.floor((s % 3600) / 60)) + ":" + pad(s % 60);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var anchor = document.querySelector("[data-server-now]");
    var offset = anchor ? Date.parse(anchor.getAttribute("data-server-now")) - Date.now() : 0;
    function now() { return Date.now() + offset; }
    var clock = document.getElementById("clock");
    function tick() {
      if (clock && clock.dataset.startedAt) {
        var end = clock.dataset.endedAt ? Date.parse(clock.dataset.endedAt) : now();
        var elapsed = end - Date.parse(clock.dataset.startedAt);
        clock.querySelector("[data-elapsed]").textContent = hms(elapsed);
        if (clock.dataset.allowedS) {
          var allowed = parseFloat(clock.dataset.allowedS) * 1000;
          clock.querySelector("[data-allowed]").textContent = hms(allowed);
          clock.classList.toggle("over", elapsed > allowed);
          clock.classList.toggle("over-warn", elapsed <= allowed && elapsed > 0.9 * allowed);
        }
      }
      document.querySelectorAll("[data-deadline]").forEach(function (el) {
        var left = Date.parse(el.getAttribute("data-deadline")) - now();
        if (!el.dataset.label) { el.dataset.label = el.textContent; }
        el.textContent = left > 0 ? el.dataset.label + " (" + hms(left) + " left)" : el.dataset.label + " — HOLD TIME EXCEEDED";
        el.classList.toggle("expired", left <= 0);
      });
    }
    tick();
    setInterval(tick, 1000);
  });
})();
