"""SQLite store of the local server: entities, tags, files, HPC jobs, relations.

One database file per data dir, WAL mode. Methods are blocking and serialised by one lock; the
app runs them in worker threads. Hot, filterable fields are columns; the rest of an entity's
basic fields are a JSON document, so filters work on any wire field with ``json_extract``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from ..models import format_wire_datetime

__all__ = ["KINDS", "BadRequest", "Conflict", "EntityKind", "NotFound", "Store"]


T = TypeVar("T")


class BadRequest(ValueError):
    """The request is malformed; becomes 400."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class NotFound(LookupError):
    """Unknown or deleted id; becomes 404."""


class Conflict(RuntimeError):
    """Illegal state transition; becomes 409."""


@dataclass(frozen=True)
class EntityKind:
    """Wire facts about one entity type."""

    name: str
    plural: str
    basic: tuple[str, ...]
    children: tuple[str, ...]
    parent_key: str | None = None
    state_key: str | None = None
    default_count: int = 100_000
    max_count: int = 100_000


_STD = ("Name", "Description", "Owner", "DateCreated", "LastModified")
KINDS: dict[str, EntityKind] = {
    k.name: k
    for k in (
        # The server caps Suite/Experiment queries at 1000 rows (§5.1 [X]); the SDK must page.
        EntityKind(
            "Suite",
            "Suites",
            ("Id", *_STD),
            ("Tags", "Configuration"),
            default_count=1000,
            max_count=1000,
        ),
        EntityKind(
            "Experiment",
            "Experiments",
            ("Id", "SuiteId", *_STD),
            ("Tags", "Configuration"),
            parent_key="SuiteId",
            default_count=1000,
            max_count=1000,
        ),
        EntityKind(
            "Simulation",
            "Simulations",
            ("Id", "ExperimentId", *_STD, "SimulationState", "ErrorMessage"),
            ("Tags", "Configuration", "Files", "HPCJobs"),
            parent_key="ExperimentId",
            state_key="SimulationState",
        ),
        EntityKind(
            "WorkItem",
            "WorkItems",
            (
                "Id",
                "Name",
                "Worker",
                "EnvironmentName",
                "Description",
                "Owner",
                "DateCreated",
                "LastModified",
                "State",
                "ErrorMessage",
                "HostName",
                "WorkerInstanceId",
                "Priority",
                "WorkingDirectory",
                "WorkingDirectorySize",
                "AssetCollectionId",
            ),
            ("Tags", "Files", "Plugins"),
            state_key="State",
        ),
        EntityKind(
            "AssetCollection", "AssetCollections", ("Id", "DateCreated"), ("Tags", "Assets")
        ),
    )
}
BY_PLURAL = {k.plural.lower(): k for k in KINDS.values()}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    parent_id TEXT,
    name TEXT,
    owner TEXT,
    state TEXT,
    date_created TEXT NOT NULL,
    last_modified TEXT NOT NULL,
    doc TEXT NOT NULL DEFAULT '{}',
    configuration TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    expire_now INTEGER NOT NULL DEFAULT 0
);
-- Indexes for a million rows (tests/test_scale.py checks the query plans):
-- listing a parent's children in creation order and counting them, from the index alone;
DROP INDEX IF EXISTS ix_entities_parent;
CREATE INDEX IF NOT EXISTS ix_entities_listing ON entities(kind, parent_id, deleted);
CREATE INDEX IF NOT EXISTS ix_entities_state ON entities(kind, state);
CREATE TABLE IF NOT EXISTS tags (
    entity_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT,
    PRIMARY KEY (entity_id, key)
);
-- tag look-ups (the exactly-once keys), which compare values case-insensitively as COMPS does.
DROP INDEX IF EXISTS ix_tags_kv;
CREATE INDEX IF NOT EXISTS ix_tags_kv_nocase ON tags(key, value COLLATE NOCASE);
-- Simulations per (experiment, state), kept by triggers on every write to entities, whatever
-- the path: Stats read a few rows instead of counting an experiment's million.
CREATE TABLE IF NOT EXISTS state_counts (
    parent_id TEXT NOT NULL, state TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (parent_id, state)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS tr_counts_insert AFTER INSERT ON entities
WHEN NEW.kind = 'Simulation' AND NEW.deleted = 0 AND NEW.parent_id IS NOT NULL BEGIN
    INSERT INTO state_counts VALUES (NEW.parent_id, NEW.state, 1)
    ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS tr_counts_update AFTER UPDATE OF state, deleted, parent_id ON entities
WHEN NEW.kind = 'Simulation' BEGIN
    UPDATE state_counts SET n = n - 1
    WHERE OLD.deleted = 0 AND parent_id = OLD.parent_id AND state = OLD.state;
    INSERT INTO state_counts SELECT NEW.parent_id, NEW.state, 1
    WHERE NEW.deleted = 0 AND NEW.parent_id IS NOT NULL
    ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS tr_counts_delete AFTER DELETE ON entities
WHEN OLD.kind = 'Simulation' AND OLD.deleted = 0 BEGIN
    UPDATE state_counts SET n = n - 1 WHERE parent_id = OLD.parent_id AND state = OLD.state;
END;
CREATE TABLE IF NOT EXISTS files (
    entity_id TEXT NOT NULL, ord INTEGER NOT NULL, md5 TEXT NOT NULL, length INTEGER NOT NULL,
    doc TEXT NOT NULL, PRIMARY KEY (entity_id, ord)
);
CREATE TABLE IF NOT EXISTS hpc_jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, entity_id TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_jobs_entity ON hpc_jobs(entity_id);
CREATE TABLE IF NOT EXISTS relations (
    work_item_id TEXT NOT NULL, relation TEXT NOT NULL, object_type TEXT NOT NULL,
    related_id TEXT NOT NULL, date_created TEXT NOT NULL,
    PRIMARY KEY (work_item_id, relation, object_type, related_id)
);
CREATE INDEX IF NOT EXISTS ix_relations_related ON relations(related_id);
CREATE TABLE IF NOT EXISTS outputs (
    job_id TEXT NOT NULL, path TEXT NOT NULL, length INTEGER NOT NULL, md5 TEXT NOT NULL,
    PRIMARY KEY (job_id, path)
);
"""

_FILTER = re.compile(r"^\s*(\w+)\s*(!=|<=|>=|=|~|<|>)(.*)$", re.DOTALL)
_TAG_FILTER = re.compile(r"^([^=!~<>]+?)\s*(?:(!=|<=|>=|=|~|<|>)(.*))?$", re.DOTALL)
_COLUMNS = {
    "Id": "id",
    "Name": "name",
    "Owner": "owner",
    "DateCreated": "date_created",
    "LastModified": "last_modified",
}
ACTIVE_SIM_STATES = ("CommissionRequested", "Provisioning", "Commissioned", "Running", "Retry")
ACTIVE_WI_STATES = (
    "CommissionRequested",
    "Commissioned",
    "Validating",
    "Running",
    "Waiting",
    "ResumeRequested",
    "Resumed",
)


def now_wire() -> str:
    """The current time as COMPS writes dates."""
    return format_wire_datetime(datetime.now(UTC))


def parse_uuid(text: str, what: str = "id") -> str:
    """Canonical lower-case UUID text, or BadRequest."""
    try:
        return str(uuid.UUID(str(text)))
    except ValueError:
        raise BadRequest(f"{what} {text!r} is not a valid UUID") from None


def _column(kind: EntityKind, key: str) -> str:
    if key == kind.parent_key:
        return "e.parent_id"
    if key == kind.state_key:
        return "e.state"
    if key in _COLUMNS:
        return f"e.{_COLUMNS[key]}"
    if key in kind.basic:
        return f"json_extract(e.doc, '$.{key}')"
    raise BadRequest(f"{kind.name} has no field {key!r}")


def _compare(expr: str, op: str, value: str, params: list[Any]) -> str:
    """SQL for ``expr <op> value`` with COMPS semantics: case-insensitive text, ``~`` as
    contains with ``%`` wildcards, numbers compared as numbers."""
    value = value.strip()
    if op == "~":
        params.append(value if "%" in value else f"%{value}%")
        return f"{expr} LIKE ?"
    sql_op = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[op]
    try:
        number = float(value)
    except ValueError:
        # Date filters come as 'YYYY-MM-DD HH:MM:SS' or ISO; stored dates are ISO with 'T'.
        params.append(re.sub(r"^(\d{4}-\d\d-\d\d) ", r"\1T", value))
        if op == "!=":
            return f"({expr} IS NULL OR {expr} != ? COLLATE NOCASE)"
        return f"{expr} {sql_op} ? COLLATE NOCASE"
    params.append(number)
    return (
        f"(CASE WHEN typeof({expr}) IN ('integer','real') THEN {expr} "
        f"ELSE CAST({expr} AS REAL) END) {sql_op} ?"
    )


class Store:
    """The database of one data dir."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        counted = self._has_table("state_counts")
        self._conn.executescript(_SCHEMA)
        if not counted:  # a data dir from before the counts: count what it holds, once
            self._conn.execute(
                "INSERT INTO state_counts SELECT parent_id, state, COUNT(*) FROM entities "
                "WHERE kind = 'Simulation' AND deleted = 0 AND parent_id IS NOT NULL "
                "GROUP BY parent_id, state"
            )
        self._lock = threading.RLock()  # reads may run inside a write transaction

    def _has_table(self, name: str) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        return self._conn.execute(query, (name,)).fetchone() is not None

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one transaction."""
        with self._tx() as conn:
            return fn(conn)

    # --- reads ---------------------------------------------------------------------------------

    def find(
        self,
        kind: EntityKind,
        *,
        ids: Sequence[str] | None = None,
        filters: Sequence[str] = (),
        tag_filters: Sequence[str] = (),
        orderby: str | None = None,
        offset: int = 0,
        count: int | None = None,
        parent_id: str | None = None,
    ) -> tuple[list[sqlite3.Row], int]:
        """Rows matching the criteria and the total number of matches."""
        where = ["e.kind = ?", "e.deleted = 0"]
        params: list[Any] = [kind.name]
        if ids is not None:
            where.append(f"e.id IN ({','.join('?' * len(ids))})")
            params.extend(ids)
        if parent_id is not None:
            where.append("e.parent_id = ?")
            params.append(parent_id)
        for text in filters:
            match = _FILTER.match(text)
            if not match:
                raise BadRequest(f"malformed filter {text!r}")
            key, op, value = match.groups()
            if key.lower() == "istoplevel":  # web-UI WorkItem filter (§12): all are top level here
                continue
            canonical = next((k for k in kind.basic if k.lower() == key.lower()), key)
            if canonical in ("Id", kind.parent_key) and op == "=":
                # Ids are stored in canonical form: an exact comparison reads the index (a
                # case-insensitive one would read every row of the kind).
                where.append(f"{_column(kind, canonical)} = ?")
                params.append(parse_uuid(value, canonical))
                continue
            where.append(_compare(_column(kind, canonical), op, value, params))
        # The first equality (or presence) tag filter drives the query from the tags index: a
        # key look-up reads its ~100 rows, not every row of the kind. (CROSS JOIN is SQLite's
        # way of fixing the join order; without statistics it would start from entities.)
        source = "entities e"
        source_params: list[Any] = []
        for text in tag_filters:
            match = _TAG_FILTER.match(text)
            if not match:
                raise BadRequest(f"malformed tag filter {text!r}")
            key, op, value = match.groups()
            if not source_params and op in (None, "="):  # (no tag filter drives yet)
                source_params.append(key.strip())
                if op is not None:
                    cond = " AND " + _compare("t0.value", op, value, source_params)
                else:
                    cond = ""
                source = (
                    f"tags t0 CROSS JOIN entities e ON e.id = t0.entity_id AND t0.key = ?{cond}"
                )
                continue
            params.append(key.strip())
            cond = "" if op is None else " AND " + _compare("t.value", op, value, params)
            where.append(
                f"EXISTS (SELECT 1 FROM tags t WHERE t.entity_id = e.id AND t.key = ?{cond})"
            )
        params = [*source_params, *params]
        order = "e.seq"
        if orderby:
            words = orderby.split()
            canonical = next((k for k in kind.basic if k.lower() == words[0].lower()), words[0])
            direction = "DESC" if len(words) > 1 and words[1].lower() == "desc" else "ASC"
            order = f"{_column(kind, canonical)} {direction}, e.seq {direction}"
        limit = min(count or kind.default_count, kind.max_count)
        sql_where = " AND ".join(where)
        with self._lock:
            total = self._conn.execute(
                f"SELECT COUNT(*) FROM {source} WHERE {sql_where}", params
            ).fetchone()[0]
            rows = self._conn.execute(
                f"SELECT e.* FROM {source} WHERE {sql_where} ORDER BY {order} LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
        return rows, total

    def get(self, kind: EntityKind, entity_id: str) -> sqlite3.Row:
        """One live entity or NotFound."""
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM entities WHERE id = ? AND kind = ? AND deleted = 0",
                (entity_id, kind.name),
            ).fetchone()
        if row is None:
            raise NotFound(f"no {kind.name} with id {entity_id}")
        return row  # type: ignore[no-any-return]

    def children(self, ids: Sequence[str], wanted: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Tags / Files / HPCJobs of many entities in a few queries: {id: {child: value}}."""
        out: dict[str, dict[str, Any]] = {i: {} for i in ids}
        wanted = set(wanted)
        if not ids:
            return out
        marks = ",".join("?" * len(ids))
        with self._lock:
            if "Tags" in wanted:
                for i in ids:
                    out[i]["Tags"] = {}
                for r in self._conn.execute(
                    f"SELECT entity_id, key, value FROM tags WHERE entity_id IN ({marks})", ids
                ):
                    out[r[0]]["Tags"][r[1]] = "" if r[2] is None else r[2]  # see _tag_text
            if wanted & {"Files", "Assets"}:
                for r in self._conn.execute(
                    f"SELECT entity_id, md5, length, doc FROM files WHERE entity_id IN ({marks}) "
                    "ORDER BY entity_id, ord",
                    ids,
                ):
                    doc = json.loads(r[3])
                    out[r[0]].setdefault("_files", []).append(doc | {"Length": r[2]})
            if "HPCJobs" in wanted:
                for i in ids:
                    out[i]["HPCJobs"] = []
                for r in self._conn.execute(
                    f"SELECT entity_id, doc FROM hpc_jobs WHERE entity_id IN ({marks}) "
                    "ORDER BY seq",
                    ids,
                ):
                    out[r[0]]["HPCJobs"].append(json.loads(r[1]))
        return out

    def effective_configuration(self, kind: EntityKind, row: Any) -> dict[str, Any] | None:
        """Configuration merged Suite -> Experiment -> Simulation (``coalesceconfig``)."""
        chain = [json.loads(row["configuration"] or "{}")]
        parent, parent_kind = row["parent_id"], kind.name
        while parent and parent_kind in ("Simulation", "Experiment"):
            up = self.query("SELECT parent_id, configuration FROM entities WHERE id = ?", (parent,))
            if not up:
                break
            chain.append(json.loads(up[0]["configuration"] or "{}"))
            parent = up[0]["parent_id"]
            parent_kind = "Experiment" if parent_kind == "Simulation" else "Suite"
        merged: dict[str, Any] = {}
        for level in reversed(chain):
            merged.update({k: v for k, v in level.items() if v is not None})
        return merged or None

    def state_counts(self, kind: EntityKind, entity_id: str) -> dict[str, int]:
        """Per-state simulation counts under an experiment or suite (Stats, §12)."""
        self.get(kind, entity_id)
        if kind.name == "Experiment":
            scope, args = "parent_id = ?", [entity_id]
        elif kind.name == "Suite":
            scope = (
                "parent_id IN (SELECT id FROM entities WHERE kind='Experiment' "
                "AND parent_id = ? AND deleted = 0)"
            )
            args = [entity_id]
        else:
            raise BadRequest(f"Stats are offered for Experiments and Suites, not {kind.plural}")
        rows = self.query(
            f"SELECT state, SUM(n) FROM state_counts WHERE {scope} AND n > 0 GROUP BY state", args
        )
        return {r[0]: r[1] for r in rows}

    # --- what the dashboard and the metrics routes ask ----------------------------------------

    def simulation_counts(self) -> list[tuple[str, str, int]]:
        """(owner, state, simulations) over every live simulation."""
        rows = self.query(
            "SELECT owner, state, COUNT(*) FROM entities WHERE kind = 'Simulation' "
            "AND deleted = 0 GROUP BY owner, state ORDER BY owner, state"
        )
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    def work_item_counts(self) -> dict[str, int]:
        """Live work items per state."""
        rows = self.query(
            "SELECT state, COUNT(*) FROM entities WHERE kind = 'WorkItem' AND deleted = 0 "
            "GROUP BY state"
        )
        return {str(r[0]): int(r[1]) for r in rows}

    def files_of(self, entity_id: str) -> list[tuple[int, str, int, dict[str, Any]]]:
        """(position, md5, length, file document) of an entity's files, in order."""
        rows = self.query(
            "SELECT ord, md5, length, doc FROM files WHERE entity_id = ? ORDER BY ord", (entity_id,)
        )
        return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def asset_bytes(self) -> int:
        """Bytes of distinct content referenced by entities' files (the blob store in use)."""
        (total,) = self.query(
            "SELECT COALESCE(SUM(length), 0) FROM (SELECT DISTINCT md5, length FROM files)"
        )[0]
        return int(total)

    def queue(self, active: Sequence[str]) -> list[dict[str, Any]]:
        """Experiments with simulations in ``active`` states: owner, priority, create times and
        per-state counts of those simulations (``/api/Metrics/Queue``)."""
        marks = ",".join("?" * len(active))
        rows = self.query(
            "SELECT x.id, x.owner, x.doc, s.state, COUNT(*), MIN(s.date_created), "
            "MAX(s.date_created) FROM entities s JOIN entities x ON x.id = s.parent_id "
            f"WHERE s.kind = 'Simulation' AND s.deleted = 0 AND s.state IN ({marks}) "
            "GROUP BY x.id, s.state",
            list(active),
        )
        buckets: dict[str, dict[str, Any]] = {}
        for exp_id, owner, doc, state, count, first, last in rows:
            config = json.loads(doc).get("Configuration") or {}
            bucket = buckets.setdefault(
                exp_id,
                {
                    "ExperimentId": exp_id,
                    "Owner": owner,
                    "Priority": config.get("Priority") or "Normal",
                    "NodeGroup": config.get("NodeGroupName") or None,
                    "FirstCreateTime": first,
                    "LastCreateTime": last,
                    "SimulationCount": 0,
                    "SimulationStateCount": {},
                },
            )
            bucket["SimulationCount"] += count
            bucket["SimulationStateCount"][state] = count
            bucket["FirstCreateTime"] = min(bucket["FirstCreateTime"], first)
            bucket["LastCreateTime"] = max(bucket["LastCreateTime"], last)
        return list(buckets.values())

    @contextmanager
    def statements(self) -> Iterator[list[str]]:
        """The SQL this store runs while the block runs, parameters inlined (to check query
        plans against what real requests ask)."""
        seen: list[str] = []
        with self._lock:
            self._conn.set_trace_callback(seen.append)
        try:
            yield seen
        finally:
            with self._lock:
                self._conn.set_trace_callback(None)

    def plan(self, sql: str) -> list[str]:
        """SQLite's plan for ``sql`` (EXPLAIN QUERY PLAN), one line a step."""
        return [str(row[-1]) for row in self.query(f"EXPLAIN QUERY PLAN {sql}")]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """A read-only query (dashboard, runner scans, tests)."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # --- writes --------------------------------------------------------------------------------

    @staticmethod
    def insert_entity(
        conn: sqlite3.Connection,
        kind: EntityKind,
        *,
        parent_id: str | None,
        name: str | None,
        owner: str,
        state: str | None,
        doc: dict[str, Any],
        configuration: dict[str, Any] | None,
        tags: dict[str, Any] | None,
        files: Sequence[tuple[str, int, dict[str, Any]]] = (),
    ) -> str:
        """Insert one entity inside a transaction; returns its new id."""
        entity_id = str(uuid.uuid4())
        stamp = now_wire()
        conn.execute(
            "INSERT INTO entities (id, kind, parent_id, name, owner, state, date_created, "
            "last_modified, doc, configuration) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                entity_id,
                kind.name,
                parent_id,
                name,
                owner,
                state,
                stamp,
                stamp,
                json.dumps(doc),
                json.dumps(configuration) if configuration else None,
            ),
        )
        Store.write_tags(conn, entity_id, tags or {}, "Replace")
        Store.add_files(conn, entity_id, files)
        return entity_id

    @staticmethod
    def update_entity(
        conn: sqlite3.Connection,
        entity_id: str,
        *,
        name: str | None,
        doc: dict[str, Any],
        configuration: dict[str, Any] | None,
        parent_id: str | None = None,
    ) -> None:
        """An update: the document replaced, the name, configuration and parent when given."""
        conn.execute(
            "UPDATE entities SET doc = ?, last_modified = ?, name = COALESCE(?, name), "
            "configuration = COALESCE(?, configuration), parent_id = COALESCE(?, parent_id) "
            "WHERE id = ?",
            (
                json.dumps(doc),
                now_wire(),
                name,
                json.dumps(configuration) if configuration is not None else None,
                parent_id,
                entity_id,
            ),
        )

    @staticmethod
    def add_files(
        conn: sqlite3.Connection, entity_id: str, files: Sequence[tuple[str, int, dict[str, Any]]]
    ) -> None:
        """Append file entries (md5, length, doc)."""
        start = conn.execute(
            "SELECT COALESCE(MAX(ord) + 1, 0) FROM files WHERE entity_id = ?", (entity_id,)
        ).fetchone()[0]
        conn.executemany(
            "INSERT INTO files (entity_id, ord, md5, length, doc) VALUES (?,?,?,?,?)",
            [
                (entity_id, start + i, md5, length, json.dumps(doc))
                for i, (md5, length, doc) in enumerate(files)
            ],
        )

    @staticmethod
    def write_tags(
        conn: sqlite3.Connection, entity_id: str, tags: dict[str, Any], mode: str
    ) -> None:
        """Apply tags with OperationMode Merge, Replace or Delete (§9)."""
        if mode == "Replace":
            conn.execute("DELETE FROM tags WHERE entity_id = ?", (entity_id,))
        if mode == "Delete":
            conn.executemany(
                "DELETE FROM tags WHERE entity_id = ? AND key = ?", [(entity_id, k) for k in tags]
            )
            return
        conn.executemany(
            "INSERT OR REPLACE INTO tags (entity_id, key, value) VALUES (?,?,?)",
            [(entity_id, str(k), _tag_text(v)) for k, v in tags.items()],
        )


def _tag_text(value: Any) -> str:
    # COMPS stores tag values as text (§4.6); a tag sent without a value (null, pyCOMPS's
    # "flag" tags) comes back as "", as COMPS answers and idmtools expects (NULLs that older
    # data dirs hold are read back the same way).
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (dict, list)):
        raise BadRequest("tag values must be strings, numbers, booleans or null")
    return str(value)
