"""Entity models (protocol §6): Suite, Experiment, Simulation, WorkItem, AssetCollection and
their children Configuration and HpcJob."""

from __future__ import annotations

import functools
import typing
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self
from uuid import UUID

import pydantic_core
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, model_serializer
from pydantic_core import core_schema

from ._base import AtLeastOne, AtLeastZero, EnumOrName, NonEmptyStr, Tags, WireDatetime, WireModel
from .enums import HpcState, Priority, SimulationState, WorkItemState
from .files import AssetCollectionFile, SimulationFile, WorkItemFile

__all__ = [
    "AssetCollection",
    "Configuration",
    "Entity",
    "Experiment",
    "HpcJob",
    "Simulation",
    "Suite",
    "WorkItem",
    "WorkerType",
]


class Configuration(WireModel):
    """How simulations run; Simulation overrides Experiment overrides Suite (§6.6)."""

    model_config = ConfigDict(frozen=True)

    environment_name: str | None = None
    simulation_input_args: str | None = None
    working_directory_root: str | None = None
    executable_path: str | None = None
    node_group_name: str | None = None
    maximum_number_of_retries: AtLeastZero | None = None
    priority: EnumOrName[Priority] | None = None
    min_cores: AtLeastOne | None = None
    max_cores: AtLeastOne | None = None
    exclusive: bool | None = None
    asset_collection_id: UUID | None = None

    def merged_over(self, base: Configuration | None) -> Configuration:
        """This configuration with unset keys taken from ``base`` (the level above)."""
        if base is None:
            return self
        return base.model_copy(update=self.model_dump(exclude_none=True))


class HpcJob(WireModel):
    """One run of a simulation on the cluster (``HPCJobs`` child); read-only."""

    id: UUID | None = None
    job_id: int | str | None = None
    job_state: EnumOrName[HpcState] | None = None
    priority: EnumOrName[Priority] | None = None
    working_directory: str | None = None
    output_directory_size: int | None = None
    submit_time: WireDatetime | None = None
    start_time: WireDatetime | None = None
    end_time: WireDatetime | None = None
    error_message: str | None = None
    configuration: Configuration | None = None


_FILE_SERVER_SET = {"__all__": {"length", "uri"}}
_SERVER_SET_FIELDS: Any = {
    "date_created": True,
    "last_modified": True,
    "state": True,
    "error_message": True,
    "hpc_jobs": True,
    "host_name": True,
    "worker_instance_id": True,
    "working_directory": True,
    "working_directory_size": True,
    "files": _FILE_SERVER_SET,
    "assets": _FILE_SERVER_SET,
}
_SAVED_FIELDS_EXCLUDED: Any = {**_SERVER_SET_FIELDS, "id": True}  # save_json: no Id either


