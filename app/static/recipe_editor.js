// Recipe editor, progressive: every action is a plain form post without this file.
// Adds: only the fields of the chosen capture kind, a warning before leaving unsaved changes, and
// Alt+Up / Alt+Down on a step of the outline to move it.
(function () {
  "use strict";

  function showKind(form) {
    var select = form.querySelector("[data-capture-kind]");
    if (!select) { return; }
    form.querySelectorAll("fieldset[data-kind]").forEach(function (fieldset) {
      var active = fieldset.getAttribute("data-kind") === select.value;
      fieldset.hidden = !active;
      fieldset.disabled = !active;  // a hidden kind's fields are not posted
    });
  }

  document.querySelectorAll("form.capture-form").forEach(function (form) {
    var select = form.querySelector("[data-capture-kind]");
    showKind(form);
    if (select) { select.addEventListener("change", function () { showKind(form); }); }
  });

  var dirty = false;
  document.querySelectorAll("form[data-dirty-guard]").forEach(function (form) {
    form.addEventListener("input", function () { dirty = true; form.classList.add("dirty"); });
    form.addEventListener("submit", function () { dirty = false; });
  });
  window.addEventListener("beforeunload", function (event) {
    if (dirty) { event.preventDefault(); event.returnValue = ""; }
  });

  document.querySelectorAll(".editor-outline .step").forEach(function (item) {
    item.addEventListener("keydown", function (event) {
      if (!event.altKey || (event.key !== "ArrowUp" && event.key !== "ArrowDown")) { return; }
      var form = item.querySelector('form[data-move="' + (event.key === "ArrowUp" ? "up" : "down") + '"]');
      if (form) { event.preventDefault(); form.submit(); }
    });
  });
}());
