/* MDFP plan pages.
   /plans/new: the preset selector loads on change; quick filters rewrite the JSON editor so both stay one spec.
   /plans/{id}: draws each phase's charts (Apache ECharts) from the plan JSON embedded in #plan-charts.
   Without JavaScript the form still submits either source and every number is in the tables. */
(function () {
  "use strict";

  // -- the form ------------------------------------------------------------------------------------------
  var presetForm = document.getElementById("preset-form");
  if (presetForm) {
    var select = presetForm.querySelector("select");
    select.addEventListener("change", function () { presetForm.submit(); });
  }

  var planForm = document.getElementById("plan-form");
  var editor = document.getElementById("field-spec_json");
  var SELECTION = ["min_datasets_per_modality", "min_orgs_per_modality", "max_datasets", "max_total_images"];

  function checked(name) {
    return Array.prototype.map.call(
      planForm.querySelectorAll('input[type="checkbox"][name="' + name + '"]:checked'),
      function (input) { return input.value; }
    );
  }
  function flag(name) {
    var input = planForm.querySelector('input[name="' + name + '"]');
    return !!(input && input.checked);
  }
  function number(name) {
    var input = planForm.querySelector('input[name="' + name + '"]');
    var text = input ? input.value.trim() : "";
    if (text === "") return null;
    var value = Number(text);
    return Number.isFinite(value) ? value : text; // leave bad input as typed: the server says what is wrong
  }
  function orNull(list) { return list.length ? list : null; }

  function specFromFilters() {
    var anatomy = planForm.querySelector('input[name="anatomy_whitelist"]').value
      .split(",").map(function (s) { return s.trim(); }).filter(Boolean);
    var selection = { enable: flag("selection.enable") };
    SELECTION.forEach(function (key) { selection[key] = number("selection." + key); });
    return {
      goal: planForm.querySelector('input[name="goal"]').value.trim(),
      target_modalities: checked("target_modalities"),
      target_task_types: checked("target_task_types"),
      target_dims: checked("target_dims"),
      allow_3d_as_2d_sources: flag("allow_3d_as_2d_sources"),
      anatomy_whitelist: orNull(anatomy),
      licence_allowlist: orNull(checked("licence_allowlist")),
      access_allowlist: orNull(checked("access_allowlist")),
      include_unlabeled: flag("include_unlabeled"),
      prefer_labeled: flag("prefer_labeled"),
      min_valid_images_per_dataset: number("min_valid_images_per_dataset") || 0,
      release_year_min: number("release_year_min"),
      selection: selection
    };
  }

  if (planForm && editor) {
    var filters = planForm.querySelector('section[aria-labelledby="filters-heading"]');
    var rewrite = function () { editor.value = JSON.stringify(specFromFilters(), null, 2); };
    filters.addEventListener("change", rewrite);
    filters.addEventListener("input", function (event) {
      if (event.target.type === "text" || event.target.type === "number") rewrite();
    });
  }

  // -- the plan's charts ---------------------------------------------------------------------------------
  var dataElement = document.getElementById("plan-charts");
  if (!dataElement || typeof window.echarts === "undefined") return;
  var byPhase = JSON.parse(dataElement.textContent);

  var TEXT = "#1f2328";
  var MUTED = "#57606a";
  var GRID = "#eaeef2";
  var PALETTE = ["#0b5cad", "#b35900", "#1a7f37", "#8250df", "#a40e26", "#0a7b83", "#6e7781", "#bf3989", "#4d6b00", "#953800"];
  var SERIES_COLOURS = {
    "Labeled": "#0b5cad", "Unlabeled": "#e3a44f", "Unknown": "#afb8c1",
    "Aligned": "#0b5cad", "Not aligned": "#afb8c1",
    "Known organisations": "#1a7f37", "Datasets of unknown organisation": "#afb8c1"
  };
  var measure = document.createElement("canvas").getContext("2d");
  var drawn = [];
  // ECharts measures text with the font it is given: "inherit" would be measured as its default sans-serif
  // and drawn wider, so legends overlap and labels clip. Hand it the page's real font stack.
  var FONT = getComputedStyle(document.body).fontFamily;

  function textWidth(text) {
    measure.font = "12px " + FONT;
    return Math.ceil(measure.measureText(String(text)).width);
  }
  function formatValue(value) {
    if (value === null || value === undefined) return "n/a";
    return Number.isInteger(value) ? Number(value).toLocaleString() : String(Math.round(value * 1e5) / 1e5);
  }
  function compact(value) {
    var abs = Math.abs(value);
    if (abs >= 1e6) return (value / 1e6).toLocaleString(undefined, { maximumFractionDigits: 1 }) + "M";
    if (abs >= 1e4) return (value / 1e3).toLocaleString(undefined, { maximumFractionDigits: 0 }) + "k";
    return Number(value).toLocaleString(undefined, { maximumFractionDigits: 2 });
  }
  function colour(name, i) { return SERIES_COLOURS[name] || PALETTE[i % PALETTE.length]; }

  function base(chart) {
    return {
      animationDuration: 300,
      textStyle: { fontFamily: FONT, color: TEXT },
      tooltip: {
        trigger: chart.kind === "pie" ? "item" : "axis",
        axisPointer: { type: "shadow" },
        valueFormatter: formatValue
      },
      legend: chart.series.length > 1 ? { top: 0, type: "scroll", textStyle: { color: TEXT } } : undefined
    };
  }

  function barOption(chart, horizontal, width) {
    var option = base(chart);
    var stacked = chart.kind === "stacked_bar";
    var labelSpace = horizontal
      ? Math.min(Math.max.apply(null, chart.categories.map(textWidth).concat([20])), 200) + 12
      : 0;
    var valueAxis = {
      type: "value", name: chart.value_label, nameLocation: "middle", nameGap: horizontal ? 26 : 44,
      nameTextStyle: { color: MUTED }, axisLabel: { color: MUTED, formatter: compact }, splitLine: { lineStyle: { color: GRID } }
    };
    var categoryAxis = {
      type: "category", data: horizontal ? chart.categories.slice().reverse() : chart.categories,
      axisLabel: horizontal
        ? { color: TEXT, width: 200, overflow: "truncate" }
        : {
          color: TEXT, interval: 0, rotate: chart.categories.length > 6 ? 30 : 0, overflow: "truncate",
          width: chart.categories.length > 6 ? 110 : Math.max(60, (width - 80) / chart.categories.length - 6)
        },
      axisTick: { show: false }
    };
    option.grid = {
      left: horizontal ? labelSpace : 56, right: 24, top: chart.series.length > 1 ? 34 : 14,
      bottom: horizontal ? 40 : (chart.categories.length > 6 ? 70 : 36), containLabel: false
    };
    option.xAxis = horizontal ? valueAxis : categoryAxis;
    option.yAxis = horizontal ? categoryAxis : valueAxis;
    option.series = chart.series.map(function (s, i) {
      var values = horizontal ? s.values.slice().reverse() : s.values;
      return {
        type: "bar", name: s.name, data: values, stack: stacked ? (s.stack || "all") : undefined,
        barMaxWidth: horizontal ? 18 : 42, itemStyle: { color: colour(s.name, i) },
        label: { show: chart.series.length === 1, position: horizontal ? "right" : "top", color: MUTED, formatter: function (p) { return formatValue(p.value); } }
      };
    });
    return option;
  }

  function pieOption(chart) {
    var option = base(chart);
    var counts = {};
    chart.categories.forEach(function (name, i) { counts[name] = chart.series[0].values[i]; });
    option.legend = {
      type: "scroll", orient: "vertical", right: 0, top: "middle", textStyle: { color: TEXT },
      formatter: function (name) { return name + "  " + formatValue(counts[name]); }
    };
    option.series = [{
      type: "pie", radius: ["38%", "68%"], center: ["36%", "52%"], avoidLabelOverlap: true,
      label: { show: false },
      data: chart.categories.map(function (name, i) {
        return { name: name, value: chart.series[0].values[i], itemStyle: { color: colour(name, i) } };
      })
    }];
    return option;
  }

  function optionFor(chart, width) {
    if (chart.kind === "pie") return pieOption(chart);
    var horizontal = chart.kind === "horizontal_bar" || (chart.kind === "stacked_bar" && chart.categories.length > 8);
    return barOption(chart, horizontal, width);
  }

  Object.keys(byPhase).forEach(function (phase) {
    byPhase[phase].forEach(function (chart) {
      var element = document.getElementById("chart-" + phase + "-" + chart.id);
      if (!element) return;
      var horizontal = chart.kind === "horizontal_bar" || (chart.kind === "stacked_bar" && chart.categories.length > 8);
      if (horizontal) element.style.height = Math.max(240, chart.categories.length * 22 + 80) + "px";
      if (!chart.categories.length) {
        element.textContent = "Nothing to draw: no rows.";
        element.classList.add("hint");
        element.style.height = "auto";
        return;
      }
      var instance = echarts.init(element, null, { renderer: "svg" });
      instance.setOption(optionFor(chart, element.clientWidth));
      element.setAttribute("data-drawn", "true");
      drawn.push(instance);
    });
  });

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { drawn.forEach(function (c) { c.resize(); }); }, 150);
  });
})();