class Entity(WireModel):
    """Fields every saved entity has. ``plural`` is its URL segment and JSON envelope key."""

    plural: ClassVar[str]
    children_names: ClassVar[frozenset[str]] = frozenset({"tags"})
    # What every update sends (§6.1-6.4); tags never: they go through /tags.
    update_fields: ClassVar[frozenset[str]] = frozenset({"Id", "Name", "Description"})
    update_sends_files: ClassVar[bool] = False

    id: UUID | None = None
    tags: Tags | None = None
    # The idempotency key, set by the SDK before the entity's first create and never
    # serialised: see _transfer/exactly_once.py. A str, not a tuple with its group: a dict of
    # atomic values is left out of the garbage collector's scans, and one holding a tuple is
    # not (a million saved entities would each have one scanned for as long as they live).
    _idempotency: str | None = PrivateAttr(default=None)
    # What the SDK last saved (the save JSON without Id), encoded: a re-save of an unchanged
    # entity is skipped and an update sends only what changed, as pyCOMPS's dirty tracking does
    # (§8.2). Bytes, not a dict: a million saved entities keep no containers for the garbage
    # collector to scan.
    _saved_json: bytes | None = PrivateAttr(default=None)
    # The server's row this entity was read from, kept by reference (no copy, no cost): what
    # the server holds, for an update to send only what changed.
    _server_row: Any = PrivateAttr(default=None)
    # When a create of this entity last left without an answer (time.monotonic()).
    _sent_at: float | None = PrivateAttr(default=None)

    if not TYPE_CHECKING:  # (to type checkers, attributes stay what the class declares)

        def __getattr__(self, name: str) -> Any:
            # Private attributes are read from where pydantic keeps them. Pydantic's own
            # __getattr__ first asks the PrivateAttr for a descriptor with a hasattr that raises
            # inside: microseconds per read, several reads per entity on every save.
            private = self.__pydantic_private__
            if private is not None and name in private:
                return private[name]
            return super().__getattr__(name)

    @classmethod
    def from_wire(cls, data: Any) -> Self:
        """Build from a server row, remembering it (see ``saved_state``)."""
        entity = super().from_wire(data)
        entity._server_row = data
        return entity

    def saved_state(self) -> dict[str, Any] | None:
        """What the server holds of this entity as far as the SDK knows (the save JSON without
        ``Id``): what the SDK last saved, else the row it was read from; None if neither."""
        saved = self._saved_state_json()
        return None if saved is None else pydantic_core.from_json(saved)

    def _saved_state_json(self) -> bytes | None:
        # (Read where pydantic keeps them: an attribute read of a private one first fails.)
        private = self.__pydantic_private__
        assert private is not None
        if private["_saved_json"] is None and private["_server_row"] is not None:
            self.mark_saved(type(self).from_wire(private["_server_row"]).save_json())
        saved: bytes | None = private["_saved_json"]
        return saved

    def _record_save(self, entity_id: UUID, saved: bytes, state: Any = None) -> None:
        """A create of this entity landed: set the id the server answered (and its first
        ``state``) and ``mark_saved(saved)``; an update needs only ``mark_saved``. The id and
        state are known valid (a parsed UUID, a member of the entity's own state enum), so they
        skip assignment validation, and everything is set where pydantic keeps it: this runs
        for every entity of every ``save_all``."""
        values, fields_set = self.__dict__, self.__pydantic_fields_set__
        values["id"] = entity_id
        fields_set.add("id")
        if state is not None:
            values["state"] = state
            fields_set.add("state")
        self.mark_saved(saved)

    def mark_saved(self, saved: bytes | None = None) -> None:
        """Record that the server now holds ``saved`` (a ``save_json``; default: this entity's
        save JSON now)."""
        # (Set where pydantic keeps it: its __setattr__ costs ~0.5 us, once per saved entity.)
        self.__pydantic_private__["_saved_json"] = (  # type: ignore[index]
            self.save_json() if saved is None else saved
        )

    def save_json(self) -> bytes:
        """The save JSON (``to_save_wire``) without ``Id``, encoded: what ``mark_saved`` keeps, and
        what a create sends before its defaults and reserved tags are added.

        Serialised to bytes by pydantic-core, with a serializer that leaves those fields out
        by its schema (``_save_serializer``): no dict in between, no exclusions to apply per
        call."""
        return _save_serializer(type(self)).to_json(self, by_alias=True, exclude_none=True)

    def unchanged_since_saved(self) -> bool:
        """Whether saving this entity again would change nothing the server holds."""
        return self.id is not None and self._update_of(self.save_json()) is None

    @property
    def idempotency_key(self) -> str | None:
        """The key the SDK creates this entity with (tag ``comps_async.key``), set when its first
        save starts. Saving the same object again looks the key up instead of creating it twice."""
        # (Read where pydantic keeps it: through the attribute even ``__getattr__`` above
        # comes after a failed lookup, and every save reads it per entity.)
        return self.__pydantic_private__["_idempotency"]  # type: ignore[index,no-any-return]

    def _give_key(self, key: str) -> None:
        """Set ``_idempotency`` where pydantic keeps it (its ``__setattr__`` costs ~0.5 us)."""
        self.__pydantic_private__["_idempotency"] = key  # type: ignore[index]

    def to_save_wire(self) -> dict[str, Any]:
        """The JSON object of a save: like ``to_wire`` without the fields only the server sets
        (dates, state, jobs, file ``Length``/``Uri``; §7.1, §8.2)."""
        return self.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude=_SERVER_SET_FIELDS
        )

    def to_update_wire(self) -> dict[str, Any]:
        """``update_json`` decoded: the JSON object that updates this entity."""
        return pydantic_core.from_json(self.update_json())  # type: ignore[no-any-return]

    def update_json(self) -> bytes:
        """The encoded JSON object that updates this entity, as pyCOMPS sends it (§6.1-6.4,
        §8.2): the identifying fields, ``Configuration`` only if it changed and (Simulations,
        WorkItems) ``Files`` only those added — COMPS appends files, so re-sending one would
        duplicate it. Without a known server state, what is set is sent."""
        return self._update(self.save_json(), self._saved_state_json())[0]

    def _update_of(self, save_json: bytes) -> tuple[bytes, Sequence[int]] | None:
        """None if the server holds this saved entity's ``save_json`` already, else ``_update``.
        Equal bytes are equal JSON. Unequal bytes of the same length may still be equal dicts
        (tags in another order); a different length never is (compact JSON)."""
        # (The saved state read where pydantic keeps it; from the row read, the first time.)
        saved = self.__pydantic_private__["_saved_json"]  # type: ignore[index]
        if saved is None:
            saved = self._saved_state_json()
        if saved is not None and (
            save_json == saved
            or (
                len(save_json) == len(saved)
                and pydantic_core.from_json(save_json) == pydantic_core.from_json(saved)
            )
        ):
            return None
        return self._update(save_json, saved)

    def _update(self, save_json: bytes, saved: bytes | None) -> tuple[bytes, Sequence[int]]:
        """``update_json`` from this entity's ``save_json`` and the ``saved`` state, and where
        the files it adds are in ``files`` (the content an update attaches)."""
        model, values = type(self), self.__dict__
        identifying = _identifying_serializer(model).to_json(  # (the Id first)
            self, by_alias=True, exclude_none=True
        )
        # Configuration and Files, if set, are the save JSON's last members: found by their
        # bytes, since ``,"`` is always a member boundary in compact JSON (inside a string
        # ``"`` is escaped) and no other member holds an object under "Configuration" or an
        # array under "Files" (tags hold scalars; hpc jobs, whose configuration would, are not
        # saved). Not found with the comma: the first member, the whole object.
        if values.get("configuration") is not None:
            cut = max(save_json.find(b',"Configuration":{'), 0)
        elif model.update_sends_files and values.get("files"):
            cut = max(save_json.find(b',"Files":['), 0)
        else:
            return identifying, ()  # nothing else to send
        # Both are compact JSON of one schema: if the saved one ends in these bytes, the
        # server holds this Configuration and these Files.
        if saved is not None and saved.endswith(save_json[cut:]):
            return identifying, ()
        # Else which changed, compared as JSON (equal values may differ in bytes).
        now = pydantic_core.from_json(save_json)
        known = {} if saved is None else pydantic_core.from_json(saved)
        changes: dict[str, Any] = {}
        if "Configuration" in now and now["Configuration"] != known.get("Configuration"):
            changes["Configuration"] = now["Configuration"]
        added: list[int] = []
        if model.update_sends_files:
            files, known_files = now.get("Files", []), known.get("Files", [])
            added = [i for i, file in enumerate(files) if file not in known_files]
            if added:
                changes["Files"] = [files[i] for i in added]
        if not changes:
            return identifying, ()
        return identifying[:-1] + b"," + pydantic_core.to_json(changes)[1:], added

    def create_defaults_json(self, owner: str | None) -> bytes:
        """What pyCOMPS adds to the body that creates this entity (§6.1-6.4, §8.2), as encoded
        JSON object members (``b""`` when nothing): ``Owner``, the logged-in user, unless set,
        and ``"Files": []`` when there are no files."""
        values = self.__dict__  # every field's value (read here: attribute reads cost more)
        return _create_defaults_json(
            owner if owner and "owner" in values and values["owner"] is None else None,
            "files" in values and values["files"] is None,
        )


