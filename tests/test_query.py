"""Query -> wire params (§5), and the caller's Query never mutated (§14.16)."""

from __future__ import annotations

import pytest

from comps_async import Query


@pytest.mark.parametrize(
    ("query", "entity", "params"),
    [
        (Query().select(["id", "state"]), "Simulation", {"fields": "Id,SimulationState"}),
        (Query().select(["Id", "SimulationState"]), "Simulation", {"fields": "Id,SimulationState"}),
        (Query().select(["id", "state"]), "WorkItem", {"fields": "Id,State"}),
        (Query().select_children(["tags", "hpc_jobs"]), "Simulation", {"children": "Tags,HPCJobs"}),
        (
            Query().select_children(["configuration", "files"]),
            "Simulation",
            {"children": "Configuration,Files"},
        ),
        (Query().select_children(["assets"]), "AssetCollection", {"children": "Assets"}),
        (
            Query().where(["name~Test", "state=Failed"]),
            "Simulation",
            {"filters": "Name~Test,SimulationState=Failed"},
        ),
        (
            Query().where("date_created>=2020-01-01"),
            "Experiment",
            {"filters": "DateCreated>=2020-01-01"},
        ),
        (
            Query().where(["experiment_id!=225abe99-7e2c-e411-93f2-f0921c167860"]),
            "Simulation",
            {"filters": "ExperimentId!=225abe99-7e2c-e411-93f2-f0921c167860"},
        ),
        (
            Query().where_tag(["Replicate=3", "Type~Mal", "idmtools"]),
            "Simulation",
            {"tagfilters": "Replicate=3,Type~Mal,idmtools"},
        ),
        (Query().orderby("date_created desc"), "Simulation", {"orderby": "DateCreated desc"}),
        (Query().orderby("name"), "Suite", {"orderby": "Name"}),
        (Query().offset(0).count(0), "Simulation", {}),
        (Query().offset(200).count(100), "Simulation", {"offset": "200", "count": "100"}),
        (
            Query().add_extra_params({"coalesceconfig": True}),
            "Simulation",
            {"coalesceconfig": "True"},
        ),
        (Query().count(5).add_extra_params({"count": 7}), "Simulation", {"count": "7"}),
        (
            Query().where(["owner=jdoe"]).orderby("date_created desc").count(1),
            "Simulation",
            {"filters": "Owner=jdoe", "orderby": "DateCreated desc", "count": "1"},
        ),
    ],
)
def test_params(query: Query, entity: str, params: dict[str, str]) -> None:
    assert query.to_params(entity) == params


def test_builders_return_new_queries() -> None:
    base = Query().where(["name~a"])
    derived = base.where(["state=Failed"]).count(10)
    assert base.filters == ("name~a",) and base.count_value == 0
    assert derived.filters == ("name~a", "state=Failed")
    with pytest.raises(AttributeError):
        base.filters = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Query().count(-1), "non-negative"),
        (lambda: Query().offset(-5), "non-negative"),
        (lambda: Query().where(["name"]), "malformed filter"),
        (lambda: Query().where(["name~a,b"]), "comma"),
        (lambda: Query().where(["state==Failed"]), "malformed filter"),  # not state = "=Failed"
        (lambda: Query().where(["state=>Failed"]), "malformed filter"),
        (lambda: Query().where_tag(["Replicate==3"]), "malformed tag filter"),
        (lambda: Query().where_tag(["=3"]), "malformed tag filter"),
        (lambda: Query().where_tag(["a=1,b=2"]), "comma"),
        (lambda: Query().orderby("name sideways"), "malformed orderby"),
        (lambda: Query().select("id"), "list"),
        (
            lambda: (
                Query()
                .select(["id"])
                .to_params("Simulation")
                .update(Query().select(["nope"]).to_params("Simulation"))
            ),
            "no field 'nope'",
        ),
        (
            lambda: Query().select_children(["hpc_jobs"]).to_params("Experiment"),
            "no child 'hpc_jobs'",
        ),
        (lambda: Query().where(["bogus=1"]).to_params("Suite"), "no field 'bogus'"),
        (lambda: Query().to_params("Widget"), "unknown entity type"),
    ],
)
def test_bad_input_is_refused_before_sending(build: object, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        build()  # type: ignore[operator]
