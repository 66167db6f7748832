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
    var region = document.getElementById("search-region");
    if (!region) return;
    var box = flash();
    if (box) box.textContent = "";
    var status = document.getElementById("search-status");
    var heading = document.getElementById("results-heading");
    if (status && heading) status.textContent = heading.textContent.replace(/\s+/g, " ").trim();
  });

  // -- search page: what a partial reply must not take from the user ----------------------------------------
  // A reply replaces #results and, out of band, the facet panels and the form's fields. Kept across it: which
  // facets the user opened or closed, the focused facet value (keyboard users stay where they were), and text
  // typed in the search box while the request ran.
  var kept = null;
  // The facet value clicked last, and where it was on screen: the panels above it may grow or shrink with the
  // new counts, so after the swap its box (the sidebar, the drawer) scrolls to put it back under the finger.
  var clicked = null;
  document.addEventListener("click", function (event) {
    var link = event.target instanceof Element ? event.target.closest("a.facet-value") : null;
    clicked = link ? [link.closest("details.facet").id, link.getAttribute("data-value"), link.getBoundingClientRect().top] : null;
  }, true);
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (!document.getElementById("search-region") || !event.detail.shouldSwap) return;
    var open = {};
    document.querySelectorAll("details.facet[id]").forEach(function (d) { open[d.id] = d.open; });
    var active = document.activeElement;
    var value = active && active.matches && active.matches("a.facet-value") ? active : null;
    var q = document.getElementById("q");
    kept = {
      clicked: clicked,
      open: open,
      focus: value ? [value.closest("details.facet").id, value.getAttribute("data-value")] : null,
      typed: q && q === active && q.value !== q.defaultValue ? q.value : null,
    };
  });
  // htmx fires afterSwap once per swapped element (out-of-band ones too), all after every swap is done: the
  // first one restores what was kept. Writes happen here; reading the layout waits for the next frame, where
  // the browser lays the page out once anyway (reading it now would force an extra layout).
  document.addEventListener("htmx:afterSwap", function (event) {
    var region = document.getElementById("search-region");
    if (!region || !kept) return;
    var was = kept;
    kept = null;
    var results = document.getElementById("results");
    if (results) region.setAttribute("data-count", results.getAttribute("data-count"));
    Object.keys(was.open).forEach(function (id) {
      var details = document.getElementById(id);
      // a facet that gained a selection stays open even if the user had closed it
      if (details && !details.querySelector(".selected")) details.open = was.open[id];
    });
    var q = document.getElementById("q");
    if (q && was.typed !== null) q.value = was.typed;
    var resultsChanged = event.detail.target && event.detail.target.id === "results";
    clicked = null;
    requestAnimationFrame(function () {
      if (was.clicked) {
        var again = facetValue(was.clicked[0], was.clicked[1]);
        var box = document.getElementById("filters");
        if (again && box) box.scrollTop += again.getBoundingClientRect().top - was.clicked[2];
      }
      // The results changed: their top must be in view (a short list would otherwise leave the user at the
      // footer). Behind an open drawer this readies the page for "Show N results".
      if (resultsChanged && results) {
        var top = results.getBoundingClientRect().top;
        if (top < 0 || top > window.innerHeight * 0.6) scrollToResults();
      }
      if (q && was.typed !== null) q.focus({ preventScroll: true });
      if (was.focus) {
        var link = facetValue(was.focus[0], was.focus[1]);
        if (link) link.focus({ preventScroll: true });
      }
    });
  });

  // Before htmx replaces the results and the facet panels it walks every old element, firing two events for
  // each (about 1,300 elements, 2,600 events: a third of a click's time in the browser). The new address is
  // pushed just before the swap (after any copy of the page kept for Back), so the old contents can go then:
  // their listeners live on the elements themselves (forms, boosted links) and leave with them.
  // Only what this reply replaces: #results brings the panels out of band; "show all" replaces the panels.
  var replaced = [];
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.shouldSwap && event.detail.target ? event.detail.target.id : "";
    replaced = { results: ["results", "facet-panels"], "facet-panels": ["facet-panels"] }[target] || [];
  });
  document.addEventListener("htmx:pushedIntoHistory", function () {
    replaced.forEach(function (id) {
      var old = document.getElementById(id);
      if (old) old.textContent = "";
    });
    replaced = [];
  });

  function facetValue(facetId, value) {
    return document.querySelector("#" + CSS.escape(facetId) + ' a.facet-value[data-value="' + CSS.escape(value) + '"]');
  }

  function scrollToResults() {
    var results = document.getElementById("results");
    if (results) window.scrollTo({ top: results.getBoundingClientRect().top + window.scrollY - 8, behavior: "instant" });
  }

  // -- the filters drawer on phones -----------------------------------------------------------------------
  // "Filters" opens it, "Show N results" (or x, or Escape) closes it and shows the results from the top.
  // Without this script the same links work through #filters / #results and CSS :target.
  function setDrawer(open) {
    var region = document.getElementById("search-region");
    if (!region) return;
    region.classList.toggle("filters-open", open);
    document.documentElement.classList.toggle("drawer-lock", open);
    document.querySelectorAll("[data-open-filters]").forEach(function (b) {
      b.setAttribute("aria-expanded", open ? "true" : "false");
    });
    if (location.hash === "#filters") history.replaceState(history.state, "", location.pathname + location.search);
    if (open) {
      var drawer = document.getElementById("filters");
      if (drawer) { drawer.scrollTop = 0; drawer.focus({ preventScroll: true }); }
    } else {
      scrollToResults();
      var heading = document.getElementById("results-heading");
      if (heading) heading.focus({ preventScroll: true });
    }
  }
  document.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    if (target.closest("[data-open-filters]")) {
      event.preventDefault();
      setDrawer(true);
    } else if (target.closest("[data-close-filters]")) {
      event.preventDefault();
      setDrawer(false);
    }
  });
  document.addEventListener("keydown", function (event) {
    var region = document.getElementById("search-region");
    if (event.key === "Escape" && region && region.classList.contains("filters-open")) setDrawer(false);
  });
})();
