// Lineage page: the artifact/run graph drawn by Cytoscape.js from #graph[data-api].
// Labels are drawn on a canvas as text; a click follows the node to its own page.
"use strict";
(function () {
  const container = document.getElementById("graph");
  const status = document.getElementById("graph-status");
  if (!container || typeof cytoscape === "undefined") {
    return;
  }

  function say(text) {
    if (status) {
      status.textContent = text;
    }
  }

  function render(graph) {
    const incoming = new Set(graph.edges.map((e) => e.to));
    const elements = [];
    for (const n of graph.nodes) {
      elements.push({ data: { id: n.id, label: n.label, type: n.type, root: n.id === graph.root ? "yes" : "no" } });
    }
    graph.edges.forEach((e, i) => {
      elements.push({
        data: { id: "e" + i, source: e.from, target: e.to, label: e.relation + " #" + e.entries.join(",") },
      });
    });
    const cy = cytoscape({
      container: container,
      elements: elements,
      style: [
        { selector: "node", style: { label: "data(label)", "font-size": 11, "text-wrap": "ellipsis",
          "text-max-width": 180, "text-valign": "bottom", "text-margin-y": 4, color: "#1d2330" } },
        { selector: "node[type = 'run']", style: { shape: "round-rectangle", "background-color": "#1849a9",
          width: 34, height: 22 } },
        { selector: "node[type = 'artifact']", style: { shape: "ellipse", "background-color": "#98a2b3",
          width: 22, height: 22 } },
        { selector: "node[root = 'yes']", style: { "border-width": 4, "border-color": "#b42318" } },
        { selector: "edge", style: { width: 1.5, "line-color": "#98a2b3", "target-arrow-color": "#98a2b3",
          "target-arrow-shape": "triangle", "curve-style": "bezier", label: "data(label)", "font-size": 9,
          color: "#5d6679", "text-rotation": "autorotate", "text-background-color": "#fff",
          "text-background-opacity": 1 } },
      ],
      layout: {
        name: "breadthfirst",
        directed: true,
        roots: graph.nodes.filter((n) => !incoming.has(n.id)).map((n) => n.id),
        spacingFactor: 1.2,
        padding: 20,
      },
    });
    cy.on("tap", "node", function (evt) {
      const node = evt.target;
      const id = node.id();
      const target = node.data("type") === "run" ? "/run?id=" : "/lineage?subject=";
      window.location.assign(target + encodeURIComponent(id));
    });
    container.dataset.nodes = String(cy.nodes().length);
    container.dataset.edges = String(cy.edges().length);
    container.dataset.rendered = "true";
    say(graph.nodes.length + " nodes, " + graph.edges.length + " edges" +
      (graph.truncated ? " (cut short)" : "") + ". Drag to pan, scroll to zoom.");
  }

  fetch(container.dataset.api, { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then((response) => {
      if (!response.ok) {
        throw new Error("the lineage request failed with HTTP " + response.status);
      }
      return response.json();
    })
    .then(render)
    .catch((err) => {
      say("The graph could not be drawn: " + err.message);
      container.dataset.rendered = "error";
    });
})();
