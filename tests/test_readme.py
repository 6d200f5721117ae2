"""The README's code is read by people who paste it: every Python block must at least be valid
Python (top-level ``await`` allowed, as in a notebook); the tour and the fixture recipe run."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
BLOCKS = [
    (README.read_text()[: m.start()].count("\n") + 1, m.group(1))
    for m in re.finditer(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
]


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"line-{line}" for line, _ in BLOCKS])
def test_every_python_block_compiles(line: int, code: str) -> None:
    compile(code, f"README.md:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_the_fixture_recipe_runs_as_a_users_test(tmp_path: Path) -> None:
    """The ``comps_server`` block, pasted into a user's test file, passes under pytest."""
    (block,) = [code for _, code in BLOCKS if "def test_my_pipeline(comps_server)" in code]
    body = block.replace("...", "assert await s.suites.list() == []")
    test_file = tmp_path / "test_users_pipeline.py"
    test_file.write_text(
        "import pytest\nimport comps_async as ca\n\n"
        + textwrap.dedent(body[body.index("@pytest.mark.anyio") :])
        + "\n\n@pytest.fixture\ndef anyio_backend():\n    return 'asyncio'\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout


def test_the_tour_runs_as_written(tmp_path: Path) -> None:
    """The README's first example, extracted and run with only what it leaves to the reader
    (a model in inputs/, betas, make_config, analyse) defined around it."""
    (tour,) = [code for _, code in BLOCKS if "async def main()" in code and "betas" in code]
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "model.py").write_text(
        "import json, os\n"
        "beta = json.load(open('config.json'))['beta']\n"
        "os.makedirs('output', exist_ok=True)\n"
        "json.dump({'beta': beta}, open('output/result.json', 'w'))\n"
    )
    prelude = (
        "import json\n"
        "betas = [0.1, 0.2, 0.3]\n"
        "def make_config(b):\n    return json.dumps({'beta': b}).encode()\n"
        "seen = []\n"
        "def analyse(path):\n    seen.append(json.loads(path.read_text())['beta'])\n"
    )
    script = prelude + tour + "\nprint(sorted(seen))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[0.1, 0.2, 0.3]"
