/* Statistics page: draws the charts from the JSON embedded in the page (#stats-data) with Apache ECharts.
   Every bar and tile links to the matching search. Without JavaScript the tables below each chart remain. */
(function () {
  "use strict";

  var dataElement = document.getElementById("stats-data");
  if (!dataElement || typeof window.echarts === "undefined") return;
  var data = JSON.parse(dataElement.textContent);
  var dist = data.distributions;

  var BLUE = "#0b5cad";
  var ACCESS_COLOURS = { open: "#1a7f37", registration: "#b35900", application: "#a40e26", unknown: "#6e7781" };
  var PALETTE = ["#0b5cad", "#1a7f37", "#b35900", "#8250df", "#a40e26", "#0a7b83", "#6e7781", "#bf3989", "#4d6b00", "#953800"];
  var TEXT = "#1f2328";
  var MUTED = "#57606a";
  var charts = [];
  var LABEL_MAX = 190;
  var measure = document.createElement("canvas").getContext("2d");

  // Axis labels get exactly the room they need (ECharts' own estimate clips long names at the left edge).
  function textWidth(text) {
    measure.font = "12px " + getComputedStyle(document.body).fontFamily;
    return Math.ceil(measure.measureText(String(text)).width);
  }

  function go(url) {
    if (url) window.location.href = url;
  }

  function points(facet, options) {
    options = options || {};
    var rows = facet.results.filter(function (v) {
      return v.count > 0 && (options.skip || []).indexOf(v.value) === -1;
    });
    if (options.sortByValue) rows = rows.slice().sort(function (a, b) { return b.count - a.count; });
    if (options.top) rows = rows.slice(0, options.top);
    return rows.map(function (v) {
      var point = { value: v.count, name: v.label, url: v.toggle_url, id: v.value };
      if (options.colours && options.colours[v.value]) point.itemStyle = { color: options.colours[v.value] };
      return point;
    });
  }

  function baseOption() {
    return {
      animationDuration: 400,
      textStyle: { fontFamily: "inherit", color: TEXT },
      tooltip: {
        trigger: "item",
        formatter: function (p) {
          return echarts.format.encodeHTML(p.name) + ": <b>" + Number(p.value).toLocaleString() + "</b> datasets";
        }
      }
    };
  }

  function horizontalBars(points) {
    var option = baseOption();
    var reversed = points.slice().reverse(); // largest at the top
    var longest = Math.max.apply(null, reversed.map(function (p) { return textWidth(p.name); }).concat([20]));
    option.grid = { left: Math.min(longest, LABEL_MAX) + 14, right: 48, top: 8, bottom: 28, outerBoundsMode: "none" };
    option.xAxis = { type: "value", axisLabel: { color: MUTED }, splitLine: { lineStyle: { color: "#eaeef2" } } };
    option.yAxis = {
      type: "category",
      data: reversed.map(function (p) { return p.name; }),
      axisLabel: { color: TEXT, width: LABEL_MAX, overflow: "truncate" },
      axisTick: { show: false }
    };
    option.series = [{
      type: "bar", data: reversed, barMaxWidth: 22, cursor: "pointer",
      itemStyle: { color: BLUE, borderRadius: [0, 3, 3, 0] },
      label: { show: true, position: "right", color: MUTED, formatter: function (p) { return Number(p.value).toLocaleString(); } },
      emphasis: { itemStyle: { color: "#084a8c" } }
    }];
    return option;
  }

  function verticalBars(points, extra) {
    var option = baseOption();
    var top = Math.max.apply(null, points.map(function (p) { return p.value; }).concat([1]));
    option.grid = { left: textWidth(top.toLocaleString()) + 18, right: 16, top: 24, bottom: 28, outerBoundsMode: "none" };
    option.xAxis = {
      type: "category",
      data: points.map(function (p) { return p.name; }),
      axisLabel: { color: TEXT, interval: (extra && extra.labelInterval) || 0, hideOverlap: true },
      axisTick: { alignWithLabel: true }
    };
    option.yAxis = { type: "value", axisLabel: { color: MUTED }, splitLine: { lineStyle: { color: "#eaeef2" } } };
    option.series = [{
      type: "bar", data: points, barMaxWidth: 56, cursor: "pointer",
      itemStyle: { color: BLUE, borderRadius: [3, 3, 0, 0] },
      label: { show: !(extra && extra.noLabels), position: "top", color: MUTED },
      emphasis: { itemStyle: { color: "#084a8c" } }
    }];
    return option;
  }

  function yearChart(facet) {
    var rows = facet.results
      .filter(function (v) { return /^\d+$/.test(v.value) && v.count > 0; })
      .sort(function (a, b) { return Number(a.value) - Number(b.value); });
    var byYear = {};
    rows.forEach(function (v) { byYear[v.value] = v; });
    var pts = [];
    if (rows.length) {
      // Every year from the first to the last, so gaps show as gaps rather than disappearing.
      for (var y = Number(rows[0].value); y <= Number(rows[rows.length - 1].value); y++) {
        var v = byYear[String(y)];
        pts.push(v ? { value: v.count, name: v.label, url: v.toggle_url } : { value: 0, name: String(y) });
      }
    }
    var option = verticalBars(pts, { noLabels: true });
    option.tooltip.trigger = "axis";
    option.tooltip.axisPointer = { type: "shadow" };
    option.tooltip.formatter = function (items) {
      var p = items[0];
      return echarts.format.encodeHTML(p.name) + ": <b>" + Number(p.value).toLocaleString() + "</b> datasets";
    };
    option.series.push({
      type: "line", data: pts, smooth: true, symbol: "circle", symbolSize: 6, cursor: "pointer",
      itemStyle: { color: "#b35900" }, lineStyle: { width: 2 }, z: 3
    });
    return option;
  }

  // The service's taxonomy puts tasks and organs side by side under each modality; a dataset counts in both,
  // so they become two groups ("Tasks", "Organs") that the treemap sizes separately.
  function taxonomyNodes(node, depth, path) {
    var out = { name: node.name, value: node.value, count: node.value, url: node.url, path: path.concat([node.name]) };
    var children = node.children || [];
    if (depth === 2 && children.length) {
      var groups = [["task", "Tasks"], ["anatomy", "Organs"]].map(function (pair) {
        var leaves = children.filter(function (c) { return c.kind === pair[0]; }).map(function (c) {
          return { name: c.name, value: c.value, count: c.value, url: c.url, path: out.path.concat([pair[1], c.name]) };
        });
        var sum = leaves.reduce(function (s, l) { return s + l.value; }, 0);
        return { name: pair[1], value: sum, count: null, url: node.url, path: out.path.concat([pair[1]]), children: leaves };
      }).filter(function (g) { return g.children.length; });
      out.children = groups;
    } else if (children.length) {
      out.children = children.map(function (c) { return taxonomyNodes(c, depth + 1, out.path); });
    }
    return out;
  }

  function describeNode(node) {
    var current = document.getElementById("taxonomy-current");
    if (!current || !node) return;
    current.textContent = "";
    var label = document.createElement("span");
    var trail = (node.path || [node.name]).slice(1).join(" › ") || "All datasets";
    label.textContent = trail + (node.count != null ? ": " + Number(node.count).toLocaleString() + " " : " ");
    current.appendChild(label);
    var link = document.createElement("a");
    link.href = node.url;
    link.textContent = "Open this selection in search →";
    current.appendChild(link);
  }

  // One colour per modality, the same in every dimensionality (CT is always the same blue).
  var modalityColours = {};
  function modalityColour(url) {
    var match = /[?&]modality=([^&]+)/.exec(url || "");
    var key = match ? match[1] : "";
    if (!(key in modalityColours)) {
      modalityColours[key] = PALETTE[Object.keys(modalityColours).length % PALETTE.length];
    }
    return modalityColours[key];
  }

  function colourModalities(nodes, depth) {
    (nodes || []).forEach(function (node) {
      if (depth === 2) node.itemStyle = { color: modalityColour(node.url) };
      colourModalities(node.children, depth + 1);
    });
  }

  function taxonomyChart(root) {
    var dimLabels = {};
    ((dist.dim || {}).results || []).forEach(function (v) { dimLabels[v.value] = v.label; });
    (root.children || []).forEach(function (d) { d.name = dimLabels[d.name] || d.name; });
    var tree = taxonomyNodes(root, 0, []);
    colourModalities(tree.children, 1);
    var option = baseOption();
    option.tooltip.formatter = function (p) {
      var d = p.data || {};
      var head = echarts.format.encodeHTML((d.path || [p.name]).slice(1).join(" › ") || "All datasets");
      var hint = d.children ? "click to zoom in" : "click to open the search";
      var count = d.count == null ? "" : ": <b>" + Number(d.count).toLocaleString() + "</b>";
      return head + count + "<br><span style='color:" + MUTED + "'>" + hint + "</span>";
    };
    option.series = [{
      type: "treemap",
      name: "All datasets",
      data: tree.children,
      leafDepth: 2,
      drillDownIcon: "",
      roam: false,
      nodeClick: "zoomToNode",
      top: 34, left: 0, right: 0, bottom: 0,
      breadcrumb: {
        show: true, top: 0, left: 0, height: 24,
        itemStyle: { color: "#eef3f9", borderColor: "#c7d3e0", textStyle: { color: TEXT } },
        emphasis: { itemStyle: { color: "#d4e5f7" } }
      },
      label: {
        show: true, position: "insideTopLeft", padding: [4, 6], color: "#fff", fontSize: 12, lineHeight: 16,
        overflow: "truncate",
        formatter: function (p) {
          return p.name + (p.data.count != null ? "\n" + Number(p.data.count).toLocaleString() : "");
        }
      },
      upperLabel: {
        show: true, height: 22, color: "#fff", fontWeight: "bold", padding: [0, 6], overflow: "truncate",
        formatter: function (p) {
          return p.name + (p.data.count != null ? "  ·  " + Number(p.data.count).toLocaleString() : "");
        }
      },
      levels: [
        { itemStyle: { borderWidth: 0, gapWidth: 6 }, upperLabel: { show: false } },
        { color: ["#2f3e52"], itemStyle: { borderWidth: 3, gapWidth: 2, borderColor: "#2f3e52" }, upperLabel: { show: true } },
        { itemStyle: { borderWidth: 2, gapWidth: 1, borderColor: "#fff" }, upperLabel: { show: true } },
        { itemStyle: { borderWidth: 2, gapWidth: 1, borderColor: "#3b4b5f" }, upperLabel: { show: true } },
        { itemStyle: { borderWidth: 1, gapWidth: 1, borderColor: "#fff" } }
      ]
    }];
    return { option: option, tree: tree };
  }

  function draw(id, option, onClick) {
    var element = document.getElementById("chart-" + id);
    if (!element) return null;
    var chart = echarts.init(element, null, { renderer: "svg" });
    chart.setOption(option);
    chart.on("click", onClick || function (p) { go(p.data && p.data.url); });
    charts.push(chart);
    element.setAttribute("data-drawn", "true");
    return chart;
  }

  function sizeFor(id, count) {
    var element = document.getElementById("chart-" + id);
    if (element) element.style.height = Math.max(220, count * 24 + 40) + "px";
  }

  var horizontal = {
    modality: points(dist.modality || { results: [] }),
    task: points(dist.task || { results: [] }),
    anatomy: points(dist.anatomy || { results: [] }, { skip: ["whole_body"], sortByValue: true, top: 15 }),
    host: points(dist.host || { results: [] })
  };
  Object.keys(horizontal).forEach(function (id) {
    if (!dist[id]) return;
    sizeFor(id, horizontal[id].length);
    draw(id, horizontalBars(horizontal[id]));
  });
  if (dist.dim) draw("dim", verticalBars(points(dist.dim)));
  if (dist.access) draw("access", verticalBars(points(dist.access, { colours: ACCESS_COLOURS })));
  if (dist.size) draw("size", verticalBars(points(dist.size)));
  if (dist.labeled) draw("labeled", verticalBars(points(dist.labeled)));
  if (dist.year) draw("year", yearChart(dist.year));

  if (data.taxonomy) {
    var taxonomy = taxonomyChart(data.taxonomy);
    describeNode(taxonomy.tree);
    draw("taxonomy", taxonomy.option, function (p) {
      var node = p.data;
      if (!node) {
        // the breadcrumb's first item (the root) carries no data
        describeNode(taxonomy.tree);
        return;
      }
      if (node.children && node.children.length) {
        describeNode(node); // the treemap zooms in by itself
      } else {
        go(node.url);
      }
    });
  }

  // Charts drawn: the tables become optional reading (still one click away, and always in the page).
  document.querySelectorAll("details.numbers[open]").forEach(function (details) {
    details.removeAttribute("open");
  });

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      charts.forEach(function (c) { c.resize(); });
    }, 150);
  });
})();
