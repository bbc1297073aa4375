// Status page charts with uPlot: tasks finished per minute (lines by outcome) and task
// durations (points by kind), from the JSON the page embeds.
"use strict";
(() => {
  const source = document.getElementById("history-data");
  if (!source || !window.uPlot) return;
  const history = JSON.parse(source.textContent);
  const css = getComputedStyle(document.documentElement);
  const palette = ["#2f7fc1", "#c23b3b", "#8a5cc2", "#3c9a5f", "#c48a17", "#1f9aa8", "#b4487f"];
  const text = css.getPropertyValue("--text").trim() || "#222";
  const grid = css.getPropertyValue("--border").trim() || "#ccc";
  const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
  const charts = [];

  function size(element) {
    return { width: Math.max(element.clientWidth - 4, 280), height: 220 };
  }

  function draw(element, series, data) {
    const chart = new uPlot({ ...size(element), series: [{}, ...series], axes: [axis, { ...axis }], legend: { live: false } }, data, element);
    charts.push([chart, element]);
  }

  const outcomes = { succeeded: "#3c9a5f", failed: "#c23b3b", dead: "#8a5cc2", cancelled: "#c48a17" };
  const throughput = document.getElementById("chart-throughput");
  draw(
    throughput,
    Object.keys(history.finished).map((status) => ({ label: status, stroke: outcomes[status] || palette[0], width: 2 })),
    [history.minutes, ...Object.values(history.finished)],
  );

  const kinds = Object.keys(history.durations);
  const durations = document.getElementById("chart-durations");
  if (kinds.length === 0) {
    durations.textContent = "No task finished in this period.";
    durations.classList.add("muted");
  } else {
    const tables = kinds.map((kind) => {
      const points = history.durations[kind];
      return [points.map((p) => p[0]), points.map((p) => p[1])];
    });
    const joined = uPlot.join(tables);
    draw(
      durations,
      kinds.map((kind, i) => ({
        label: `${kind} (s)`, stroke: palette[i % palette.length], paths: () => null,
        points: { show: true, size: 6, fill: palette[i % palette.length] },
      })),
      joined,
    );
  }

  window.addEventListener("resize", () => {
    for (const [chart, element] of charts) chart.setSize(size(element));
  });
})();
