"""What a save encodes, checked against the plain reading of the protocol: the splice that
builds a create's JSON (``create_json``), the saved form (``save_json``) and the ids of the
answer (``parse_ids``). These are the bulk save's per-entity hot path, written for speed; here
each is compared with the obvious dict-and-encode version over many shapes of entity."""

from __future__ import annotations

import itertools
import json
from typing import Any
from uuid import UUID, uuid4

import httpx
import pydantic_core
import pytest

import comps_async as ca
from comps_async._responses import parse_ids
from comps_async._transfer.exactly_once import BATCH_TAG, KEY_TAG, KeyAssigner, create_json

FILE = ca.SimulationFile.from_bytes("config.json", b'{"a": 1}')
ORDER = ca.WorkItemFile.work_order({"WorkItem_Type": "DockerWorker"})
ODD_TAGS = {'quote"d': 'va"lue\\', "é": "ü", "n": 1.5, "b": True, "z": None}


def shapes() -> list[ca.models.Entity]:
    """New entities of every kind, with and without tags, files, owner and description."""
    exp = uuid4()
    tag_choices: list[dict[str, Any] | None] = [
        None,
        {},
        {"i": 1},
        ODD_TAGS,
        {KEY_TAG: "copied/1", BATCH_TAG: "copied/0", "x": "y"},  # copied from a read entity
    ]
    entities: list[ca.models.Entity] = []
    for tags, files, owner in itertools.product(tag_choices, [None, [], [FILE]], [None, "alice"]):
        entities.append(
            ca.Simulation(name='s "1" é', experiment_id=exp, tags=tags, files=files, owner=owner)
        )
        entities.append(
            ca.WorkItem(
                name="w",
                worker=ca.WorkerType(name="DockerWorker", version="1.0.0.0_RELEASE"),
                environment_name="Local",
                tags=tags,
                files=None if files is None else [ORDER] * len(files),
                owner=owner,
            )
        )
    for tags in tag_choices:
        entities += [
            ca.Suite(name="s", tags=tags, description="d"),
            ca.Experiment(name="e", tags=tags),
            ca.AssetCollection(tags=tags),
        ]
    return entities


def reference_create(entity: ca.models.Entity, owner: str | None) -> dict[str, Any]:
    """A create as the protocol reads (§6, §8.2): the save JSON, ``Owner`` unless set, an empty
    ``Files`` when there are none, and the reserved tags over any copies of them."""
    wire = entity.to_save_wire()
    wire.pop("Id", None)
    fields = type(entity).model_fields
    if owner and "owner" in fields and getattr(entity, "owner", None) is None:
        wire["Owner"] = owner
    if "files" in fields and getattr(entity, "files", None) is None:
        wire["Files"] = []
    key = entity.idempotency_key
    if key is not None:  # <call>/<n>, in the lookup group <call>/<n // 100>
        call, n = key.rsplit("/", 1)
        wire["Tags"] = {**wire.get("Tags", {}), BATCH_TAG: f"{call}/{int(n) // 100}", KEY_TAG: key}
    return wire


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys in {keys}"
    return dict(pairs)


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "unkeyed"])
@pytest.mark.parametrize("owner", ["me", None, 'o"dd'])
def test_create_json_is_the_plain_merge(keyed: bool, owner: str | None) -> None:
    entities = shapes()
    keys = KeyAssigner("caller.key-1:x")
    for position, entity in enumerate(entities):
        if keyed:
            keys.assign(entity, position * 37)
        body = create_json(entity, owner)
        parsed = json.loads(body, object_pairs_hook=no_duplicate_keys)
        assert parsed == reference_create(entity, owner), (type(entity).__name__, body)


def test_the_saved_form_is_the_save_json_without_id() -> None:
    for entity in shapes():
        entity.id = uuid4()
        expected = {k: v for k, v in entity.to_save_wire().items() if k != "Id"}
        assert pydantic_core.from_json(entity.save_json()) == expected
        # Byte-equal to the dict's encoding: what makes the unchanged check a bytes compare.
        assert entity.save_json() == pydantic_core.to_json(expected)
        entity.mark_saved()
        assert entity.unchanged_since_saved()
        entity.tags = {**(entity.tags or {}), "changed": 1}
        assert not entity.unchanged_since_saved()


def test_tags_in_another_order_are_unchanged() -> None:
    sim = ca.Simulation(
        id=uuid4(), name="s", experiment_id=uuid4(), tags={"a": 1, "b": 2}, files=[FILE]
    )
    sim.mark_saved()
    sim.tags = {"b": 2, "a": 1}  # same length, other bytes, equal JSON
    assert sim.unchanged_since_saved()
    sim.tags = {"b": 2, "a": 3}  # same length, not equal
    assert not sim.unchanged_since_saved()


def reference_update(entity: ca.models.Entity) -> dict[str, Any]:
    """An update as the protocol reads (§6.1-6.4, §8.2): the identifying fields,
    ``Configuration`` if it differs from what the server holds, and (Simulations, WorkItems)
    the files it does not hold; all that is set when nothing is known of the server."""
    wire, saved = entity.to_save_wire(), entity.saved_state() or {}
    update = {k: v for k, v in wire.items() if k in type(entity).update_fields}
    if "Configuration" in wire and wire["Configuration"] != saved.get("Configuration"):
        update["Configuration"] = wire["Configuration"]
    if type(entity).update_sends_files:
        added = [f for f in wire.get("Files", []) if f not in saved.get("Files", [])]
        if added:
            update["Files"] = added
    return update


