"""The documentation is read by people who paste it, and the site by people who browse it:
every Python block of the README and of ``docs/`` is valid Python (top-level ``await`` allowed,
as in a notebook), the tour and the fixture recipe run, and the site builds strictly and works
in a browser (headless Chromium: the start page, search, the API reference)."""

from __future__ import annotations

import ast
import asyncio
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SNIPPET = re.compile(r'^--8<-- "([^":]+)(?::([\w-]+))?"$', re.MULTILINE)


def expanded(text: str) -> str:
    """``text`` with its snippet includes (``--8<-- "file"`` or ``"file:section"``) replaced by
    what the site shows there."""

    def include(match: re.Match[str]) -> str:
        included = (ROOT / match.group(1)).read_text()
        if match.group(2):
            start = f"<!-- --8<-- [start:{match.group(2)}] -->\n"
            included = included.split(start, 1)[1].split("<!-- --8<-- [end:", 1)[0]
        return included

    return SNIPPET.sub(include, text)


BLOCKS = [
    (f"{page.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}", m.group(1))
    for page in PAGES
    for text in [expanded(page.read_text())]
    for m in re.finditer(r"```python\n(.*?)```", text, re.DOTALL)
]


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_every_python_block_compiles(where: str, code: str) -> None:
    compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_the_fixture_recipe_runs_as_a_users_test(tmp_path: Path) -> None:
    """The ``comps_server`` block, pasted into a user's test file, passes under pytest."""
    (block,) = {code for _, code in BLOCKS if "def test_my_pipeline(comps_server)" in code}
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
    # (The README's tour is also the getting-started page's: the same block, run once.)
    (tour,) = {code for _, code in BLOCKS if "async def main()" in code and "betas" in code}
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


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation site, built as CI builds it: strictly (a broken link, a missing page or
    an unresolved API reference fails the build)."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return out


def test_the_site_builds_strictly_with_every_page(site: Path) -> None:
    assert (site / "index.html").is_file()
    for page in ("getting-started", "guides/service", "reference/api", "reference/sync"):
        assert (site / page / "index.html").is_file(), page
    assert (site / "reference/scale.png").is_file()  # the chart, taken from benchmarks/
    api = (site / "reference/api/index.html").read_text()
    assert 'id="comps_async.Session"' in api and "save_all" in api


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The built site over HTTP on 127.0.0.1 (search runs in a web worker: no file:// URLs)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
def test_the_site_reads_in_a_browser(served: str, tmp_path: Path) -> None:
    """Headless Chromium, driven over its DevTools protocol: the start page renders, a search
    for ``save_all`` returns results (the search index and its worker work), and the API page
    shows the ``Session`` class with its methods."""
    start = asyncio.run(
        _in_browser(served + "/", "document.querySelector('h1').textContent", tmp_path)
    )
    assert start.rstrip("¶") == "comps_async"  # (¶: the heading's permalink)
    first = asyncio.run(
        _in_browser(
            served + "/?q=save_all",
            "[...document.querySelectorAll('.md-search-result__item')]"
            ".map(e => e.textContent).join('\\n') || null",
            tmp_path,
        )
    )
    assert "save_all" in first
    session = asyncio.run(
        _in_browser(
            served + "/reference/api/",
            "document.getElementById('comps_async.Session')"
            "?.closest('.doc-object')?.textContent || null",
            tmp_path,
        )
    )
    assert "async with Session(url) as s" in session
    assert all(method in session for method in ("wait", "analyze", "environments"))


async def _in_browser(url: str, expression: str, profile: Path, deadline_s: float = 60) -> Any:
    """Open ``url`` in headless Chromium and poll ``expression`` in the loaded page until it
    is truthy (or the deadline passes); return its value."""
    assert CHROMIUM is not None
    browser = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile / 'chromium'}",
        url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert browser.stderr is not None
        ends = time.monotonic() + deadline_s
        port = None
        while port is None and time.monotonic() < ends:
            line = (await asyncio.wait_for(browser.stderr.readline(), deadline_s)).decode()
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            port = found and int(found.group(1))
        assert port, "Chromium did not open its DevTools port"
        async with aiohttp.ClientSession() as http_client:
            async with http_client.get(f"http://127.0.0.1:{port}/json/list") as listed:
                pages = [t for t in await listed.json() if t["type"] == "page"]
            async with http_client.ws_connect(pages[0]["webSocketDebuggerUrl"]) as devtools:
                ask = {"id": 0, "method": "Runtime.evaluate"}
                while time.monotonic() < ends:
                    ask["id"] += 1
                    # Asked of the whole page only: while a long page is still parsing, an
                    # element's text is only what has arrived so far.
                    loaded = f"document.readyState === 'complete' ? ({expression}) : null"
                    ask["params"] = {"expression": loaded, "returnByValue": True}
                    await devtools.send_str(json.dumps(ask))
                    while (answer := json.loads(await devtools.receive_str())).get("id") != ask[
                        "id"
                    ]:
                        pass  # (an event, not our answer)
                    value = answer.get("result", {}).get("result", {}).get("value")
                    if value:
                        return value
                    await asyncio.sleep(0.2)  # the page's scripts are still working
        raise AssertionError(f"{expression!r} never became true on {url}")
    finally:
        browser.kill()
        await browser.wait()
