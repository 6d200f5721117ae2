"""An async web service that embeds one Session and submits simulations on request.

    COMPS_SERVER=... COMPS_TOKEN=... uvicorn examples.async_service:app

POST /sweeps {"name": "...", "betas": [0.1, 0.2]} creates an experiment, saves and commissions
its simulations and answers with the ids at once (exactly once per ``Idempotency-Key`` header: a
client that retries after a lost answer or a cancelled request gets the same sweep back);
GET /sweeps/{id} reports progress from the Stats endpoint (one request). The Session lives as
long as the app (lifespan), so every request shares its connection pool, token and limits.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import comps_async as ca
from comps_async.local import sir_configuration


def _config(beta: float) -> bytes:
    base = json.loads(
        resources.files("comps_async.local").joinpath("examples", "config.json").read_text()
    )
    base["parameters"].update({"Base_Infectivity": beta, "Simulation_Duration": 100})
    return json.dumps(base).encode()


def create_app(url: str | None = None, token: str | None = None) -> Starlette:
    """The app; ``url``/``token`` default to COMPS_SERVER/COMPS_TOKEN."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with ca.Session(
            url or os.environ.get("COMPS_SERVER"), token=token or os.environ.get("COMPS_TOKEN")
        ) as session:
            app.state.comps = session
            yield

    async def submit(request: Request) -> JSONResponse:
        body = await request.json()
        betas = [float(b) for b in body.get("betas", [])]
        if not betas or not body.get("name"):
            return JSONResponse({"error": "give a name and a list of betas"}, status_code=400)
        # The client's key makes its retry the recovery from a cancelled or lost call.
        key = request.headers.get("Idempotency-Key")
        s: ca.Session = request.app.state.comps
        try:
            experiment = await s.experiments.create(
                ca.Experiment(name=str(body["name"]), configuration=sir_configuration()),
                key=key,
            )
        except ValueError as exc:  # a malformed key, refused before anything was sent
            return JSONResponse({"error": str(exc)}, status_code=400)
        sims = [
            ca.Simulation(
                name=f"beta-{b}",
                experiment_id=experiment.id,
                tags={"beta": b},
                files=[ca.SimulationFile.from_bytes("config.json", _config(b))],
            )
            for b in betas
        ]
        await s.simulations.save_all(sims, key=key, commission=True)
        return JSONResponse(
            {"experiment_id": str(experiment.id), "simulation_ids": [str(sim.id) for sim in sims]},
            status_code=201,
        )

    async def progress(request: Request) -> JSONResponse:
        s: ca.Session = request.app.state.comps
        try:
            counts = await s.experiments.stats(request.path_params["experiment_id"])
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except ca.NotFoundError:
            return JSONResponse({"error": "no such sweep"}, status_code=404)
        finished = sum(counts.get(k, 0) for k in ("Succeeded", "Failed", "Canceled"))
        return JSONResponse({"counts": counts, "done": finished == sum(counts.values())})

    return Starlette(
        routes=[
            Route("/sweeps", submit, methods=["POST"]),
            Route("/sweeps/{experiment_id}", progress),
        ],
        lifespan=lifespan,
    )


app = create_app() if os.environ.get("COMPS_SERVER") else None