def _model_fields(model: type[BaseModel]) -> dict[str, Any]:
    """The model-fields core schema of ``model`` (under the model and its validators)."""
    schema: Any = model.__pydantic_core_schema__
    while schema["type"] != "model-fields":
        schema = schema["schema"]
    return schema  # type: ignore[no-any-return]


def _serializer_of(fields: dict[str, Any]) -> core_schema.ModelSchema:
    """A model schema with these fields that serializes any model instance by them.

    ``cls`` is BaseModel, not the model: for a model class of its own pydantic-core would use
    that class's prebuilt serializer, every field included, whatever the fields given here.
    (If it ever did so anyway, test_save_encoding would see server-set fields appear.)"""
    return core_schema.model_schema(cls=BaseModel, schema=core_schema.model_fields_schema(fields))


@functools.cache
def _save_serializer(model: type[Entity]) -> pydantic_core.SchemaSerializer:
    """Encodes ``save_json``: the model's own field schemas without the fields the server sets
    and without ``Id`` (``_SAVED_FIELDS_EXCLUDED``), down to its files' ``Length`` and ``Uri``.
    Left out by the schema, not by ``exclude=``: the per-call exclusion of every file's two
    fields cost a third of each encoding."""
    fields = {}
    for name, field in _model_fields(model)["fields"].items():
        excluded = _SAVED_FIELDS_EXCLUDED.get(name)
        if excluded is True:
            continue
        if excluded is not None:  # the files: each without the fields the server sets
            listed = typing.get_args(model.model_fields[name].annotation)[0]  # list[File]
            (file_model,) = typing.get_args(listed)
            file_fields = _model_fields(file_model)["fields"]
            kept = {n: f for n, f in file_fields.items() if n not in excluded["__all__"]}
            files = core_schema.nullable_schema(core_schema.list_schema(_serializer_of(kept)))
            field = core_schema.model_field(files, serialization_alias=field["serialization_alias"])
        fields[name] = field
    return pydantic_core.SchemaSerializer(_serializer_of(fields))


