/* Imaging-X Portal: small progressive enhancements. Every control works without this file. */
(function () {
  "use strict";

  // Sort select and "open access first" submit their form at once (a submit button covers the no-JS case).
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target instanceof HTMLElement && target.hasAttribute("data-autosubmit") && target.form) {
      target.form.requestSubmit();
    }
  });

  // "Previous page": results pages are linked by an opaque cursor, so going back is the browser's job.
  document.addEventListener("click", function (event) {
    var button = event.target instanceof Element ? event.target.closest("[data-history-back]") : null;
    if (button) {
      event.preventDefault();
      history.back();
    }
  });

  // htmx requests want HTML (errors then come back as the _error.html fragment, not as JSON).
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["Accept"] = "text/html";
  });

  function flash() {
    return document.getElementById("flash");
  }

  // Errors come back as a server-rendered, escaped fragment (templates/_error.html): show it above the
  // results and keep the current results (htmx does not swap error responses, nor push their URL).
  document.addEventListener("htmx:responseError", function (event) {
    var box = flash();
    if (!box) return;
    box.innerHTML = event.detail.xhr.responseText;
  });
  document.addEventListener("htmx:sendError", function () {
    var box = flash();
    if (!box) return;
    box.textContent = "";
    var p = document.createElement("div");
    p.className = "error-box";
    p.textContent = "The server could not be reached. Check your connection and try again.";
    box.appendChild(p);
  });

  // After a swap: clear old errors and tell screen readers how many results there are now.
  document.addEventListener("htmx:afterSettle", function () {
    if (!document.getElementById("search-region")) return;
    var box = flash();
    if (box) box.textContent = "";
    var status = document.getElementById("search-status");
    var heading = document.getElementById("results-heading");
    if (status && heading) status.textContent = heading.textContent.replace(/\s+/g, " ").trim();
  });
})();
