/* Selection and comparison: small enhancements. Every control also works as a plain form without this file. */
(function () {
  "use strict";

  var COMPARE_MIN = 2;
  var COMPARE_MAX = 6;

  // "Compare ticked (n)": enabled only when 2 to 6 datasets are ticked.
  function updateCompareButtons() {
    var ticked = document.querySelectorAll('input[data-compare][form="compare-form"]:checked').length;
    document.querySelectorAll("[data-compare-button]").forEach(function (button) {
      button.textContent = ticked ? "Compare ticked (" + ticked + ")" : "Compare ticked";
      button.disabled = ticked < COMPARE_MIN || ticked > COMPARE_MAX;
      button.title = ticked > COMPARE_MAX
        ? "At most " + COMPARE_MAX + " datasets can be compared"
        : "Tick " + COMPARE_MIN + " to " + COMPARE_MAX + " datasets to compare them";
    });
  }

  document.addEventListener("change", function (event) {
    if (event.target instanceof HTMLInputElement && event.target.hasAttribute("data-compare")) {
      updateCompareButtons();
    }
  });
  document.addEventListener("DOMContentLoaded", updateCompareButtons);
  document.addEventListener("htmx:afterSettle", updateCompareButtons);

  // A failed add or remove on a page without a flash area: say why next to the button.
  document.addEventListener("htmx:responseError", function (event) {
    var form = event.detail.elt instanceof Element ? event.detail.elt.closest(".selection-toggle") : null;
    if (!form || document.getElementById("flash")) return;
    var note = form.querySelector(".toggle-error");
    if (!note) {
      note = document.createElement("span");
      note.className = "toggle-error";
      note.setAttribute("role", "alert");
      form.appendChild(note);
    }
    var box = document.createElement("div");
    box.innerHTML = event.detail.xhr.responseText;  // the server's escaped _error.html fragment
    note.textContent = (box.querySelector(".error-title") || box).textContent.replace(/\s+/g, " ").trim();
  });
})();
