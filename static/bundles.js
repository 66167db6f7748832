/* Bundle pages: a "Copy" button for the CLI command. The command is also a plain read-only field to select. */
(function () {
  "use strict";

  document.addEventListener("click", function (event) {
    var button = event.target instanceof Element ? event.target.closest("[data-copy]") : null;
    if (!button) return;
    var field = document.querySelector(button.getAttribute("data-copy"));
    if (!field) return;
    field.select();
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 2000);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
    } else {
      document.execCommand("copy");
      done();
    }
  });

  // The command field selects itself whole, so a click and Ctrl+C copies all of it.
  document.addEventListener("focusin", function (event) {
    if (event.target instanceof HTMLInputElement && event.target.id === "bundle-cli-command") event.target.select();
  });
})();
