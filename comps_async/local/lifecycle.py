"""The store's SQL for changes that reach past one row: commission and cancel (of one
simulation or work item, or every simulation of an experiment or a suite), deletes with their
cascades, tags, and work-item relations. Routes parse HTTP and call these. Blocking: called in
worker threads (``ServerState.db``), as all store work is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .store import ACTIVE_SIM_STATES, ACTIVE_WI_STATES, KINDS, Conflict, EntityKind, Store

__all__ = ["Lifecycle"]


class Lifecycle:
    """State changes, deletes, tags and relations, over one ``Store``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def change_state(self, kind: EntityKind, entity_id: str, commission: bool, now: str) -> int:
        """Commission (or cancel) an entity; for an experiment or a suite, its simulations.
        Returns how many rows changed (0: already on their way, which is not an error)."""
        store = self._store
        row = store.get(kind, entity_id)
        active = ACTIVE_WI_STATES if kind.name == "WorkItem" else ACTIVE_SIM_STATES
        state = row["state"] if kind.name in ("Simulation", "WorkItem") else None
        if state is not None:  # a single simulation or work item
            if commission and state != "Created":
                if state in active:
                    return 0  # already on its way: commissioning is idempotent
                raise Conflict(
                    f"{kind.name} {entity_id} is {state}; only Created can be commissioned"
                )
            if not commission and state not in active:
                if state in ("CancelRequested", "Canceled"):
                    return 0
                raise Conflict(f"{kind.name} {entity_id} is {state}; it is not running")
            new = "CommissionRequested" if commission else "CancelRequested"
            return store.run(
                lambda conn: int(
                    conn.execute(
                        "UPDATE entities SET state = ?, last_modified = ? WHERE id = ?",
                        (new, now, entity_id),
                    ).rowcount
                )
            )
        scope = (
            "parent_id = ?"
            if kind.name == "Experiment"
            else "parent_id IN (SELECT id FROM entities WHERE kind = 'Experiment' AND "
            "parent_id = ? AND deleted = 0)"
        )
        if commission:
            sql = (
                "UPDATE entities SET state = 'CommissionRequested', last_modified = ? "
                f"WHERE kind = 'Simulation' AND deleted = 0 AND state = 'Created' AND {scope}"
            )
        else:
            marks = ",".join(f"'{s}'" for s in ACTIVE_SIM_STATES)
            sql = (
                "UPDATE entities SET state = 'CancelRequested', last_modified = ? "
                f"WHERE kind = 'Simulation' AND deleted = 0 AND state IN ({marks}) "
                f"AND {scope}"
            )
        return store.run(lambda conn: int(conn.execute(sql, (now, entity_id)).rowcount))

    def delete(self, kind: EntityKind, entity_id: str, expire_now: bool, now: str) -> None:
        """Soft-delete an entity and what it holds (a suite's experiments, their simulations);
        a deleted running simulation is canceled so that the runner stops it."""

        def tx(conn: Any) -> None:
            self._store.get(kind, entity_id)
            ids = [entity_id]
            if kind.name == "Suite":
                ids += [
                    r[0]
                    for r in conn.execute(
                        "SELECT id FROM entities WHERE parent_id = ? AND kind = 'Experiment'",
                        (entity_id,),
                    )
                ]
            if kind.name in ("Suite", "Experiment"):
                marks = ",".join("?" * len(ids))
                ids += [
                    r[0]
                    for r in conn.execute(
                        f"SELECT id FROM entities WHERE kind = 'Simulation' AND parent_id IN "
                        f"({marks})",
                        ids,
                    )
                ]
            conn.executemany(
                "UPDATE entities SET deleted = 1, expire_now = ?, last_modified = ? WHERE id = ?",
                [(int(expire_now), now, i) for i in ids],
            )
            active = ",".join(f"'{s}'" for s in ACTIVE_SIM_STATES)
            conn.executemany(
                f"UPDATE entities SET state = 'CancelRequested' WHERE id = ? AND state IN "
                f"({active})",
                [(i,) for i in ids],
            )

        self._store.run(tx)

    def write_tags(
        self, kind: EntityKind, entity_id: str, tags: Mapping[str, Any], mode: str
    ) -> None:
        """Merge, replace or delete an entity's tags."""

        def tx(conn: Any) -> None:
            self._store.get(kind, entity_id)
            Store.write_tags(conn, entity_id, dict(tags), mode)

        self._store.run(tx)

    def relate(
        self, work_item: str, relation: str, object_type: str, related: str, now: str
    ) -> None:
        """Record that a work item depends on (or created) an entity (idempotent)."""

        def tx(conn: Any) -> None:
            self._store.get(KINDS["WorkItem"], work_item)
            self._store.get(KINDS[object_type], related)
            conn.execute(
                "INSERT OR IGNORE INTO relations VALUES (?,?,?,?,?)",
                (work_item, relation, object_type, related, now),
            )

        self._store.run(tx)

    def related(
        self, work_item: str, object_type: str | None, relation: str | None
    ) -> list[tuple[str, str, str, str]]:
        """(object type, id, relation, date) of what a work item is related to."""
        self._store.get(KINDS["WorkItem"], work_item)
        sql = (
            "SELECT object_type, related_id, relation, date_created FROM relations "
            "WHERE work_item_id = ?"
        )
        args = [work_item]
        if object_type is not None:
            sql += " AND object_type = ?"
            args.append(object_type)
        if relation is not None:
            sql += " AND relation = ?"
            args.append(relation)
        return [(r[0], r[1], r[2], r[3]) for r in self._store.query(sql, args)]

    def parents(
        self, related: str, object_type: str, relation: str | None
    ) -> list[tuple[str, str]]:
        """(work item id, relation) of the live work items related to an entity."""
        sql = (
            "SELECT r.work_item_id, r.relation FROM relations r JOIN entities e ON "
            "e.id = r.work_item_id AND e.deleted = 0 WHERE r.related_id = ? AND "
            "r.object_type = ?"
        )
        args = [related, object_type]
        if relation is not None:
            sql += " AND r.relation = ?"
            args.append(relation)
        return [(r[0], r[1]) for r in self._store.query(sql, args)]
