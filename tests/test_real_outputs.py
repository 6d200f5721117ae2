"""Outputs as real simulations leave them: empty files, nested folders with spaces and accents,
names that look like scratch files, links planted by a model or in the destination."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import anyio
import httpx
import pytest
from click.testing import CliRunner

import comps_async as ca
from comps_async._transfer.paths import SCRATCH_DIR
from comps_async._transfer.scratch import scratch_path
from comps_async.cli.main import _register, cli
from comps_async.local import LocalComps

pytestmark = pytest.mark.anyio
_register()

# What a real model leaves: an empty stderr.txt (the runner's), an empty output, a nested folder
# with spaces and accents, X next to X.part, and a link pointing out of its working directory.
MODEL = b"""
import os
os.makedirs("output/r\\u00e9sum\\u00e9 dir/deeper", exist_ok=True)
open("output/empty.json", "w").close()
open("output/r\\u00e9sum\\u00e9 dir/deeper/caf\\u00e9 \\u00fc.csv", "w").write("a,b\\n1,2\\n" * 50)
open("output/X", "w").write("the real X\\n" * 10)
open("output/X.part", "w").write("not a scratch file\\n" * 7)
os.symlink("/etc/hostname", "output/leak.txt")
print("done")
"""
EXPECTED = {
    "stderr.txt": b"",
    "stdout.txt": b"done\n",
    "output/empty.json": b"",
    "output/résumé dir/deeper/café ü.csv": b"a,b\n1,2\n" * 50,
    "output/X": b"the real X\n" * 10,
    "output/X.part": b"not a scratch file\n" * 7,
}


@pytest.fixture(scope="module")
def real_tree(comps_server: LocalComps) -> dict[str, object]:
    """One simulation that ran MODEL on the shared server."""

    async def run() -> dict[str, object]:
        async with ca.Session(comps_server.url, token=comps_server.token) as s:
            experiment = await s.experiments.create(
                ca.Experiment(
                    name="real-tree",
                    configuration=ca.Configuration(
                        environment_name="Local",
                        executable_path="python3",
                        simulation_input_args="model.py",
                    ),
                )
            )
            sim = ca.Simulation(
                name="real",
                experiment_id=experiment.id,
                files=[ca.SimulationFile.from_bytes("model.py", MODEL)],
            )
            await s.simulations.save_all([sim], commission=True)
            assert (await s.wait(simulation_ids=[sim], timeout=60)).succeeded == 1
            return {"sim": sim, "experiment": experiment}

    return anyio.run(run)


def files_under(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and SCRATCH_DIR not in p.parts
    }


def wanted(tree: dict[str, bytes]) -> dict[str, bytes]:
    """The tree without the model file the runner copied in (an input, listed as output)."""
    return {k: v for k, v in tree.items() if k != "model.py"}


async def test_every_output_downloads_as_it_is(
    real_tree: dict[str, object], session: ca.Session, tmp_path: Path
) -> None:
    sim = real_tree["sim"]
    listing = await session.outputs.info(sim)  # type: ignore[arg-type]
    assert "output/leak.txt" not in listing  # a link out of the working directory is no output
    paths = await session.outputs.download(sim, None, tmp_path)  # type: ignore[arg-type]
    assert len(paths) == len(listing)
    assert wanted(files_under(tmp_path)) == EXPECTED
    assert not list((tmp_path / SCRATCH_DIR).iterdir())  # every scratch file was published
    again = await session.outputs.download(sim, None, tmp_path)  # type: ignore[arg-type]
    assert again == paths and wanted(files_under(tmp_path)) == EXPECTED
    for path, content in EXPECTED.items():
        assert await session.outputs.read(sim, path) == content  # type: ignore[arg-type]


async def test_harvest_and_the_cli_take_every_file(
    real_tree: dict[str, object], server: LocalComps, session: ca.Session, tmp_path: Path
) -> None:
    sim, experiment = real_tree["sim"], real_tree["experiment"]
    async with session.outputs.harvest([sim], ["*"], tmp_path / "h") as results:  # type: ignore[list-item]
        got = [r async for r in results]
    assert all(r.ok for r in got), [r.error for r in got if not r.ok]
    assert wanted(files_under(tmp_path / "h" / str(sim.id))) == EXPECTED  # type: ignore[attr-defined]
    env = {"COMPS_SERVER": server.url, "COMPS_TOKEN": server.token}
    args = ["download", "experiment", str(experiment.id), "*", "--dest", str(tmp_path / "c")]  # type: ignore[attr-defined]
    result = await anyio.to_thread.run_sync(lambda: CliRunner().invoke(cli, args, env=env))
    assert result.exit_code == 0, result.output
    landed = tmp_path / "c" / str(experiment.id) / str(sim.id)  # type: ignore[attr-defined]
    assert wanted(files_under(landed)) == EXPECTED


async def test_the_zip_holds_outputs_only(
    real_tree: dict[str, object], session: ca.Session, tmp_path: Path
) -> None:
    sim = real_tree["sim"]
    archive = await session.outputs.zip(sim, None, tmp_path / "all.zip", extract_to=tmp_path / "x")  # type: ignore[arg-type]
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
    assert "output/leak.txt" not in names and "output/X.part" in names
    assert wanted(files_under(tmp_path / "x")) == EXPECTED


async def test_links_planted_in_the_destination_redirect_nothing(
    real_tree: dict[str, object], session: ca.Session, tmp_path: Path
) -> None:
    sim = real_tree["sim"]
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_bytes(b"keep me")
    dest = tmp_path / "dest"
    meta = (await session.outputs.info(sim, ["output/X"]))["output/X"]  # type: ignore[arg-type]
    target = dest / "output" / "X"
    # A link where the scratch file of output/X will be: the write must not follow it.
    part = scratch_path(dest, target, meta.length, meta.md5)
    part.parent.mkdir(parents=True)
    os.symlink(victim, part)
    await session.outputs.download(sim, ["output/X"], dest)  # type: ignore[arg-type]
    assert victim.read_bytes() == b"keep me" and target.read_bytes() == EXPECTED["output/X"]
    # The scratch folder itself replaced by a link out of the destination: refused.
    dest2 = tmp_path / "dest2"
    dest2.mkdir()
    os.symlink(outside, dest2 / SCRATCH_DIR)
    with pytest.raises(ca.UnsafePathError):
        await session.outputs.download(sim, ["output/X"], dest2)  # type: ignore[arg-type]
    # A link at the target itself, pointing out: refused, the outside file untouched.
    dest3 = tmp_path / "dest3"
    (dest3 / "output").mkdir(parents=True)
    os.symlink(victim, dest3 / "output" / "X")
    with pytest.raises(ca.UnsafePathError):
        await session.outputs.download(sim, ["output/X"], dest3)  # type: ignore[arg-type]
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert victim.read_bytes() == b"keep me"


async def test_an_over_long_scratch_file_is_started_afresh(
    real_tree: dict[str, object], session: ca.Session, tmp_path: Path
) -> None:
    sim = real_tree["sim"]
    meta = (await session.outputs.info(sim, ["output/X"]))["output/X"]  # type: ignore[arg-type]
    part = scratch_path(tmp_path, tmp_path / "output" / "X", meta.length, meta.md5)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * (2 * (meta.length or 0) + 10))  # left by a server that sent too much
    await session.outputs.download(sim, ["output/X"], tmp_path)  # type: ignore[arg-type]
    assert (tmp_path / "output" / "X").read_bytes() == EXPECTED["output/X"]


async def test_the_server_refuses_a_nul_in_an_asset_path(server: LocalComps) -> None:
    content = b"abc"
    md5 = str(ca.models.md5_uuid(content))
    entity = [{"Assets": [{"FileName": "a.txt", "RelativePath": "in\x00put", "MD5Checksum": md5}]}]
    files = {
        "not_a_file": ("AssetCollections", json.dumps(entity).encode(), "application/json"),
        md5: ("a.txt", content, "text/plain"),
    }
    async with httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.post(
            "/api/AssetCollections", files=files, headers={"X-COMPS-Token": server.token}
        )
    assert answer.status_code == 400 and "NUL" in answer.json()["ResponseMessage"]
    assert hashlib.md5(content).hexdigest() == md5.replace("-", "")
