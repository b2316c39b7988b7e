// The staff dashboard's charts: Chart.js (served from static/vendor/chart.js) draws the
// series the page embeds as JSON (#dashboard-data); no inline script, no fetch.
"use strict";

(function () {
  const source = document.getElementById("dashboard-data");
  if (!source || typeof window.Chart === "undefined") {
    return;
  }
  const data = JSON.parse(source.textContent);
  const Chart = window.Chart;
  const labels = data.labels.map(function (iso) {
    const moment = new Date(iso);
    const span = data.labels.length > 100 ? { weekday: "short", hour: "2-digit" } : { hour: "2-digit", minute: "2-digit" };
    return moment.toLocaleString(undefined, span);
  });
  const s = data.series;
  const colors = {
    succeeded: "#2e7d32",
    failed: "#c62828",
    timed_out: "#ef6c00",
    error: "#6a1b9a",
    other: "#90a4ae",
    p50: "#2456c7",
    p95: "#b3261e",
    cpu: "#00838f",
    memory: "#8e24aa",
  };
  const common = {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    interaction: { mode: "index", intersect: false },
    plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
  };
  const perMinute = function (series) {
    return series.map(function (n) { return n / data.bucket_minutes; });
  };

  new Chart(document.getElementById("chart-runs"), {
    type: "bar",
    data: {
      labels: labels,
      datasets: ["succeeded", "failed", "timed_out", "error", "other"].map(function (name) {
        return { label: name.replace("_", " "), data: perMinute(s[name]), backgroundColor: colors[name], stack: "runs" };
      }),
    },
    options: Object.assign({}, common, { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } }),
  });

  new Chart(document.getElementById("chart-duration"), {
    type: "line",
    data: {
      labels: labels,
      datasets: [
        { label: "p50", data: s.p50_ms, borderColor: colors.p50, spanGaps: true, pointRadius: 0 },
        { label: "p95", data: s.p95_ms, borderColor: colors.p95, spanGaps: true, pointRadius: 0 },
      ],
    },
    options: Object.assign({}, common, { scales: { y: { beginAtZero: true } } }),
  });

  new Chart(document.getElementById("chart-rates"), {
    type: "line",
    data: {
      labels: labels,
      datasets: [
        { label: "failed", data: s.failure_rate.map(pct), borderColor: colors.failed, spanGaps: true, pointRadius: 0 },
        { label: "timed out", data: s.timeout_rate.map(pct), borderColor: colors.timed_out, spanGaps: true, pointRadius: 0 },
      ],
    },
    options: Object.assign({}, common, { scales: { y: { beginAtZero: true, suggestedMax: 10, ticks: { callback: function (v) { return v + "%"; } } } } }),
  });

  new Chart(document.getElementById("chart-resources"), {
    type: "line",
    data: {
      labels: labels,
      datasets: [
        { label: "CPU seconds", data: s.cpu_seconds, borderColor: colors.cpu, yAxisID: "cpu", pointRadius: 0 },
        { label: "peak memory (MB)", data: s.memory_peak_mb, borderColor: colors.memory, yAxisID: "memory", pointRadius: 0 },
      ],
    },
    options: Object.assign({}, common, {
      scales: {
        cpu: { position: "left", beginAtZero: true },
        memory: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false } },
      },
    }),
  });

  function pct(rate) {
    return rate === null ? null : Math.round(rate * 1000) / 10;
  }
})();
