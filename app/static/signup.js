// Sign-up: live check of the workspace address, and the provisioning progress poller. No framework.
(function () {
  "use strict";

  var form = document.getElementById("signup-form");
  if (form) {
    var input = document.getElementById("slug");
    var status = document.getElementById("slug-status");
    var company = form.querySelector("input[name=company_name]");
    var timer = null;
    var edited = input.value !== "";

    function check() {
      var slug = input.value.trim().toLowerCase();
      if (!slug) { status.textContent = "Lower-case letters, digits and '-'."; status.className = "muted"; return; }
      fetch(form.dataset.slugUrl + "?slug=" + encodeURIComponent(slug), {headers: {"Accept": "application/json"}})
        .then(function (r) { return r.json(); })
        .then(function (data) {
          if (data.slug !== input.value.trim().toLowerCase()) { return; }  // a newer keystroke wins
          status.textContent = data.message;
          status.className = data.available ? "ok" : "error";
          input.setCustomValidity(data.available ? "" : data.message);
        })
        .catch(function () { status.textContent = ""; });
    }
    function later() { clearTimeout(timer); timer = setTimeout(check, 250); }

    input.addEventListener("input", function () { edited = true; later(); });
    company.addEventListener("input", function () {
      if (edited) { return; }
      input.value = company.value.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^[^a-z]+|-+$/g, "").slice(0, 40);
      later();
    });
    if (input.value) { check(); }
  }

  var list = document.getElementById("provisioning");
  if (list) {
    var errorBox = document.getElementById("provisioning-error");
    var ready = document.getElementById("provisioning-ready");
    var enter = document.getElementById("enter-link");

    function render(data) {
      list.textContent = "";
      data.steps.forEach(function (step) {
        var li = document.createElement("li");
        li.className = "step " + step.state;
        li.textContent = step.label + (step.state === "done" ? " ✓" : step.state === "running" ? " …" : "");
        list.appendChild(li);
      });
    }
    function poll() {
      fetch(list.dataset.statusUrl, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
        .then(function (r) { return r.json(); })
        .then(function (data) {
          render(data);
          if (data.status === "ready" && data.enter_url) {
            enter.href = data.enter_url;
            ready.hidden = false;
            window.location.assign(data.enter_url);  // straight into the onboarding flow
          } else if (data.status === "failed") {
            errorBox.textContent = data.error || "Provisioning failed.";
            errorBox.hidden = false;
          } else {
            setTimeout(poll, 150);
          }
        })
        .catch(function () { setTimeout(poll, 1000); });
    }
    poll();
  }
})();
