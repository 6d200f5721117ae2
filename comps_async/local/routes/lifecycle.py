"""Routes that change what exists: tags, commission and cancel, deletes, work-item relations.
They parse HTTP and call the store's ``Lifecycle`` (the SQL lives there)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..state import ServerState
from ..store import KINDS, BadRequest, now_wire, parse_uuid
from ..web import choice, json_body, kind_of, params, tags_object, truthy

__all__ = ["LifecycleRoutes"]

_COMMISSIONABLE = {"Suite", "Experiment", "Simulation", "WorkItem"}
_RELATIONS = ("DependsOn", "Created")


@dataclass
class LifecycleRoutes:
    """``/api/{plural}/{id}/tags``, ``/State/{state}``, ``DELETE /api/{plural}/{id}`` and the
    WorkItem relation routes; ``on_commission`` wakes the runner."""

    state: ServerState
    on_commission: Callable[[], None] = lambda: None

    async def tags(self, request: Request) -> Response:
        kind = kind_of(request.path_params["plural"])
        entity_id = parse_uuid(request.path_params["id"])
        body = await json_body(request)
        mode = str(body.get("OperationMode", "Merge"))
        if mode not in ("Merge", "Replace", "Delete"):
            raise BadRequest("OperationMode must be Merge, Replace or Delete")
        tags = tags_object(body.get("Tags"))
        await self.state.db(self.state.lifecycle.write_tags, kind, entity_id, tags, mode)
        return JSONResponse({})

    async def change_state(self, request: Request) -> Response:
        kind = kind_of(request.path_params["plural"])
        entity_id = parse_uuid(request.path_params["id"])
        target = request.path_params["state"].lower()
        if kind.name not in _COMMISSIONABLE:
            raise BadRequest(f"{kind.plural} have no state")
        if target not in ("commissionrequested", "cancelrequested"):
            raise BadRequest("state must be CommissionRequested or CancelRequested")
        commission = target == "commissionrequested"
        changed = await self.state.db(
            self.state.lifecycle.change_state, kind, entity_id, commission, now_wire()
        )
        if changed:
            self.on_commission()
        return JSONResponse({})

    async def delete_entity(self, request: Request) -> Response:
        kind = kind_of(request.path_params["plural"])
        entity_id = parse_uuid(request.path_params["id"])
        expire = truthy(params(request).get("expirenow"))
        await self.state.db(self.state.lifecycle.delete, kind, entity_id, expire, now_wire())
        self.on_commission()
        return JSONResponse({})

    async def add_related(self, request: Request) -> Response:
        p = request.path_params
        work_item = parse_uuid(p["id"])
        relation = choice(p["relation"], _RELATIONS, "RelationType")
        object_type = choice(p["type"], tuple(KINDS), "ObjectType")
        related = parse_uuid(p["related_id"])
        await self.state.db(
            self.state.lifecycle.relate, work_item, relation, object_type, related, now_wire()
        )
        return JSONResponse({})

    async def related(self, request: Request) -> Response:
        work_item = parse_uuid(request.path_params["id"])
        p = params(request)
        object_type = (
            choice(p["relatedobject"], tuple(KINDS), "RelatedObject")
            if p.get("relatedobject")
            else None
        )
        relation = (
            choice(p["relationtype"], _RELATIONS, "RelationType") if p.get("relationtype") else None
        )
        rows = await self.state.db(self.state.lifecycle.related, work_item, object_type, relation)
        return JSONResponse(
            {
                "Related": [
                    {"ObjectType": t, "Id": i, "RelationType": r, "DateCreated": d}
                    for t, i, r, d in rows
                ]
            }
        )

    async def parents(self, request: Request) -> Response:
        p = request.path_params
        related = parse_uuid(p["id"])
        object_type = choice(p["type"], tuple(KINDS), "Type")
        relation = choice(p["relation"], _RELATIONS, "Relation") if p.get("relation") else None
        rows = await self.state.db(self.state.lifecycle.parents, related, object_type, relation)
        return JSONResponse({"Parents": [{"Id": i, "RelationType": r} for i, r in rows]})