ODD_FILE = ca.SimulationFile.from_bytes(',"Files":[{"x"}]}', b"odd")  # a member boundary's bytes
CONFIG = ca.Configuration(max_cores=2, environment_name='",{"Files":[]}')


def more_files(entity: Any) -> list[Any]:
    """Two files to add to ``entity`` (one whose name is a member boundary's bytes)."""
    kind = ca.WorkItemFile if isinstance(entity, ca.WorkItem) else ca.SimulationFile
    return [kind.from_bytes("config.json", b'{"a": 1}'), kind.from_bytes(ODD_FILE.file_name, b"")]


CHANGES = {
    "renamed": lambda e: setattr(e, "name", 'renamed ,"Files":[]'),
    "nothing": lambda e: None,
    "configured": lambda e: setattr(e, "configuration", ca.Configuration(max_cores=4)),
    "config dropped": lambda e: setattr(e, "configuration", None),
    "file added": lambda e: setattr(e, "files", [*(e.files or []), *more_files(e)]),
    "files reordered": lambda e: setattr(e, "files", list(reversed(e.files or []))),
    "files dropped": lambda e: setattr(e, "files", []),
    # A tag holding the text of the members compared as bytes (tags hold only scalars).
    "tags mimic": lambda e: setattr(
        e, "tags", {"t": f',"Configuration":{CONFIG.model_dump_json(by_alias=True)}}}'}
    ),
}


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("known", ["saved", "read", "unknown"])
def test_update_json_is_the_plain_reading(change: str, known: str) -> None:
    """The update body (which compares encoded bytes first) against the dict reading, after
    every kind of change, with the server state saved by the SDK, read from a row, or unknown."""
    exp = uuid4()
    starts: list[ca.models.Entity] = [
        ca.Simulation(name="s", experiment_id=exp, tags={"i": 1}, files=[FILE]),
        ca.Simulation(name="s", experiment_id=exp, files=[FILE, ODD_FILE], configuration=CONFIG),
        ca.Simulation(name="s", experiment_id=exp, configuration=CONFIG),
        ca.Simulation(name="s", experiment_id=exp),
        ca.Experiment(name="e", suite_id=uuid4(), configuration=CONFIG, tags=ODD_TAGS),
        ca.Suite(name="s", description="d"),
        ca.Suite(configuration=CONFIG),  # Configuration the first member
        ca.Simulation(files=[FILE]),  # Files the first member
        ca.WorkItem(name="w", description="d", files=[ORDER]),  # added files sent (§6.4)
        ca.AssetCollection(tags={"a": "b"}),
    ]
    checked = 0
    for start in starts:
        start.id = uuid4()
        if known == "read":
            entity = type(start).from_wire(start.to_wire())
        else:
            entity = start
            if known == "saved":
                entity.mark_saved()
        needs = {
            "renamed": "name",
            "configured": "configuration",
            "config dropped": "configuration",
        }
        if not hasattr(entity, needs.get(change, "files" if "file" in change else "id")):
            continue
        CHANGES[change](entity)
        body = entity.update_json()
        parsed = json.loads(body, object_pairs_hook=no_duplicate_keys)
        assert parsed == reference_update(entity), (change, body)
        assert next(iter(parsed)) == "Id"
        checked += 1
    assert checked >= 3


def _answer(body: object) -> httpx.Response:
    request = httpx.Request("POST", "http://comps.invalid/api/Simulations")
    return httpx.Response(200, content=json.dumps(body).encode(), request=request)


def test_ids_are_read_in_every_form_uuid_reads() -> None:
    ids = [uuid4() for _ in range(5)]
    forms = [
        str(ids[0]),
        ids[1].hex,
        "{" + str(ids[2]) + "}",
        "urn:uuid:" + str(ids[3]),
        str(ids[4]).upper(),
    ]
    parsed = parse_ids(_answer({"Ids": forms}), 5)
    assert parsed == ids and all(type(i) is UUID for i in parsed)


def test_ids_behind_a_byte_order_mark_are_read() -> None:
    ids = [uuid4(), uuid4()]
    request = httpx.Request("POST", "http://comps.invalid/api/Simulations")
    content = b"\xef\xbb\xbf" + json.dumps({"Ids": [str(i) for i in ids]}).encode()
    assert parse_ids(httpx.Response(200, content=content, request=request), 2) == ids


@pytest.mark.parametrize(
    "body",
    [
        {"Ids": ["not-an-id"]},
        {"Ids": [str(uuid4()), 5]},
        {"Ids": [None]},
        {"Ids": str(uuid4())},
        {"Ids": [str(uuid4())] * 2},  # two ids for one entity
        {"Ids": []},
        {},
        [str(uuid4())],
    ],
)
def test_ids_that_are_not_ids_are_a_malformed_answer(body: object) -> None:
    with pytest.raises(ca.MalformedResponseError):
        parse_ids(_answer(body), 1)
