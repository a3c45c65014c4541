// Progressive enhancement only: every page works without this script. It reveals the
// "Print this record" button and moves focus to the error summary when a form comes back
// with problems, so screen-reader and keyboard users hear them first.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-print]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () { window.print(); });
  });
  var summary = document.getElementById("error-summary");
  if (summary) { summary.focus(); }
});
