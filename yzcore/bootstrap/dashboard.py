"""The dashboard the bootstrap server serves at ``/``: one page reading ``/status``.

Plain HTML and JavaScript, no build step and no external resources (it must
work on a machine with no internet): network health share, the nodes (id,
role, address, health, connections, routing table, last find_node, last
seen), the connection graph drawn from the peers each node reports in its
heartbeats, the network's find_node latency and frame rate over the last
minutes, the bridges, recent errors; refreshed every two seconds.
"""

from __future__ import annotations

__all__ = ["DASHBOARD_HTML"]

DASHBOARD_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>yzcore network</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
 h1{font-size:1.3em;margin:0 0 .3em} h2{font-size:1.05em;margin:1.2em 0 .4em}
 table{border-collapse:collapse} td,th{padding:.2em .7em;border-bottom:1px solid #ddd;text-align:left}
 th{background:#f4f4f4} .ok{color:#186b1b;font-weight:600} .bad{color:#b00020;font-weight:600}
 .mono{font-family:ui-monospace,monospace} #share{font-size:2em;font-weight:700}
 .row{display:flex;gap:2em;flex-wrap:wrap} svg{border:1px solid #ddd;background:#fcfcfc}
</style></head><body>
<h1>yzcore network</h1>
<div><span id="share">–</span> <span id="summary"></span></div>
<div id="meta" class="mono"></div>
<div class="row">
<div><h2>Connections</h2><svg id="graph" width="360" height="360" viewBox="-180 -180 360 360"></svg></div>
<div><h2>find_node latency (mean of the nodes' last probe)</h2>
<svg id="latency" width="360" height="120"></svg><div id="latency-now" class="mono"></div>
<h2>Frames per second (all nodes)</h2>
<svg id="rate" width="360" height="120"></svg><div id="rate-now" class="mono"></div></div>
</div>
<h2>Nodes</h2>
<table id="nodes"><thead><tr><th>id</th><th>role</th><th>address</th><th>health</th><th>connections</th>
<th>routing table</th><th>find_node</th><th>last seen</th></tr></thead><tbody></tbody></table>
<h2>Bridges</h2>
<table id="bridges"><thead><tr><th>id</th><th>address</th><th>health</th><th>process</th>
<th>restarts</th><th>last check</th></tr></thead><tbody></tbody></table>
<h2>Recent errors</h2>
<table id="errors"><thead><tr><th>time</th><th>code</th><th>message</th></tr></thead><tbody></tbody></table>
<script type="module">
const $ = (s) => document.querySelector(s);
function cell(text, cls) { const td = document.createElement("td"); td.textContent = text;
  if (cls) td.className = cls; return td; }
function fill(sel, rows) { const body = $(sel + " tbody"); body.replaceChildren(...rows.map((r) => {
  const tr = document.createElement("tr"); tr.append(...r); return tr; })); }
function health(h) { return h === true ? cell("healthy", "ok") : h === false ? cell("unhealthy", "bad")
  : cell("unknown"); }
const NS = "http://www.w3.org/2000/svg";
function el(tag, attrs) { const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); return e; }
function graph(nodes) {
  const pos = {}, r = 150;
  nodes.forEach((x, i) => { const a = 2 * Math.PI * i / Math.max(1, nodes.length);
    pos[x.id] = [r * Math.cos(a), r * Math.sin(a)]; });
  const edges = [], seen = new Set();
  for (const x of nodes) for (const p of x.peers || []) {
    const key = x.id < p ? x.id + p : p + x.id;
    if (pos[p] && !seen.has(key)) { seen.add(key);
      edges.push(el("line", {x1: pos[x.id][0], y1: pos[x.id][1], x2: pos[p][0], y2: pos[p][1],
        stroke: "#9ab", "stroke-width": 1})); } }
  const dots = nodes.map((x) => { const c = el("circle", {cx: pos[x.id][0], cy: pos[x.id][1], r: 6,
    fill: x.healthy ? "#2a8a2e" : "#c0392b", "data-id": x.id});
    const t = el("title", {}); t.textContent = x.id.slice(0, 16) + " " + x.address; c.append(t); return c; });
  $("#graph").replaceChildren(...edges, ...dots);
  $("#graph").dataset.edges = edges.length;
}
const history = {latency: [], rate: []};
const rates = new Map();  // node id -> {at, count, rate}: its last heartbeat
function spark(sel, values, unit) {
  const w = 360, h = 120, max = Math.max(...values, 1e-9);
  const pts = values.map((v, i) => `${(i / Math.max(1, values.length - 1)) * (w - 10) + 5},` +
    `${h - 5 - (v / max) * (h - 20)}`).join(" ");
  $(sel).replaceChildren(el("polyline", {points: pts, fill: "none", stroke: "#2a6fb0", "stroke-width": 2}));
  $(sel + "-now").textContent = values.length ? `now ${values[values.length - 1].toFixed(1)} ${unit}, ` +
    `max ${max.toFixed(1)} ${unit}` : "";
}
async function refresh() {
  let s;
  try { s = await (await fetch("/status", {cache: "no-store"})).json(); }
  catch (e) { $("#summary").textContent = "bootstrap server unreachable: " + e; return; }
  const n = s.network;
  $("#share").textContent = n.nodes ? Math.round(100 * n.share) + "% healthy" : "no nodes yet";
  $("#share").className = n.nodes && n.healthy === n.nodes ? "ok" : "bad";
  $("#summary").textContent = `${n.healthy}/${n.nodes} nodes healthy, ` +
    `${s.bridges.filter((b) => b.healthy).length}/${s.bridges.length} bridges healthy`;
  $("#meta").textContent = `bootstrap ${s.id.slice(0, 16)} at ${s.address}, yzcore ${s.version}, ` +
    `protocol ${s.protocol}, up ${s.uptime_s} s`;
  graph(s.nodes);
  const probes = s.nodes.map((x) => x.probe).filter((p) => p != null);
  if (probes.length) history.latency.push(1000 * probes.reduce((a, b) => a + b, 0) / probes.length);
  // Each node's rate between its last two heartbeats (its counts only grow while it runs):
  // a sum over the nodes listed now fell as connections closed, and polls fell between beats.
  const now = Date.now() / 1000, listed = new Set();
  for (const x of s.nodes) {
    const count = (x.sent || 0) + (x.received || 0), at = now - x.last_seen_s;
    const was = rates.get(x.id);
    listed.add(x.id);
    if (was && at - was.at < 1) continue;  // the same heartbeat as last time
    const rate = was && count >= was.count ? (count - was.count) / (at - was.at) : null;
    rates.set(x.id, { at, count, rate });
  }
  for (const id of [...rates.keys()]) if (!listed.has(id)) rates.delete(id);
  const known = [...rates.values()].filter((r) => r.rate !== null);
  if (known.length) history.rate.push(known.reduce((a, r) => a + r.rate, 0));
  for (const k in history) history[k] = history[k].slice(-150);
  spark("#latency", history.latency, "ms"); spark("#rate", history.rate, "frames/s");
  fill("#nodes", s.nodes.map((x) => [cell(x.id.slice(0, 16), "mono"), cell(x.role), cell(x.address, "mono"),
    health(x.healthy), cell(x.connections), cell(x.routing_table),
    cell(x.probe == null ? "–" : (1000 * x.probe).toFixed(0) + " ms"), cell(x.last_seen_s + " s ago")]));
  fill("#bridges", s.bridges.map((b) => [cell(b.id.slice(0, 16), "mono"), cell(b.address, "mono"),
    health(b.healthy), cell(b.pid ? "pid " + b.pid : "external"), cell(b.restarts ?? "–"),
    cell(b.last_ok_s + " s ago")]));
  fill("#errors", s.recent_errors.slice(-10).reverse().map((e) => [
    cell(new Date(1000 * e.time).toLocaleTimeString()), cell(e.code, "mono"), cell(e.message)]));
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""
