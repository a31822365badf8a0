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

  // Live pages (data-refresh="SECONDS" on <main>): fetch the page again and swap the parts marked
  // data-live, so new units, problems and yields show without a reload.
  const main = document.querySelector("main[data-refresh]");
  if (!main) return;
  async function refresh() {
    try {
      const r = await fetch(window.location.href, {headers: {"accept": "text/html"}});
      if (!r.ok) return;
      const fresh = new DOMParser().parseFromString(await r.text(), "text/html");
      document.querySelectorAll("[data-live]").forEach(function (old) {
        const next = fresh.getElementById(old.id);
        if (!next || next.innerHTML === old.innerHTML) return;
        old.replaceWith(next);
        next.querySelectorAll("[data-figure]").forEach(draw);
      });
      main.dataset.refreshed = String(Date.now());
    } catch (e) { /* the server is away for a moment: try again at the next tick */ }
  }
  setInterval(refresh, 1000 * Number(main.dataset.refresh));
})();
