// Run page: loss, gradient norm and per-rank step-time charts (Chart.js), alarms marked.
// Data comes from the JSON API named by #charts[data-api]; nothing is evaluated as HTML.
"use strict";
(function () {
  const section = document.getElementById("charts");
  const status = document.getElementById("charts-status");
  if (!section || typeof Chart === "undefined") {
    return;
  }
  const PALETTE = ["#1849a9", "#067647", "#b54708", "#6927da", "#c11574", "#0e7090",
    "#4e5ba6", "#854a0e", "#3b7c0f", "#9e165f", "#475467", "#155eef"];
  const ALARM = "#b42318";

  function say(text) {
    if (status) {
      status.textContent = text;
    }
  }

  function draw(key, chart, alarms) {
    const canvas = document.getElementById("chart-" + key);
    if (!canvas) {
      return;
    }
    const byNumber = new Map(alarms.map((a) => [a.number, a]));
    const datasets = chart.series.map((s, i) => ({
      type: "line",
      label: s.label,
      data: s.points.map((p) => ({ x: p[0], y: p[1] })),
      borderColor: PALETTE[i % PALETTE.length],
      backgroundColor: PALETTE[i % PALETTE.length],
      borderWidth: 1.5,
      pointRadius: 0,
      spanGaps: false,
    }));
    if (chart.markers.length) {
      datasets.push({
        type: "scatter",
        label: "alarms",
        data: chart.markers.map((m) => ({ x: m.x, y: m.y, alarm: m.alarm })),
        borderColor: ALARM,
        backgroundColor: ALARM,
        pointStyle: "triangle",
        pointRadius: 8,
        pointHoverRadius: 10,
      });
    }
    new Chart(canvas, {
      type: "line",
      data: { datasets: datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        parsing: true,
        interaction: { mode: "nearest", intersect: false },
        scales: {
          x: { type: "linear", title: { display: true, text: "step" } },
          y: { title: { display: true, text: chart.unit } },
        },
        plugins: {
          title: { display: true, text: chart.title },
          legend: { display: datasets.length > 1 },
          tooltip: {
            callbacks: {
              label: function (ctx) {
                const a = ctx.raw && ctx.raw.alarm ? byNumber.get(ctx.raw.alarm) : null;
                if (a) {
                  return "alarm #" + a.number + " " + a.severity + " " + a.rule + ": " + a.message;
                }
                return ctx.dataset.label + ": " + ctx.formattedValue;
              },
            },
          },
        },
        onClick: function (_event, elements, instance) {
          for (const el of elements) {
            const point = instance.data.datasets[el.datasetIndex].data[el.index];
            if (point && point.alarm) {
              window.location.hash = "alarm-" + point.alarm;
              return;
            }
          }
        },
      },
    });
    canvas.dataset.rendered = "true";
    canvas.dataset.markers = String(chart.markers.length);
  }

  fetch(section.dataset.api, { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then((response) => {
      if (!response.ok) {
        throw new Error("the metrics request failed with HTTP " + response.status);
      }
      return response.json();
    })
    .then((data) => {
      for (const key of Object.keys(data.charts)) {
        draw(key, data.charts[key], data.alarms);
      }
      const markers = Object.values(data.charts).reduce((n, c) => n + c.markers.length, 0);
      let text = "Alarms are marked ▲ on the charts (" + markers + " markers); click one for its evidence.";
      if (data.nonfinite.length) {
        text += " " + data.nonfinite.length + " non-finite values (NaN/Inf) are gaps in the lines.";
      }
      if (data.sampled) {
        text += " The run has many metric records: an even sample of them is drawn.";
      }
      say(text);
      section.dataset.rendered = "true";
    })
    .catch((err) => {
      say("The charts could not be drawn: " + err.message);
      section.dataset.rendered = "error";
    });
})();
