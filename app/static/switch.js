// Shared tablets: a keyboard-wedge badge scanner types the user code and presses Enter. Enter in the badge
// field moves to the password instead of submitting half a form.
document.addEventListener("DOMContentLoaded", function () {
  var badge = document.getElementById("badge");
  var password = document.getElementById("password");
  if (!badge || !password) { return; }
  badge.addEventListener("keydown", function (event) {
    if (event.key === "Enter") {
      event.preventDefault();
      badge.value = badge.value.trim();
      if (badge.value) { password.focus(); }
    }
  });
});
