"""The local server's dashboard: the panels of the COMPS dashboard (simulations in queue by
state, per owner, core time, disk in use) as one page that renders itself from a JSON route."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from .blobs import BlobStore
from .store import Store

__all__ = ["PAGE", "dashboard_data"]


def dashboard_data(store: Store, blobs: BlobStore) -> dict[str, Any]:
    """Blocking: the numbers the dashboard shows, straight from the database."""
    by_state = {
        r[0]: r[1]
        for r in store.query(
            "SELECT state, COUNT(*) FROM entities WHERE kind = 'Simulation' AND deleted = 0 "
            "GROUP BY state ORDER BY state"
        )
    }
    per_owner: dict[str, dict[str, int]] = {}
    for owner, state, count in store.query(
        "SELECT owner, state, COUNT(*) FROM entities WHERE kind = 'Simulation' "
        "AND deleted = 0 GROUP BY owner, state ORDER BY owner, state"
    ):
        per_owner.setdefault(owner, {})[state] = count
    core_seconds = 0.0
    output_bytes = 0
    for (doc,) in store.query("SELECT doc FROM hpc_jobs"):
        job = json.loads(doc)
        output_bytes += int(job.get("OutputDirectorySize") or 0)
        if job.get("StartTime") and job.get("EndTime"):
            cores = int((job.get("Configuration") or {}).get("MinCores") or 1)
            span = _parse(job["EndTime"]) - _parse(job["StartTime"])
            core_seconds += max(span.total_seconds(), 0.0) * cores
    blob_bytes = sum(p.stat().st_size for p in blobs.root.glob("??/*") if p.is_file())
    return {
        "simulations_by_state": by_state,
        "queued": sum(
            by_state.get(s, 0)
            for s in ("CommissionRequested", "Provisioning", "Commissioned", "Retry")
        ),
        "running": by_state.get("Running", 0),
        "per_owner": per_owner,
        "core_hours": round(core_seconds / 3600, 4),
        "disk": {
            "outputs_bytes": output_bytes,
            "assets_bytes": blob_bytes,
            "total_bytes": output_bytes + blob_bytes,
        },
    }


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>COMPS local dashboard</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
 h1 { font-size: 1.4rem; } section { display: inline-block; vertical-align: top;
 margin: 0 2rem 2rem 0; } table { border-collapse: collapse; }
 td, th { border: 1px solid #ccc; padding: .25rem .6rem; text-align: right; }
 th { background: #f3f3f3; } .big { font-size: 2rem; font-weight: 600; }
</style></head>
<body><h1>COMPS local dashboard</h1><p id="status">loading...</p>
<section><h2>In queue</h2><div class="big" data-testid="queued">-</div>
 <h2>Running</h2><div class="big" data-testid="running">-</div></section>
<section><h2>Simulations by state</h2><table id="by-state"></table></section>
<section><h2>Per owner</h2><table id="per-owner"></table></section>
<section><h2>Core time</h2><div class="big"><span data-testid="core-hours">-</span> h</div>
 <h2>Disk in use</h2><div class="big"><span data-testid="disk-bytes">-</span> bytes</div>
</section>
<script>
const params = new URLSearchParams(location.search);
fetch("/dashboard/data", {headers: {"X-COMPS-Token": params.get("token") || ""}})
 .then(r => { if (!r.ok) throw new Error(r.status + " " + r.statusText); return r.json(); })
 .then(d => {
  const cell = (tag, text, id) => { const e = document.createElement(tag);
    e.textContent = text; if (id) e.dataset.testid = id; return e; };
  const byState = document.getElementById("by-state");
  byState.append(Object.assign(document.createElement("tr"),
    {innerHTML: "<th>state</th><th>simulations</th>"}));
  for (const [state, n] of Object.entries(d.simulations_by_state)) {
    const row = document.createElement("tr");
    row.append(cell("td", state), cell("td", n, "state-" + state));
    byState.append(row);
  }
  const owners = document.getElementById("per-owner");
  owners.append(Object.assign(document.createElement("tr"),
    {innerHTML: "<th>owner</th><th>state</th><th>simulations</th>"}));
  for (const [owner, states] of Object.entries(d.per_owner)) {
    for (const [state, n] of Object.entries(states)) {
      const row = document.createElement("tr");
      row.append(cell("td", owner), cell("td", state),
                 cell("td", n, "owner-" + owner + "-" + state));
      owners.append(row);
    }
  }
  document.querySelector("[data-testid=queued]").textContent = d.queued;
  document.querySelector("[data-testid=running]").textContent = d.running;
  document.querySelector("[data-testid=core-hours]").textContent = d.core_hours;
  document.querySelector("[data-testid=disk-bytes]").textContent = d.disk.total_bytes;
  document.getElementById("status").textContent = "updated " + new Date().toISOString();
  document.getElementById("status").dataset.testid = "loaded";
 })
 .catch(e => { document.getElementById("status").textContent = "error: " + e.message; });
</script></body></html>
"""
