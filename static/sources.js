/* The build form's estimate: with a subject cap typed in, the download the fetch overview table adds up, each
   collection that states its subjects scaled by cap / subjects (as the server's estimate does), others whole. */
(function () {
  "use strict";

  function humanBytes(size) {
    var units = ["B", "kB", "MB", "GB", "TB"], index = 0;
    while (size >= 1000 && index < units.length - 1) { size /= 1000; index += 1; }
    return index ? size.toFixed(1) + " " + units[index] : Math.round(size) + " B";
  }

  function update() {
    var input = document.getElementById("bundle-max-subjects");
    var line = document.querySelector("[data-capped-estimate]");
    if (!input || !line) return;
    var cap = parseInt(input.value, 10);
    if (!(cap > 0)) { line.hidden = true; return; }
    var total = 0;
    document.querySelectorAll("#fetch-overview tr[data-bytes]").forEach(function (row) {
      var bytes = Number(row.getAttribute("data-bytes")), subjects = Number(row.getAttribute("data-subjects")) || 0;
      total += subjects && cap < subjects ? bytes * cap / subjects : bytes;
    });
    line.textContent = "With at most " + cap + " subject" + (cap === 1 ? "" : "s") + " per dataset: about " +
      humanBytes(total) + " (collections that state their subjects shrink to that share; others are taken whole).";
    line.hidden = false;
  }

  document.addEventListener("input", function (event) {
    if (event.target instanceof HTMLInputElement && event.target.id === "bundle-max-subjects") update();
  });
  document.addEventListener("DOMContentLoaded", update);
})();
