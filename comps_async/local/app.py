"""The Starlette app of the local COMPS server: every route of protocol §15, in one table.

Routes and query-parameter names match case-insensitively (§1.3). Handlers live in route modules
per concern (``routes/``) over one shared ``ServerState``; ``guarded`` answers the store's
BadRequest / NotFound / Conflict with the COMPS error body ``{"ResponseMessage", "CorrelationId"}``.
"""

from __future__ import annotations

from functools import partial

from starlette.applications import Starlette

from .auth import UserDirectory
from .routes.auth import AuthRoutes
from .routes.control import ControlRoutes
from .routes.dashboard import DashboardRoutes
from .routes.entities import EntityRoutes
from .routes.files import FileRoutes
from .routes.lifecycle import LifecycleRoutes
from .web import Route, guarded

__all__ = ["build_app"]


def build_app(
    users: UserDirectory,
    *,
    accounts: AuthRoutes,
    dashboard: DashboardRoutes,
    control: ControlRoutes,
    entities: EntityRoutes,
    lifecycle: LifecycleRoutes,
    files: FileRoutes,
) -> Starlette:
    """The ASGI app over the route groups (each built with its own collaborators)."""
    a = partial(guarded, users=users)
    routes = [
        Route("/api/tokens", a(accounts.login, auth=False), methods=["POST"]),
        Route("/api/tokens", a(accounts.renew, auth=False), methods=["PUT"]),
        Route("/api/environments", a(accounts.environments), methods=["GET"]),
        Route("/api/environments/{name}", a(accounts.environment), methods=["GET"]),
        Route("/api/users", a(accounts.list_users), methods=["GET"]),
        Route("/dashboard", a(dashboard.dashboard_page, auth=False), methods=["GET"]),
        Route("/dashboard/data", a(dashboard.dashboard_data), methods=["GET"]),
        Route("/api/Metrics/Queue", a(dashboard.metrics_queue), methods=["GET"]),
        Route("/api/_local/faults", a(control.set_faults), methods=["PUT"]),
        Route("/api/_local/counters", a(control.counters), methods=["GET"]),
        Route("/api/upload/check/{md5}", a(files.upload_check), methods=["GET"]),
        Route("/api/upload/{md5}", a(files.upload_chunk), methods=["POST"]),
        Route("/api/ZipAssets", a(files.zip_assets), methods=["POST"]),
        Route(
            "/api/WorkItems/RelatedEntityId/{id}/Type/{type}", a(lifecycle.parents), methods=["GET"]
        ),
        Route(
            "/api/WorkItems/RelatedEntityId/{id}/Type/{type}/Relation/{relation}",
            a(lifecycle.parents),
            methods=["GET"],
        ),
        Route("/api/WorkItems/{id}/Related", a(lifecycle.related), methods=["GET"]),
        Route(
            "/api/WorkItems/{id}/Related/{relation}/{type}/{related_id}",
            a(lifecycle.add_related),
            methods=["POST"],
        ),
        Route("/api/{plural}", a(entities.list_entities), methods=["GET"]),
        Route("/api/{plural}", a(entities.save_entities), methods=["POST"]),
        Route("/api/{plural}/{id}", a(entities.get_entity), methods=["GET"]),
        Route("/api/{plural}/{id}", a(lifecycle.delete_entity), methods=["DELETE"]),
        Route("/api/{plural}/{id}/tags", a(lifecycle.tags), methods=["POST"]),
        Route("/api/{plural}/{id}/State/{state}", a(lifecycle.change_state), methods=["PUT"]),
        Route("/api/{plural}/{id}/Stats", a(entities.stats), methods=["GET"]),
        Route("/asset/{plural}/{id}/Output", a(files.list_outputs), methods=["GET"]),
        Route("/asset/{plural}/{id}/Output", a(files.zip_outputs), methods=["POST"]),
        Route(
            "/asset/download/{owner}/{path:path}",
            a(files.download_output),
            methods=["GET", "HEAD"],
        ),
        Route("/asset/blobs/{md5}/{name}", a(files.download_blob), methods=["GET", "HEAD"]),
        Route("/asset/zips/{name}", a(files.download_zip), methods=["GET", "HEAD"]),
    ]
    return Starlette(routes=routes)
