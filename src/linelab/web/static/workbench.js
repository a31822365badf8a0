// Draws every figure the server embedded in the page (JSON beside a .plot div) with the
// package's plotly.js; clicking a point that carries a unit id opens that unit's page.
"use strict";
(function () {
  const UNIT = /^[A-Za-z0-9][\w.:-]*$/;
  function draw(div) {
    const data = document.getElementById(div.dataset.figure);
    if (!data) return;
    const fig = JSON.parse(data.textContent);
    fig.layout = Object.assign({autosize: true}, fig.layout || {});
    Plotly.newPlot(div, fig.data || [], fig.layout, {responsive: true, displaylogo: false}).then(function () {
      div.dataset.rendered = "1";
    });
    div.on("plotly_click", function (ev) {
      const point = ev.points && ev.points[0];
      const id = point && point.customdata;
      if (typeof id === "string" && id.startsWith("/")) { window.location = id; return; }
      if (typeof id !== "string" || !UNIT.test(id)) return;
      if (/^PRB-/.test(id)) { window.location = "/problem/" + encodeURIComponent(id); return; }
      if (point.data.type === "bar") return;
      window.location = "/unit/" + encodeURIComponent(id);
    });
  }
  document.querySelectorAll("[data-figure]").forEach(draw);
})();
