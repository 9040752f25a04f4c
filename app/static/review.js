// Keep the release-readiness panel live while a batch runs or is reviewed (progressive: the page works without it).
(function () {
  "use strict";
  var panel = document.getElementById("readiness");
  if (!panel || !window.fetch || !document.getElementById("readiness-blockers")) { return; }
  var url = panel.getAttribute("data-url");
  function render(data) {
    var verdict = document.getElementById("readiness-verdict");
    var blockers = document.getElementById("readiness-blockers");
    var open = document.getElementById("readiness-open");
    panel.className = "panel readiness " + (data.ready ? "ready" : "blocked");
    if (open) {
      open.textContent = "Open exceptions: critical " + data.open_by_severity.critical + " · major " +
        data.open_by_severity.major + " · minor " + data.open_by_severity.minor;
    }
    if (verdict && verdict.firstElementChild) {
      verdict.firstElementChild.className = "badge " + (data.ready ? "ok" : "bad");
      verdict.firstElementChild.textContent = data.ready ? "Ready for release" : "Not ready for release";
    }
    if (blockers) {
      while (blockers.firstChild) { blockers.removeChild(blockers.firstChild); }
      data.blockers.forEach(function (why) {
        var li = document.createElement("li");
        li.textContent = why;
        blockers.appendChild(li);
      });
    }
  }
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { render(data); } })
      .catch(function () { /* offline: keep what is shown */ });
  }
  window.setInterval(poll, 15000);
}());
