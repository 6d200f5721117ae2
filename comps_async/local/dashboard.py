"""The local server's dashboard: the eight views of the COMPS dashboard, as charts over time.

Simulations Currently in Queue, Workflows Currently Processing, Core Processing Time Consumed,
Home Disk Space in Use, Simulations Processed per Owner, Cluster Disk Space in Use, Simulations
Processed per State and Simulations Processed per Node Group. The page (``PAGE``) renders itself
in the browser and refreshes live. Where COMPS has a route for a view, the page asks that route
(``/api/Metrics/Queue`` for the queue, ``statsoperations=simulationusage`` for core time), so the
same page works against a real COMPS host given ``?api=<host>``; the other views come from the
local server's ``/dashboard/data``, whose history a ``History`` samples while the server runs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio

from .jobs import Jobs
from .store import Store

__all__ = ["ACTIVE_STATES", "NODE_GROUP", "PAGE", "History", "snapshot"]

QUEUED_STATES = ("CommissionRequested", "Provisioning", "Commissioned", "Retry")
ACTIVE_STATES = (*QUEUED_STATES, "Running")
DONE_STATES = ("Succeeded", "Failed", "Canceled")
WORKFLOW_DONE = ("Created", "Succeeded", "Failed", "Canceled")
NODE_GROUP = "local"  # the one node group of a one-machine server


def snapshot(store: Store) -> dict[str, Any]:
    """Blocking: every number the dashboard shows, now, asked of the store."""
    by_state: dict[str, int] = {}
    per_owner: dict[str, dict[str, int]] = {}
    for owner, state, count in store.simulation_counts():
        by_state[state] = by_state.get(state, 0) + count
        per_owner.setdefault(owner, {})[state] = count
    usage = Jobs(store).usage_by_owner()
    home = {owner: used.output_bytes for owner, used in usage.items()}
    outputs = sum(home.values())
    processed = sum(by_state.get(s, 0) for s in DONE_STATES)
    workflows = store.work_item_counts()
    return {
        "t": datetime.now(UTC).isoformat(),
        "queued": sum(by_state.get(s, 0) for s in QUEUED_STATES),
        "running": by_state.get("Running", 0),
        "workflows_processing": sum(n for s, n in workflows.items() if s not in WORKFLOW_DONE),
        "core_hours": round(sum(u.core_seconds for u in usage.values()) / 3600, 6),
        "home_disk_bytes": home,  # per owner: the page shows its user's
        "cluster_disk_bytes": outputs + store.asset_bytes(),
        "processed_by_owner": {
            owner: sum(n for s, n in states.items() if s in DONE_STATES)
            for owner, states in per_owner.items()
        },
        "processed_by_state": {s: by_state[s] for s in DONE_STATES if s in by_state},
        "processed_by_node_group": {NODE_GROUP: processed},
        "simulations_by_state": by_state,
        "per_owner": per_owner,
    }


@dataclass
class History:
    """Snapshots taken every ``interval_s`` while the server runs (a day at 30 s by default),
    so the charts have a past when the page opens."""

    store: Store
    interval_s: float = 30.0
    samples: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=2880))

    async def run_forever(self, run_sync: Callable[..., Any]) -> None:
        """Sample until cancelled; ``run_sync`` runs blocking store work off the loop."""
        while True:
            self.samples.append(await run_sync(snapshot, self.store))
            await anyio.sleep(self.interval_s)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>COMPS dashboard</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 1.2rem 2rem; color: #1d2733;
        background: #f5f7fa; }
 header { display: flex; align-items: baseline; gap: 1.5rem; }
 h1 { font-size: 1.3rem; margin: 0 0 .8rem; } #status { color: #667; font-size: .85rem; }
 main { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr));
        gap: 1rem; }
 section { background: #fff; border-radius: 8px; padding: .8rem 1rem;
           box-shadow: 0 1px 3px rgba(0,0,0,.08); }
 h2 { font-size: .95rem; margin: 0; color: #334; } .source { color: #889; font-size: .75rem; }
 .now { font-size: 1.9rem; font-weight: 650; margin: .2rem 0; }
 .legend span { margin-right: .8rem; font-size: .8rem; white-space: nowrap; }
 .legend i { display: inline-block; width: .7rem; height: .7rem; margin-right: .25rem;
             border-radius: 2px; vertical-align: -1px; }
 svg { width: 100%; height: 126px; } .unavailable { color: #a55; font-size: .85rem; }
</style></head>
<body>
<header><h1>COMPS dashboard</h1><span id="status">loading...</span></header>
<main id="panels"></main>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const API = (params.get("api") || "").replace(/\\/$/, "");
// The token comes in the URL's fragment (#token=...), which browsers never send: it stays out
// of server and proxy logs. Once read it is taken out of the address bar and the history.
const secret = new URLSearchParams(location.hash.slice(1));
const TOKEN = secret.get("token") || params.get("token") || "";
if (secret.has("token") || params.has("token")) {
  params.delete("token");
  const query = params.toString();
  history.replaceState(null, "", location.pathname + (query ? "?" + query : ""));
}
const ENV = params.get("environment") || "Local";
const REFRESH_S = Math.max(1, Number(params.get("refresh") || 5));
const COLOURS = ["#2f6fdf", "#e0663a", "#2ba36b", "#9b59b6", "#d4a017", "#17a2b8", "#c0392b"];
const QUEUED = ["CommissionRequested", "Provisioning", "Commissioned", "Retry"];
// The eight views of the COMPS dashboard: [id, title, unit, source].
const VIEWS = [
  ["queue", "Simulations Currently in Queue", "simulations", "/api/Metrics/Queue"],
  ["workflows", "Workflows Currently Processing", "work items", "local /dashboard/data"],
  ["core", "Core Processing Time Consumed", "core hours", "statsoperations=simulationusage"],
  ["home-disk", "Home Disk Space in Use", "bytes", "local /dashboard/data"],
  ["per-owner", "Simulations Processed per Owner", "simulations", "local /dashboard/data"],
  ["cluster-disk", "Cluster Disk Space in Use", "bytes", "local /dashboard/data"],
  ["per-state", "Simulations Processed per State", "simulations", "local /dashboard/data"],
  ["per-node-group", "Simulations Processed per Node Group", "simulations",
   "local /dashboard/data"],
];
const series = {};  // view id -> {line name -> [[time ms, value], ...]}
let refreshes = 0;

function el(tag, attrs, text) {
  const e = document.createElementNS(tag === "svg" || tag === "polyline" || tag === "text"
    || tag === "line" ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function human(value, unit) {
  if (unit === "bytes") {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0; while (value >= 1024 && i < units.length - 1) { value /= 1024; i++; }
    return (i ? value.toFixed(1) : String(value)) + " " + units[i];
  }
  if (unit === "core hours") {  // short runs are seconds of core time, long ones hours
    if (value * 3600 < 60) return (value * 3600).toFixed(1) + " core-s";
    if (value < 1) return (value * 60).toFixed(1) + " core-min";
    return value.toFixed(value < 10 ? 2 : 0) + " core-h";
  }
  return String(Math.round(value));
}
async function get(path) {
  const r = await fetch(API + path, {headers: {"X-COMPS-Token": TOKEN,
                                                "Accept": "application/json"}});
  if (!r.ok) throw new Error(r.status + " " + r.statusText);
  return r.json();
}
function record(view, t, values) {
  const lines = series[view] = series[view] || {};
  for (const [name, v] of Object.entries(values)) {
    (lines[name] = lines[name] || []).push([t, v]);
  }
}
function draw() {
  const panels = document.getElementById("panels");
  panels.replaceChildren();
  for (const [id, title, unit, source] of VIEWS) {
    const box = el("section", {"data-view": id});
    box.append(el("h2", {}, title), el("div", {"class": "source"}, "from " + source));
    const lines = series[id];
    if (!lines || !Object.keys(lines).length) {
      box.append(el("div", {"class": "unavailable", "data-testid": id + "-unavailable"},
                    "not offered by this host"));
      panels.append(box); continue;
    }
    const names = Object.keys(lines).sort();
    const latest = n => lines[n][lines[n].length - 1][1];
    const total = names.reduce((sum, n) => sum + latest(n), 0);
    box.append(el("div", {"class": "now", "data-testid": id + "-now"}, human(total, unit)));
    const all = names.flatMap(n => lines[n]);
    const t0 = Math.min(...all.map(p => p[0])), t1 = Math.max(...all.map(p => p[0]));
    const top = Math.max(1e-9, ...all.map(p => p[1]));
    const svg = el("svg", {viewBox: "0 0 400 126", preserveAspectRatio: "none"});
    const clock = t => new Date(t).toLocaleTimeString();
    svg.append(el("text", {x: 30, y: 124, "font-size": 9, fill: "#889"}, clock(t0)));
    svg.append(el("text", {x: 400, y: 124, "font-size": 9, fill: "#889",
                           "text-anchor": "end"}, clock(t1)));
    svg.append(el("line", {x1: 30, y1: 110, x2: 400, y2: 110, stroke: "#ccd"}));
    svg.append(el("text", {x: 0, y: 12, "font-size": 10, fill: "#667"}, human(top, unit)));
    svg.append(el("text", {x: 0, y: 110, "font-size": 10, fill: "#667"}, "0"));
    const legend = el("div", {"class": "legend"});
    names.forEach((name, i) => {
      const colour = COLOURS[i % COLOURS.length];
      const points = lines[name].map(([t, v]) =>
        (30 + (t1 > t0 ? (t - t0) / (t1 - t0) : 1) * 370).toFixed(1) + "," +
        (110 - v / top * 100).toFixed(1)).join(" ");
      svg.append(el("polyline", {points, fill: "none", stroke: colour, "stroke-width": 2,
                                 "data-testid": "chart-" + id + "-" + name,
                                 "data-points": lines[name].length}));
      const item = el("span", {});
      item.append(el("i", {style: "background:" + colour}),
                  el("b", {"data-testid": id + "-" + name}, human(latest(name), unit)),
                  document.createTextNode(" " + name));
      legend.append(item);
    });
    box.append(svg);
    if (names.length > 1 || names[0] !== id) box.append(legend);
    panels.append(box);
  }
}
function fromLocal(sample, user) {
  const t = Date.parse(sample.t);
  record("workflows", t, {"workflows": sample.workflows_processing});
  record("home-disk", t, {[user]: (sample.home_disk_bytes || {})[user] || 0});
  record("per-owner", t, sample.processed_by_owner);
  record("cluster-disk", t, {"cluster": sample.cluster_disk_bytes});
  record("per-state", t, sample.processed_by_state);
  record("per-node-group", t, sample.processed_by_node_group);
}
async function refresh(first) {
  const now = Date.now(), problems = [];
  try {  // the real COMPS route for the queue
    const queue = await get("/api/Metrics/Queue?EnvironmentName=" + encodeURIComponent(ENV));
    let queued = 0, running = 0;
    for (const buckets of Object.values(queue.QueueState || {})) {
      for (const b of buckets) {
        for (const [state, n] of Object.entries(b.SimulationStateCount || {})) {
          if (QUEUED.includes(state)) queued += n; else if (state === "Running") running += n;
        }
      }
    }
    record("queue", now, {"queued": queued, "running": running});
  } catch (e) { problems.push("queue: " + e.message); }
  try {  // the real COMPS route for usage: experiment Stats
    const listed = await get("/api/Experiments?fields=Id&count=1000" +
                             "&statsoperations=simulationusage");
    let seconds = 0;
    for (const stats of Object.values(listed.Stats || {})) {
      seconds += Number((stats.SimulationUsage || {}).TotalCoreTimeUsage || 0);
    }
    record("core", now, {"core": seconds / 3600});
  } catch (e) { problems.push("core time: " + e.message); }
  try {  // what only the local server offers, with the history it sampled
    const data = await get("/dashboard/data");
    if (first) for (const sample of data.history || []) fromLocal(sample, data.user);
    fromLocal(data.now, data.user);
  } catch (e) { problems.push("local data: " + e.message); }
  draw();
  refreshes++;
  const status = document.getElementById("status");
  status.textContent = (problems.length ? "error: " + problems.join("; ") + " - " : "") +
    "updated " + new Date().toLocaleTimeString() + ", every " + REFRESH_S + " s";
  status.dataset.testid = problems.length ? "problems" : "loaded";
  status.dataset.refreshes = refreshes;
  setTimeout(() => refresh(false), REFRESH_S * 1000);
}
refresh(true);
</script></body></html>
"""
