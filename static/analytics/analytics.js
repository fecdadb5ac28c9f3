/* The analytics page: draws the charts (Chart.js, static/vendor/) from the "analytics-data"
   payload, and shows the From/To dates only for a custom range. The tables beside the charts are
   in the HTML already; this only adds the pictures. Colours come from the CSS variables in
   analytics.css and chat.css, and the charts are drawn again when the system's light or dark
   setting changes. */
(function () {
  "use strict";

  // ---------- The filters: From/To belong to "Custom…" ----------

  const range = document.getElementById("id_range");
  const dates = document.getElementById("custom-dates");
  if (range && dates) {
    const showDates = () => { dates.hidden = range.value !== "custom"; };
    range.addEventListener("change", () => {
      showDates();
      if (range.value === "custom") document.getElementById("id_start").focus();
    });
    dates.addEventListener("change", () => { range.value = "custom"; });
    showDates();
  }

  // ---------- Numbers for people, as the tables say them ----------

  function compact(n) {
    if (n === null || n === undefined) return "–";
    for (const [size, unit] of [[1e9, "B"], [1e6, "M"], [1e3, "k"]]) {
      if (Math.abs(n) >= size) {
        const scaled = n / size;
        return (Math.abs(scaled) < 10 ? scaled.toFixed(1) : scaled.toFixed(0)) + " " + unit;
      }
    }
    return String(Math.round(n));
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 10000) return (ms / 1000).toFixed(1) + " s";
    if (ms < 60000) return Math.round(ms / 1000) + " s";
    return (ms / 60000).toFixed(1) + " min";
  }

  // ---------- The charts ----------

  const payload = document.getElementById("analytics-data");
  if (!payload || !window.Chart) return;
  const data = JSON.parse(payload.textContent);
  const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");
  const darkScheme = window.matchMedia("(prefers-color-scheme: dark)");

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function baseOptions(formatValue) {
    return {
      responsive: true,
      maintainAspectRatio: false,
      animation: reducedMotion.matches ? false : { duration: 300 },
      interaction: { mode: "index", intersect: false },
      plugins: {
        legend: { position: "bottom", labels: { boxWidth: 12, boxHeight: 12 } },
        tooltip: {
          callbacks: {
            label: (item) => `${item.dataset.label}: ${formatValue(item.parsed[item.chart.options.indexAxis === "y" ? "x" : "y"])}`,
          },
        },
      },
      scales: {
        x: { grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 12 } },
        y: { beginAtZero: true, ticks: { callback: (value) => formatValue(value) } },
      },
    };
  }

  function counts(options) {
    options.scales.y.ticks.precision = 0; // no "2.5 requests"
    return options;
  }

  function stacked(options) {
    options.scales.x.stacked = true;
    options.scales.y.stacked = true;
    return options;
  }

  function bars(label, values, color) {
    return { label, data: values, backgroundColor: color, borderWidth: 0, maxBarThickness: 48 };
  }

  function line(label, values, color, dashed) {
    const many = values.length > 48;
    if (dashed && /^#[0-9a-f]{6}$/i.test(color)) color += "99"; // p95: dashed and lighter
    return {
      label, data: values, borderColor: color, backgroundColor: color,
      borderWidth: 2, borderDash: dashed ? [6, 4] : [], tension: 0.2, spanGaps: false,
      pointRadius: many ? 0 : 2, pointHoverRadius: 4,
    };
  }

  // The legend draws each series as a short line, dashed for p95 as in the chart.
  function dashedLegend(options) {
    Object.assign(options.plugins.legend.labels, { usePointStyle: true, pointStyle: "line", pointStyleWidth: 22 });
    return options;
  }

  const time = data.over_time;
  const charts = {
    "chart-completions": () => ({
      type: "bar",
      data: {
        labels: time.label,
        datasets: [
          bars("Success", time.success, cssVar("--c-success")),
          bars("Error", time.error, cssVar("--c-error")),
          bars("Cancelled", time.cancelled, cssVar("--c-cancelled")),
          bars("Refused", time.refused, cssVar("--c-refused")),
        ],
      },
      options: counts(stacked(baseOptions(compact))),
    }),
    "chart-tokens": () => ({
      type: "bar",
      data: {
        labels: time.label,
        datasets: [
          bars("Input", time.input_tokens, cssVar("--c-input")),
          bars("Output", time.output_tokens, cssVar("--c-output")),
        ],
      },
      options: stacked(baseOptions(compact)),
    }),
    "chart-latency": () => ({
      type: "line",
      data: {
        labels: time.label,
        datasets: [
          line("Latency p50", time.latency_p50, cssVar("--c-latency"), false),
          line("Latency p95", time.latency_p95, cssVar("--c-latency"), true),
          line("First token p50", time.ttft_p50, cssVar("--c-ttft"), false),
          line("First token p95", time.ttft_p95, cssVar("--c-ttft"), true),
        ],
      },
      options: dashedLegend(baseOptions(duration)),
    }),
    "chart-people": () => breakdown(data.people),
    "chart-teams": () => breakdown(data.teams),
    "chart-models": () => breakdown(data.models),
  };

  function breakdown(rows) {
    const options = stacked(baseOptions(compact));
    options.indexAxis = "y";
    options.scales = {
      x: { stacked: true, beginAtZero: true, ticks: { precision: 0, callback: (value) => compact(value) } },
      y: { stacked: true, grid: { display: false } },
    };
    return {
      type: "bar",
      data: {
        labels: rows.label,
        datasets: [
          bars("No error", rows.requests.map((n, i) => n - rows.error[i] - rows.refused[i]), cssVar("--c-success")),
          bars("Error", rows.error, cssVar("--c-error")),
          bars("Refused", rows.refused, cssVar("--c-refused")),
        ],
      },
      options,
    };
  }

  // Horizontal bars get the height their rows need, so 2 models are not stretched over 280 px.
  for (const box of document.querySelectorAll(".chart-box-bars")) {
    const rows = Number(box.dataset.bars) || 1;
    box.style.height = Math.max(140, 56 + rows * 26) + "px";
  }

  const drawn = [];

  function draw() {
    while (drawn.length) drawn.pop().destroy();
    Chart.defaults.color = cssVar("--muted");
    Chart.defaults.borderColor = cssVar("--border");
    Chart.defaults.font.family = cssVar("--font");
    for (const [id, config] of Object.entries(charts)) {
      const canvas = document.getElementById(id);
      if (canvas) drawn.push(new Chart(canvas, config()));
    }
  }

  draw();
  darkScheme.addEventListener("change", draw);
})();
