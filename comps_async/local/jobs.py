"""The store's SQL for running things: the runner's queue (claims, states, orphans after a
restart), HPC jobs and their documents, the index of their outputs, and the usage the dashboard
and Stats sum. Blocking: called in worker threads (``ServerState.db``), as all store work is."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import Store

__all__ = ["Jobs", "Usage"]

# States a job can be in while the server runs it: after a restart, those run again.
_IN_FLIGHT = ("Provisioning", "Commissioned", "Running", "Retry", "Validating")


@dataclass(frozen=True)
class Usage:
    """The HPC jobs of one owner's simulations, as the dashboard and Stats count them."""

    jobs: int
    min_cores: int
    max_cores: int
    core_seconds: float
    output_bytes: int


class Jobs:
    """HPC jobs, outputs and the runner's queue, over one ``Store``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # --- the runner's queue ----------------------------------------------------------------------

    def requeue_orphans(self) -> None:
        """Simulations and work items that were running when the server stopped run again."""
        marks = ",".join(f"'{s}'" for s in _IN_FLIGHT)
        self._store.run(
            lambda conn: conn.execute(
                "UPDATE entities SET state = 'CommissionRequested' WHERE deleted = 0 AND "
                f"state IN ({marks})"
            )
        )

    def claim(self, limit: int, now: str) -> list[tuple[str, str]]:
        """Up to ``limit`` commissioned (kind, id), oldest first, moved on to Provisioning
        (simulations) or Commissioned (work items) in the same transaction."""

        def tx(conn: Any) -> list[tuple[str, str]]:
            rows = conn.execute(
                "SELECT kind, id FROM entities WHERE deleted = 0 AND state = "
                "'CommissionRequested' AND kind IN ('Simulation', 'WorkItem') ORDER BY seq "
                "LIMIT ?",
                (limit,),
            ).fetchall()
            for row in rows:
                new = "Provisioning" if row[0] == "Simulation" else "Commissioned"
                conn.execute(
                    "UPDATE entities SET state = ?, last_modified = ? WHERE id = ?",
                    (new, now, row[1]),
                )
            return [(r[0], r[1]) for r in rows]

        return self._store.run(tx)

    def runnable_ids_in(self, state: str) -> list[str]:
        """Ids of the simulations and work items in ``state`` (from the (kind, state) index:
        the runner asks every tick, whatever the number of rows)."""
        rows = self._store.query(
            "SELECT id FROM entities WHERE kind IN ('Simulation', 'WorkItem') AND state = ?",
            (state,),
        )
        return [str(r[0]) for r in rows]

    def set_state(self, entity_id: str, state: str, error: str | None, now: str) -> None:
        """A simulation's or work item's new state, with its error message (or none)."""

        def tx(conn: Any) -> None:
            row = conn.execute("SELECT doc FROM entities WHERE id = ?", (entity_id,)).fetchone()
            doc = json.loads(row[0]) | {"ErrorMessage": error}
            conn.execute(
                "UPDATE entities SET state = ?, doc = ?, last_modified = ? WHERE id = ?",
                (state, json.dumps(doc), now, entity_id),
            )

        self._store.run(tx)

    def set_document(self, entity_id: str, doc: dict[str, Any]) -> None:
        """Replace an entity's document (a work item's working directory and host)."""
        self._store.run(
            lambda conn: conn.execute(
                "UPDATE entities SET doc = ? WHERE id = ?", (json.dumps(doc), entity_id)
            )
        )

    # --- HPC jobs ----------------------------------------------------------------------------

    def count(self) -> int:
        """HPC jobs so far (the next job's number is one more)."""
        return int(self._store.query("SELECT COUNT(*) FROM hpc_jobs")[0][0])

    def add(self, job_id: str, entity_id: str, doc: dict[str, Any]) -> None:
        """A new HPC job of a simulation."""
        self._store.run(
            lambda conn: conn.execute(
                "INSERT INTO hpc_jobs (id, entity_id, doc) VALUES (?,?,?)",
                (job_id, entity_id, json.dumps(doc)),
            )
        )

    def update(self, job_id: str, changes: dict[str, Any]) -> None:
        """Merge ``changes`` into a job's document."""

        def tx(conn: Any) -> None:
            row = conn.execute("SELECT doc FROM hpc_jobs WHERE id = ?", (job_id,)).fetchone()
            conn.execute(
                "UPDATE hpc_jobs SET doc = ? WHERE id = ?",
                (json.dumps(json.loads(row[0]) | changes), job_id),
            )

        self._store.run(tx)

    def latest(self, entity_id: str) -> dict[str, Any] | None:
        """The newest HPC job of a simulation."""
        rows = self._store.query(
            "SELECT doc FROM hpc_jobs WHERE entity_id = ? ORDER BY seq DESC LIMIT 1", (entity_id,)
        )
        return dict(json.loads(rows[0][0])) if rows else None

    def find(self, job_id: str) -> tuple[str, dict[str, Any]] | None:
        """(entity id, job document) of an HPC job, or None."""
        rows = self._store.query("SELECT entity_id, doc FROM hpc_jobs WHERE id = ?", (job_id,))
        return (str(rows[0][0]), json.loads(rows[0][1])) if rows else None

    # --- outputs -----------------------------------------------------------------------------

    def record_outputs(self, rows: list[tuple[str, str, int, str]]) -> None:
        """(job id, path, length, md5) of a finished job's outputs, so listings offer MD5."""
        self._store.run(
            lambda conn: conn.executemany("INSERT OR REPLACE INTO outputs VALUES (?,?,?,?)", rows)
        )

    def output_md5s(self, job_id: str) -> dict[str, tuple[int, str]]:
        """Indexed outputs of a finished job: path -> (length, md5)."""
        rows = self._store.query(
            "SELECT path, length, md5 FROM outputs WHERE job_id = ?", (job_id,)
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    # --- usage -------------------------------------------------------------------------------

    def usage_by_owner(self, experiment_id: str | None = None) -> dict[str, Usage]:
        """The HPC jobs (of one experiment's simulations) summed per owner in SQL, so that a
        million jobs cost the server no memory (run time to the millisecond: SQLite reads three
        fractional digits)."""
        cores = "COALESCE(NULLIF(json_extract(j.doc, '$.Configuration.MinCores'), 0), 1)"
        seconds = (
            "MAX(0.0, COALESCE((julianday(json_extract(j.doc, '$.EndTime')) - "
            "julianday(json_extract(j.doc, '$.StartTime'))) * 86400.0, 0.0))"
        )
        sql = (
            f"SELECT e.owner, COUNT(*), MIN({cores}), MAX({cores}), SUM({cores} * {seconds}), "
            "SUM(COALESCE(json_extract(j.doc, '$.OutputDirectorySize'), 0)) "
            "FROM hpc_jobs j JOIN entities e ON e.id = j.entity_id WHERE e.deleted = 0"
        )
        args: list[Any] = []
        if experiment_id is not None:
            sql += " AND e.parent_id = ?"
            args.append(experiment_id)
        rows = self._store.query(sql + " GROUP BY e.owner", args)
        return {
            str(owner): Usage(int(n), int(low), int(high), float(core_s or 0), int(size or 0))
            for owner, n, low, high, core_s, size in rows
        }
