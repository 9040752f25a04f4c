// The tablet step screen: live checks while the operator types, and entries that survive flaky plant Wi-Fi.
//
// Every entry gets an idempotency key when the operator presses Save. The entry (value, key, device time) is
// put in localStorage first and then sent to the JSON API; a failed send stays queued and is retried with
// back-off and whenever the browser comes back online. The server records an entry once per key, so a retry of
// something that did arrive records nothing new. The banner says plainly whether everything is saved.
// Queued entries belong to the person who made them: after a user switch they are not sent by the next person.
// Files (attachment captures) cannot be kept in localStorage: one that fails to upload is held in this page with
// its idempotency key and retried the same way; the banner counts it, and leaving the page while it is unsent
// asks first (closing the page would lose it).
// Without JavaScript the same forms post to the HTML routes and work the same way.
(function () {
  "use strict";
  var root = document.getElementById("tablet");
  if (!root) { return; }
  var d = root.dataset;
  var QUEUE_KEY = "batchline.entries." + location.host + "." + d.batchId;
  var banner = document.getElementById("save-state");
  var retryDelay = 2000;
  var retryTimer = null;
  // Attachments not yet saved: {key, url, fd, form, sending}, held in this page only.
  var files = [];

  function load() {
    try { return JSON.parse(localStorage.getItem(QUEUE_KEY) || "[]"); } catch (e) { return []; }
  }
  function store(queue) {
    try { localStorage.setItem(QUEUE_KEY, JSON.stringify(queue)); } catch (e) { /* storage full: still sent */ }
    showBanner();
  }
  function mine(queue) { return queue.filter(function (i) { return i.user === d.userId; }); }
  function newKey() {
    if (window.crypto && crypto.randomUUID) { return crypto.randomUUID().replace(/-/g, ""); }
    var a = new Uint8Array(16);
    crypto.getRandomValues(a);
    return Array.prototype.map.call(a, function (b) { return (b < 16 ? "0" : "") + b.toString(16); }).join("");
  }
  function showBanner(failedText) {
    var queue = load();
    var own = mine(queue).length + files.length;
    var others = queue.length - own;
    banner.classList.remove("saved", "pending", "failed");
    if (failedText) {
      banner.classList.add("failed");
      banner.textContent = failedText;
    } else if (own) {
      banner.classList.add("pending");
      banner.textContent = own + (own === 1 ? " entry is" : " entries are") +
        " NOT SAVED yet — kept on this tablet and retried automatically";
      if (files.length) {
        banner.textContent += " · " + files.length + (files.length === 1 ? " file is" : " files are") +
          " held in this page: keep it open until saved";
      }
    } else {
      banner.classList.add("saved");
      banner.textContent = "All entries saved";
    }
    if (others) {
      banner.textContent += " · " + others + " unsent entr" + (others === 1 ? "y" : "ies") +
        " of another user wait for them to sign in again";
    }
  }

  function formFor(item) {
    var selector = item.entryId ? 'form.correct-form[data-entry-id="' + item.entryId + '"]'
      : 'form.entry-form:not(.correct-form) input[name="capture"][value="' + item.capture + '"]';
    var el = document.querySelector(selector);
    return el ? (el.tagName === "FORM" ? el : el.form) : null;
  }
  function say(form, cls, text) {
    if (!form) { return; }
    var el = form.querySelector(".sent-state");
    el.className = "sent-state " + cls;
    el.textContent = text;
  }
  function feedback(form, state, text) {
    var el = form.querySelector(".feedback");
    el.className = "feedback " + (state || "");
    el.textContent = text || "";
  }
  function openDecision(form, check) {
    if (!check) { return; }
    if (check.needs_acknowledgement || check.state === "red") {
      var ack = form.querySelector("[data-ack]");
      if (ack) { ack.open = true; }
    }
    if (check.needs_override) {
      var ov = form.querySelector("[data-override]");
      if (ov) { ov.open = true; }
    }
  }

  function raw(form) {
    var fd = new FormData(form);
    var body = {};
    ["value", "unit", "code", "quantity"].forEach(function (name) {
      if (fd.has(name)) { body[name] = fd.get(name); }
    });
    if (fd.get("kind") === "checkbox") { body.value = form.querySelector('input[name="value"]').checked; }
    return body;
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": d.csrf},
      body: JSON.stringify(body)
    });
  }

  // --- live checks ------------------------------------------------------------------------------------------
  var timers = new WeakMap();
  function liveCheck(form) {
    var body = raw(form);
    body.capture = form.querySelector('input[name="capture"]').value;
    if (form.dataset.entryId) { body.entry_id = parseInt(form.dataset.entryId, 10); }
    var empty = ["value", "code"].every(function (k) { return !(k in body) || body[k] === "" || body[k] === null; });
    if (empty) { feedback(form, "", ""); return; }
    post(d.checkUrl, body).then(function (resp) {
      return resp.json().then(function (data) { return {status: resp.status, data: data}; });
    }).then(function (r) {
      if (r.status === 200) {
        feedback(form, r.data.state, r.data.message);
        openDecision(form, r.data);
      } else {
        feedback(form, "error", r.data.detail || r.data.title || "cannot check this value");
      }
    }).catch(function () { feedback(form, "", "offline: the value will be checked when it is saved"); });
  }
  document.querySelectorAll("form.entry-form").forEach(function (form) {
    form.querySelectorAll("[data-live]").forEach(function (input) {
      var evt = input.type === "radio" ? "change" : "input";
      input.addEventListener(evt, function () {
        clearTimeout(timers.get(form));
        timers.set(form, setTimeout(function () { liveCheck(form); }, 350));
      });
    });
    // A keyboard-wedge scanner types the label and presses Enter: go on to the quantity, do not submit yet.
    form.querySelectorAll("[data-scan]").forEach(function (input) {
      input.addEventListener("keydown", function (event) {
        if (event.key !== "Enter") { return; }
        var next = form.querySelector('input[name="quantity"]');
        if (next) { event.preventDefault(); next.focus(); liveCheck(form); }
      });
    });
    form.addEventListener("submit", function (event) {
      if (!window.fetch || !window.localStorage) { return; }  // plain form post
      // An SSO supervisor's override goes to the identity provider first: a plain post that leaves the page.
      if (event.submitter && event.submitter.name === "esign_reauth") { return; }
      event.preventDefault();
      submit(form);
    });
  });

  // --- saving -----------------------------------------------------------------------------------------------
  function submit(form) {
    var fd = new FormData(form);
    var isCorrection = form.classList.contains("correct-form");
    var now = new Date().toISOString();
    if (fd.get("kind") === "attachment") { return sendFile(form, fd, isCorrection, now); }
    var body = raw(form);
    body.idempotency_key = newKey();
    body.control_recipe_hash = d.controlHash;
    body.device_time = now;
    if (fd.get("acknowledgement")) { body.acknowledgement = fd.get("acknowledgement"); }
    if (fd.get("override_email")) {
      body.override = {email: fd.get("override_email"), password: fd.get("override_password") || "",
        reason: fd.get("override_reason") || ""};
    }
    var item = {key: body.idempotency_key, user: d.userId, capture: fd.get("capture"), body: body};
    if (isCorrection) {
      item.entryId = form.dataset.entryId;
      item.url = d.correctUrl.replace("/entries/0/", "/entries/" + item.entryId + "/");
      body.reason = fd.get("reason") || "";
      body.action = fd.get("action") || "correction";
    } else {
      item.url = d.entryUrl;
      body.capture = item.capture;
    }
    // Passwords of an override are never kept on the tablet: an override entry is sent once, not queued.
    var queue = load();
    if (!body.override) { queue.push(item); store(queue); }
    form.querySelector('button[type="submit"]').disabled = true;
    say(form, "pending", "Saving…");
    send(item, !body.override);
  }

  function forget(key) { store(load().filter(function (i) { return i.key !== key; })); }

  function send(item, queued) {
    var form = formFor(item);
    item.body.device_sent_at = new Date().toISOString();
    return post(item.url, item.body).then(function (resp) {
      var type = resp.headers.get("Content-Type") || "";
      if (type.indexOf("json") < 0) { throw new Error("not json"); }
      return resp.json().then(function (data) { return {status: resp.status, data: data}; });
    }).then(function (r) {
      var button = form && form.querySelector('button[type="submit"]');
      if (r.status === 200 || r.status === 201) {
        if (queued) { forget(item.key); }
        retryDelay = 2000;
        say(form, "saved", "Saved ✓ " + r.data.display + (r.data.replayed ? " (already recorded)" : ""));
        if (form) { form.classList.add("saved"); }
        refreshWhenIdle();
        return;
      }
      if (r.status === 401 || r.status >= 500) { throw new Error("retry"); }
      if (queued) { forget(item.key); }
      if (button) { button.disabled = false; }
      var text = r.data.detail || r.data.title || ("refused (" + r.status + ")");
      if (form) {
        feedback(form, r.data.check ? r.data.check.state : "error", text);
        openDecision(form, r.data.check || (r.data.needs === "override" ? {needs_override: true} : null));
        say(form, "failed", "NOT SAVED: " + text);
      } else {
        showBanner("An entry was refused: " + text);
      }
    }).catch(function () {
      if (!queued) {
        say(form, "failed", "NOT SAVED: the connection failed; press Save again when the tablet is online");
        var b = form && form.querySelector('button[type="submit"]');
        if (b) { b.disabled = false; }
        return;
      }
      say(form, "pending", "NOT SAVED YET — kept on this tablet, retrying");
      scheduleRetry();
    });
  }

  // The fields the API takes for a file entry (the form also carries fields only the HTML route reads).
  var FILE_FIELDS = ["capture", "acknowledgement", "reason", "action", "file", "override_email", "override_password",
    "override_reason"];

  function sendFile(form, all, isCorrection, now) {
    var fd = new FormData();
    FILE_FIELDS.forEach(function (name) {
      if (!all.has(name) || all.get(name) === "") { return; }
      if (isCorrection && name === "capture") { return; }
      if (!isCorrection && (name === "reason" || name === "action")) { return; }
      fd.set(name, all.get(name));
    });
    fd.set("idempotency_key", newKey());
    fd.set("control_recipe_hash", d.controlHash);
    fd.set("device_time", now);
    var url = isCorrection ? d.correctUrl.replace("/entries/0/", "/entries/" + form.dataset.entryId + "/")
      : d.entryUrl;
    // An override's password is never held for a retry: such an upload is sent once.
    var item = {key: fd.get("idempotency_key"), url: url, fd: fd, form: form, sending: false,
      once: fd.has("override_email")};
    if (!item.once) { files.push(item); }
    form.querySelector('button[type="submit"]').disabled = true;
    say(form, "pending", "Uploading…");
    showBanner();
    sendFileItem(item);
  }

  function forgetFile(item) {
    files = files.filter(function (f) { return f !== item; });
    showBanner();
  }

  // The same key on every attempt: an upload whose response was lost is recognised by the server, not recorded
  // again.
  function sendFileItem(item) {
    if (item.sending) { return; }
    item.sending = true;
    var form = item.form;
    item.fd.set("device_sent_at", new Date().toISOString());
    fetch(item.url, {method: "POST", credentials: "same-origin",
      headers: {"X-CSRFToken": d.csrf, "Accept": "application/json"}, body: item.fd}).then(function (resp) {
      var type = resp.headers.get("Content-Type") || "";
      if (type.indexOf("json") < 0) { throw new Error("not json"); }
      return resp.json().then(function (data) { return {status: resp.status, data: data}; });
    }).then(function (r) {
      item.sending = false;
      if (r.status === 200 || r.status === 201) {
        forgetFile(item);
        retryDelay = 2000;
        say(form, "saved", "Saved ✓ " + r.data.display + (r.data.replayed ? " (already recorded)" : ""));
        form.classList.add("saved");
        refreshWhenIdle();
        return;
      }
      if (r.status === 401 || r.status >= 500) { throw new Error("retry"); }
      forgetFile(item);
      form.querySelector('button[type="submit"]').disabled = false;
      say(form, "failed", "NOT SAVED: " + (r.data.detail || r.data.title || ("refused (" + r.status + ")")));
    }).catch(function () {
      item.sending = false;
      if (item.once) {
        say(form, "failed", "NOT SAVED: the connection failed; press Save again when the tablet is online");
        form.querySelector('button[type="submit"]').disabled = false;
        return;
      }
      say(form, "pending", "NOT SAVED YET — the file is kept in this page and retried; keep the page open");
      scheduleRetry();
    });
  }

  function scheduleRetry() {
    showBanner();
    if (retryTimer) { return; }
    retryTimer = setTimeout(function () {
      retryTimer = null;
      flush();
    }, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 30000);
  }

  function flush() {
    mine(load()).forEach(function (item) { send(item, true); });
    files.forEach(sendFileItem);
  }

  // Reload to show the recorded values (and what the step now waits for) once nothing typed would be lost.
  function refreshWhenIdle() {
    showBanner();
    if (mine(load()).length || files.length) { return; }
    var typing = Array.prototype.some.call(document.querySelectorAll("form.entry-form:not(.saved)"), function (f) {
      return Array.prototype.some.call(f.querySelectorAll("input[type=text], textarea"), function (i) {
        return i.value && i.value !== i.defaultValue;
      });
    });
    if (!typing) { setTimeout(function () { location.reload(); }, 600); }
  }

  window.addEventListener("online", function () { retryDelay = 2000; flush(); });
  window.addEventListener("beforeunload", function (event) {
    if (!files.length) { return; }
    event.preventDefault();
    event.returnValue = "";  // a file not yet saved lives only in this page
  });
  showBanner();
  mine(load()).forEach(function (item) {
    var form = formFor(item);
    say(form, "pending", "NOT SAVED YET — kept on this tablet, retrying");
  });
  flush();
})();