@functools.cache
def _identifying_serializer(model: type[Entity]) -> pydantic_core.SchemaSerializer:
    """Encodes the fields an update of ``model`` always sends (``update_fields``): the model's
    own schemas for those fields alone. (The model's serializer with ``include=`` costs half
    as much again: it walks every field and builds the filter on each call.)"""
    fields = _model_fields(model)["fields"].items()
    return pydantic_core.SchemaSerializer(
        _serializer_of(
            {n: f for n, f in fields if f.get("serialization_alias") in model.update_fields}
        )
    )


@functools.lru_cache(maxsize=64)
def _create_defaults_json(owner: str | None, no_files: bool) -> bytes:
    """``create_defaults_json``, encoded once per distinct answer (one per user, typically)."""
    defaults: dict[str, Any] = {"Owner": owner} if owner else {}
    if no_files:
        defaults["Files"] = []
    return pydantic_core.to_json(defaults)[1:-1]


class _OwnedEntity(Entity):
    """Fields of every entity with a name and an owner (all but AssetCollection)."""

    name: NonEmptyStr | None = None
    description: str | None = None
    owner: str | None = None
    date_created: WireDatetime | None = None
    last_modified: WireDatetime | None = None


class Suite(_OwnedEntity):
    """A group of experiments."""

    plural: ClassVar[str] = "Suites"
    children_names: ClassVar[frozenset[str]] = frozenset({"tags", "configuration"})

    configuration: Configuration | None = None


class Experiment(_OwnedEntity):
    """A group of simulations sharing a configuration."""

    plural: ClassVar[str] = "Experiments"
    children_names: ClassVar[frozenset[str]] = frozenset({"tags", "configuration"})
    update_fields: ClassVar[frozenset[str]] = frozenset({"Id", "Name", "Description", "SuiteId"})

    suite_id: UUID | None = None
    configuration: Configuration | None = None


class Simulation(_OwnedEntity):
    """One model run. ``state`` travels as ``SimulationState``, ``hpc_jobs`` as ``HPCJobs``."""

    plural: ClassVar[str] = "Simulations"
    children_names: ClassVar[frozenset[str]] = frozenset(
        {"tags", "configuration", "files", "hpc_jobs"}
    )
    update_fields: ClassVar[frozenset[str]] = frozenset(
        {"Id", "Name", "Description", "ExperimentId"}
    )
    update_sends_files: ClassVar[bool] = True

    experiment_id: UUID | None = None
    state: EnumOrName[SimulationState] | None = Field(default=None, alias="SimulationState")
    error_message: str | None = None
    configuration: Configuration | None = None
    files: list[SimulationFile] | None = None
    hpc_jobs: list[HpcJob] | None = Field(default=None, alias="HPCJobs")


class WorkerType(BaseModel):
    """The worker a WorkItem runs on, e.g. ``DockerWorker`` ``1.0.0.0_RELEASE``.

    Inferred (§6.4): pyCOMPS *sends* lower-case ``name``/``version`` and reads PascalCase back. We
    send what pyCOMPS sends, because that is proven against real COMPS, and accept both on read.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    name: NonEmptyStr = Field(validation_alias=AliasChoices("name", "Name"))
    version: NonEmptyStr = Field(validation_alias=AliasChoices("version", "Version"))

    @model_serializer
    def _wire(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


class WorkItem(_OwnedEntity):
    """A job run by a COMPS worker from its WorkOrder.json (``State`` on the wire)."""

    plural: ClassVar[str] = "WorkItems"
    children_names: ClassVar[frozenset[str]] = frozenset({"tags", "files", "plugins"})
    update_sends_files: ClassVar[bool] = True  # an update sends the files added (§6.4)

    worker: WorkerType | None = None
    environment_name: str | None = None
    state: EnumOrName[WorkItemState] | None = None
    error_message: str | None = None
    host_name: str | None = None
    worker_instance_id: str | None = None
    priority: EnumOrName[Priority] | None = None
    working_directory: str | None = None
    working_directory_size: int | None = None
    asset_collection_id: UUID | None = None
    files: list[WorkItemFile] | None = None
    # Format unknown (pyCOMPS cannot decode it, §6.4): kept raw.
    plugins: list[Any] | None = None


class AssetCollection(Entity):
    """An immutable set of input files shared by many simulations (tags stay editable)."""

    plural: ClassVar[str] = "AssetCollections"
    children_names: ClassVar[frozenset[str]] = frozenset({"tags", "assets"})

    date_created: WireDatetime | None = None
    assets: list[AssetCollectionFile] | None = None


ENTITY_TYPES: tuple[type[Entity], ...] = (Suite, Experiment, Simulation, WorkItem, AssetCollection)
