"""The dashboard the bootstrap server serves at ``/``: one page reading ``/status``.

Plain HTML and JavaScript, no build step and no external resources (it must
work on a machine with no internet): network health share, the nodes with
their health and connections, the bridges, recent errors; refreshed every
two seconds.
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
</style></head><body>
<h1>yzcore network</h1>
<div><span id="share">–</span> <span id="summary"></span></div>
<div id="meta" class="mono"></div>
<h2>Nodes</h2>
<table id="nodes"><thead><tr><th>id</th><th>address</th><th>health</th><th>connections</th>
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
  fill("#nodes", s.nodes.map((x) => [cell(x.id.slice(0, 16), "mono"), cell(x.address, "mono"),
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
