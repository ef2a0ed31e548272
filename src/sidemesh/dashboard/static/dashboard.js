// sidemesh dashboard: polls /api/graph and draws the service graph in SVG.
// Every value from the server is placed with textContent or setAttribute, never parsed as
// HTML, so a hostile workload name is shown as the text it is.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = 2000;
const WIDTH = 960, HEIGHT = 620, NODE_RADIUS = 36;
const MAX_LABEL = 64; // characters under a node; the full name is in its tooltip and the table

function svg(tag, attributes, parent) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    element.setAttribute(name, String(value));
  }
  if (parent) parent.appendChild(element);
  return element;
}

function text(tag, attributes, content, parent) {
  const element = svg(tag, attributes, parent);
  element.textContent = content;
  return element;
}

function health(edge) {
  if (!(edge.rate > 0) || edge.successRatio === null) return "idle";
  if (edge.successRatio >= 0.99) return "ok";
  if (edge.successRatio >= 0.95) return "warn";
  return "bad";
}

function layout(nodes) {
  const positions = new Map();
  const count = nodes.length;
  const radius = count > 1 ? Math.min(WIDTH, HEIGHT) / 2 - NODE_RADIUS - 40 : 0;
  nodes.forEach((node, index) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * index) / Math.max(count, 1);
    positions.set(node.id, {
      x: WIDTH / 2 + radius * Math.cos(angle) * 1.35,
      y: HEIGHT / 2 + radius * Math.sin(angle),
    });
  });
  return positions;
}

function drawLock(parent, x, y) {
  const lock = svg("g", { class: "lock", transform: `translate(${x},${y})` }, parent);
  text("title", {}, "mutual TLS", lock);
  svg("path", { d: "M 3 7 V 4 A 4 4 0 0 1 11 4 V 7" }, lock);
  svg("rect", { x: 1, y: 7, width: 12, height: 9 }, lock);
  return lock;
}

function drawEdge(layer, edge, from, to, bidirectional) {
  const dx = to.x - from.x, dy = to.y - from.y;
  const length = Math.hypot(dx, dy) || 1;
  const ux = dx / length, uy = dy / length;
  const shift = bidirectional ? 9 : 0; // two directions side by side
  const ox = -uy * shift, oy = ux * shift;
  const group = svg("g", { class: `edge ${health(edge)}` }, layer);
  group.setAttribute("data-source", edge.source);
  group.setAttribute("data-destination", edge.destination);
  svg("line", {
    x1: from.x + ux * NODE_RADIUS + ox, y1: from.y + uy * NODE_RADIUS + oy,
    x2: to.x - ux * (NODE_RADIUS + 4) + ox, y2: to.y - uy * (NODE_RADIUS + 4) + oy,
  }, group);
  const mx = (from.x + to.x) / 2 + ox * 5, my = (from.y + to.y) / 2 + oy * 5;
  const label = svg("g", { class: "edge-label", transform: `translate(${mx - 70},${my - 24})` }, group);
  svg("rect", { x: 0, y: 0, width: 140, height: 48 }, label);
  text("text", { class: "edge-rate", x: 22, y: 14 }, edge.shown.rate, label);
  text("text", { class: "edge-success", x: 22, y: 28 }, `success ${edge.shown.success}`, label);
  text("text", { class: "edge-latency", x: 6, y: 42 }, `p50 ${edge.shown.p50} · p99 ${edge.shown.p99}`, label);
  if (edge.mutualTls) drawLock(label, 4, 4);
}

function shorten(name) {
  return name.length > MAX_LABEL ? `${name.slice(0, MAX_LABEL - 1)}…` : name;
}

function drawNode(layer, node, at) {
  const group = svg("g", { class: "node", transform: `translate(${at.x},${at.y})` }, layer);
  group.setAttribute("data-id", node.id);
  text("title", {}, node.id, group);
  svg("circle", { r: NODE_RADIUS }, group);
  text("text", { class: "node-name", y: -2 }, shorten(node.name), group);
  text("text", { class: "node-namespace", y: 12 }, shorten(node.namespace), group);
  // what it served; a pure client (a gateway, a load generator) shows what it sent
  const traffic = node.rate > 0 || !(node.outboundRate > 0) ? node.shown.rate : `out ${node.shown.outbound}`;
  text("text", { class: "node-rate", y: NODE_RADIUS + 14 }, traffic, group);
}

function cell(row, content, numeric) {
  const td = document.createElement("td");
  td.textContent = content;
  if (numeric) td.className = "number";
  row.appendChild(td);
}

function drawTable(nodes) {
  const body = document.querySelector("#workloads tbody");
  body.replaceChildren();
  for (const node of nodes) {
    const row = document.createElement("tr");
    row.setAttribute("data-id", node.id);
    cell(row, node.name, false);
    cell(row, node.namespace, false);
    cell(row, node.shown.rate, true);
    cell(row, node.shown.success, true);
    cell(row, node.shown.p50, true);
    cell(row, node.shown.p99, true);
    body.appendChild(row);
  }
}

function render(graph) {
  const positions = layout(graph.nodes);
  const edgeLayer = document.getElementById("edges");
  const nodeLayer = document.getElementById("nodes");
  edgeLayer.replaceChildren();
  nodeLayer.replaceChildren();
  const pairs = new Set(graph.edges.map((e) => `${e.source}\u0000${e.destination}`));
  for (const edge of graph.edges) {
    const from = positions.get(edge.source), to = positions.get(edge.destination);
    if (!from || !to || edge.source === edge.destination) continue;
    drawEdge(edgeLayer, edge, from, to, pairs.has(`${edge.destination}\u0000${edge.source}`));
  }
  for (const node of graph.nodes) drawNode(nodeLayer, node, positions.get(node.id));
  drawTable(graph.nodes);
  document.getElementById("truncated").hidden = !graph.truncated;
}

function showStatus(message, failed) {
  const status = document.getElementById("status");
  status.textContent = message;
  status.classList.toggle("error", failed);
}

async function refresh() {
  try {
    const response = await fetch("/api/graph", { cache: "no-store" });
    const answer = await response.json();
    document.getElementById("window").textContent = `rate over ${answer.window}`;
    if (!response.ok || answer.error) {
      showStatus(`Prometheus: ${answer.error || response.status}`, true);
      return;
    }
    render(answer);
    document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
    showStatus(`updated ${new Date().toLocaleTimeString()}`, false);
  } catch (error) {
    showStatus(`dashboard server unreachable: ${error}`, true);
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
