"""The job runner of the local server: it really executes commissioned simulations and work items.

Simulations: CommissionRequested -> Provisioning (HPC job row, working directory with the
simulation's files and its asset collection under ``Assets/``) -> Commissioned -> Running (the
work order's Command, else the effective Configuration's ExecutablePath + SimulationInputArgs,
as a subprocess with stdout.txt and stderr.txt captured) -> Succeeded | Failed, with Retry up to
MaximumNumberOfRetries; CancelRequested -> Canceled (a running process is killed). Work items run
their WorkOrder.json's ``Execution.Command`` the same way. A command that cannot start fails its
job like any other failure: the job is closed (end time, error message) and the reason is in
stderr.txt. How a command starts and what a job's environment holds: ``launch.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from . import launch
from .launch import Launch, StartError
from .state import ServerState
from .store import KINDS, Store, now_wire

__all__ = ["Runner"]

logger = logging.getLogger(__name__)

# Executable by its owner, as every file on COMPS's shares is (a script in Assets/ can be started).
_EXECUTABLE = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH


@dataclass
class Runner:
    """Runs up to ``max_concurrent_runs`` jobs at once; woken when something is commissioned."""

    state: ServerState
    max_concurrent_runs: int = field(default_factory=lambda: os.cpu_count() or 2)
    poll_interval_s: float = 0.5
    _wake: anyio.Event | None = None
    _running: dict[str, anyio.CancelScope] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        return self.state.store

    def wake(self) -> None:
        """Look for work now (called by the app after a commission or cancel)."""
        if self._wake is not None:
            self._wake.set()

    async def run_forever(self) -> None:
        """The scheduling loop; cancel the enclosing scope to stop it."""
        self._wake = anyio.Event()
        await self.state.db(self.state.jobs.requeue_orphans)
        async with anyio.create_task_group() as tg:
            while True:
                await self._cancel_requested()
                free = self.max_concurrent_runs - len(self._running)
                if free > 0:
                    for kind, entity_id in await self.state.db(self._claim, free):
                        self._start(tg, kind, entity_id)
                with anyio.move_on_after(self.poll_interval_s):
                    await self._wake.wait()  # woken early by wake(); the poll is a backstop
                self._wake = anyio.Event()

    def _start(self, tg: TaskGroup, kind: str, entity_id: str) -> None:
        scope = anyio.CancelScope()
        self._running[entity_id] = scope
        tg.start_soon(self._run_guarded, kind, entity_id, scope)

    async def _run_guarded(self, kind: str, entity_id: str, scope: anyio.CancelScope) -> None:
        try:
            with scope:
                if kind == "Simulation":
                    await self._run_simulation(entity_id)
                else:
                    await self._run_work_item(entity_id)
            if scope.cancelled_caught:
                await self.state.db(self._set_state, entity_id, "Canceled", None)
        except Exception as exc:  # a runner bug must not take the server down
            logger.exception("run of %s failed", entity_id)
            await self.state.db(self._set_state, entity_id, "Failed", f"runner error: {exc}")
        finally:
            self._running.pop(entity_id, None)
            self.wake()

    # --- scheduling (blocking, in worker threads) --------------------------------------------

    def _claim(self, limit: int) -> list[tuple[str, str]]:
        return self.state.jobs.claim(limit, now_wire())

    async def _cancel_requested(self) -> None:
        for entity_id in await self.state.db(self.state.jobs.runnable_ids_in, "CancelRequested"):
            scope = self._running.get(entity_id)
            if scope is not None:
                scope.cancel()
            else:
                await self.state.db(self._set_state, entity_id, "Canceled", None)

    def _set_state(self, entity_id: str, state: str, error: str | None) -> None:
        self.state.jobs.set_state(entity_id, state, error, now_wire())

    def _update_job(self, job_id: str, changes: dict[str, Any]) -> None:
        self.state.jobs.update(job_id, changes)

    # --- simulations ---------------------------------------------------------------------------

    async def _run_simulation(self, sim_id: str) -> None:
        attempt = 0
        while True:
            job_id, workdir, config, launched = await self.state.db(self._provision, sim_id)
            await self.state.db(self._set_state, sim_id, "Commissioned", None)
            await self.state.db(self._set_state, sim_id, "Running", None)
            await self.state.db(
                self._update_job, job_id, {"JobState": "Running", "StartTime": now_wire()}
            )
            code, error = await self._execute(launched, workdir, job_id)
            size = await self.state.db(self._index_outputs, job_id, workdir)
            await self.state.db(
                self._update_job,
                job_id,
                {
                    "JobState": "Finished" if code == 0 else "Failed",
                    "EndTime": now_wire(),
                    "OutputDirectorySize": size,
                    "ErrorMessage": error,
                },
            )
            if code == 0:
                await self.state.db(self._set_state, sim_id, "Succeeded", None)
                return
            retries = int(config.get("MaximumNumberOfRetries") or 0)
            if attempt >= retries:
                await self.state.db(self._set_state, sim_id, "Failed", error)
                return
            attempt += 1
            await self.state.db(self._set_state, sim_id, "Retry", error)

    def _provision(self, sim_id: str) -> tuple[str, Path, dict[str, Any], Launch | StartError]:
        kind = KINDS["Simulation"]
        row = self.store.get(kind, sim_id)
        config = self.state.store.effective_configuration(kind, row) or {}
        job_id = str(uuid.uuid4())
        workdir = self.state.data_dir / "work" / sim_id[:3] / sim_id[3:6] / sim_id / job_id[:8]
        workdir.mkdir(parents=True, exist_ok=True)
        files = self._materialise(sim_id, workdir, config.get("AssetCollectionId"))
        try:
            order = launch.work_order(files, workdir)
            found = launch.command_of(order, config)
            launched: Launch | StartError = Launch(
                launch.interpreted(found.argv, workdir),
                self._job_environment(
                    row["owner"],
                    str(config.get("EnvironmentName") or ""),
                    {
                        "COMPS_SIMULATION_GUID": sim_id,
                        "COMPS_EXPERIMENT_GUID": str(row["parent_id"] or ""),
                    },
                    job_id,
                    found.env,
                ),
            )
        except StartError as exc:
            launched = exc
        job = {
            "Id": job_id,
            "JobId": self.state.jobs.count() + 1,
            "JobState": "Queued",
            "Priority": config.get("Priority") or "Normal",
            "WorkingDirectory": str(workdir),
            "SubmitTime": now_wire(),
            "StartTime": None,
            "EndTime": None,
            "OutputDirectorySize": None,
            "ErrorMessage": None,
            "Configuration": config,
        }
        self.state.jobs.add(job_id, sim_id, job)
        return job_id, workdir, config, launched

    def _materialise(
        self, entity_id: str, workdir: Path, collection_id: str | None
    ) -> list[tuple[str, dict[str, Any]]]:
        """Put the entity's files and its collection in ``workdir``; returns the entity's
        files as (md5, file document)."""
        # The entity's own files are copied (a model may rewrite its inputs); the collection is
        # linked read-only under Assets/, as COMPS mounts it, so big collections cost nothing.
        files = [(md5, doc) for _, md5, _, doc in self._files(entity_id)]
        for md5, doc in files:
            target = workdir / doc["FileName"]
            shutil.copyfile(self.state.blobs.path(uuid.UUID(md5)), target)
            _make_executable(target)
        if collection_id:
            for _, md5, _, doc in self._files(str(collection_id)):
                target = workdir / "Assets" / (doc.get("RelativePath") or "") / doc["FileName"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.unlink(missing_ok=True)
                blob = self.state.blobs.path(uuid.UUID(md5))
                _make_executable(blob)
                target.symlink_to(blob)
        return files

    def _files(self, entity_id: str) -> list[tuple[int, str, int, dict[str, Any]]]:
        return self.store.files_of(entity_id)

    def _job_environment(
        self,
        owner: str,
        environment: str,
        ids: dict[str, str],
        job_id: str,
        extra: dict[str, str],
    ) -> dict[str, str]:
        users = self.state.users
        user = users.user(owner) if users.exists(owner) else users.default_user()
        return launch.job_environment(
            server_url=self.state.url,
            environment=environment,
            ids=ids,
            token=users.mint(user),
            runtime_dir=self._runtime_dir(job_id),
            extra=extra,
        )

    def _runtime_dir(self, job_id: str) -> Path:
        # Outside the working directory, so the token never shows up among the outputs.
        return self.state.data_dir / "runtime" / job_id

    async def _execute(
        self, launched: Launch | StartError, workdir: Path, job_id: str
    ) -> tuple[int, str | None]:
        out = await anyio.to_thread.run_sync(open, workdir / "stdout.txt", "wb")
        err = await anyio.to_thread.run_sync(open, workdir / "stderr.txt", "wb")
        try:
            with out, err:
                if isinstance(launched, StartError):
                    return self._start_failed(err, str(launched))
                env = os.environ | {"COMPS_WORKDIR": str(workdir)} | launched.env
                argv = launched.argv
                try:
                    process = await anyio.open_process(
                        argv, cwd=workdir, stdout=out, stderr=err, env=env
                    )
                except OSError as exc:
                    retry = launch.without_shebang(argv, exc)
                    if retry is None:
                        return self._start_failed(err, f"cannot start {argv[0]!r}: {exc}")
                    argv = retry
                    try:
                        process = await anyio.open_process(
                            argv, cwd=workdir, stdout=out, stderr=err, env=env
                        )
                    except OSError as again:
                        return self._start_failed(err, f"cannot start {argv[0]!r}: {again}")
                try:
                    code = await process.wait()
                finally:
                    if process.returncode is None:
                        process.kill()
                        with anyio.CancelScope(shield=True):
                            await process.wait()
        finally:
            shutil.rmtree(self._runtime_dir(job_id), ignore_errors=True)
        if code == 0:
            return 0, None
        tail = (workdir / "stderr.txt").read_bytes()[-400:].decode("utf-8", "replace").strip()
        return code, f"exit code {code}" + (f": {tail}" if tail else "")

    @staticmethod
    def _start_failed(stderr: Any, reason: str) -> tuple[int, str]:
        stderr.write(f"{reason}\n".encode())
        return 127, reason  # 127: what a shell answers for a command it cannot run

    def _index_outputs(self, job_id: str, workdir: Path) -> int:
        """Record length and md5 of every output so that listings can offer ``MD5``."""
        rows, total = [], 0
        for path in workdir.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            digest = hashlib.md5(usedforsecurity=False)
            with open(path, "rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
            size = path.stat().st_size
            total += size
            rows.append((job_id, path.relative_to(workdir).as_posix(), size, digest.hexdigest()))
        self.state.jobs.record_outputs(rows)
        return total

    # --- work items ----------------------------------------------------------------------------

    async def _run_work_item(self, wi_id: str) -> None:
        workdir, launched = await self.state.db(self._provision_work_item, wi_id)
        await self.state.db(self._set_state, wi_id, "Running", None)
        code, error = await self._execute(launched, workdir, wi_id)
        await self.state.db(self._index_outputs, wi_id, workdir)
        await self.state.db(self._set_state, wi_id, "Succeeded" if code == 0 else "Failed", error)

    def _provision_work_item(self, wi_id: str) -> tuple[Path, Launch | StartError]:
        row = self.store.get(KINDS["WorkItem"], wi_id)
        doc = json.loads(row["doc"])
        workdir = self.state.data_dir / "work" / "workitems" / wi_id
        workdir.mkdir(parents=True, exist_ok=True)
        files = self._materialise(wi_id, workdir, doc.get("AssetCollectionId"))
        launched: Launch | StartError
        try:
            found = launch.command_of(launch.work_order(files, workdir) or {}, None)
            launched = Launch(
                launch.interpreted(found.argv, workdir),
                self._job_environment(
                    row["owner"],
                    str(doc.get("EnvironmentName") or ""),
                    {"COMPS_WORKITEM_GUID": wi_id},
                    wi_id,
                    found.env,
                ),
            )
        except StartError as exc:
            launched = exc
        doc["WorkingDirectory"] = str(workdir)
        doc["HostName"] = "localhost"
        self.state.jobs.set_document(wi_id, doc)
        return workdir, launched


def _make_executable(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & _EXECUTABLE != _EXECUTABLE:
        path.chmod(mode | _EXECUTABLE)
