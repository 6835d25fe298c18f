"""The dashboard in a real browser: a ``streamlit run`` server on a loopback port, pages
opened by Debian's chromium through Playwright, screenshots.

``python -m dashboards.screenshots`` (``make screenshots``) builds the demo store in a
temporary folder (the sample model, checked day by day as ``mqm demo`` does) and writes
``docs/dashboard-overview.png``, ``docs/dashboard-model.png`` and
``docs/dashboard-run.png``. The tests use ``serve`` and ``capture`` too. Playwright is
imported only when a page is captured, and its browser is never downloaded: it drives
``/usr/bin/chromium`` (``apt-get install chromium``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CHROMIUM", "Capture", "capture", "free_port", "serve"]

APP = Path(__file__).resolve().parent / "app.py"
ROOT = APP.parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
CHART = '[data-testid="stVegaLiteChart"]'
EXCEPTION = '[data-testid="stException"]'


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(config: Path, *, port: int | None = None, env: dict[str, str] | None = None,
          timeout: float = 90.0, log: Path | None = None) -> Iterator[str]:
    """``streamlit run dashboards/app.py`` on 127.0.0.1 with ``MQM_CONFIG=config``; yields
    its base URL once ``/_stcore/health`` answers (``TimeoutError`` after ``timeout``
    seconds), and stops the server on exit."""
    port = port or free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
               "--client.toolbarMode", "viewer"]
    environment = {**os.environ, **(env or {}), "MQM_CONFIG": str(config)}
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(command, env=environment, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with status {process.returncode}"
                                   + (f"; see {log}" if log else ""))
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit did not answer on {url} in {timeout:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        if log:
            out.close()  # type: ignore[union-attr]


# Charts drawn: chart elements holding Vega's canvas or SVG.
_DRAWN = ("sel => [...document.querySelectorAll(sel)]"
          ".filter(c => c.querySelector('canvas, svg.marks')).length")


@dataclass(frozen=True)
class Capture:
    """What a page showed: how many charts were drawn, and its exception boxes (should
    be none)."""

    charts: int
    exceptions: list[str]
    path: Path


def capture(url: str, path: Path, *, min_charts: int = 1, timeout: float = 90.0,
            width: int = 1440, height: int = 1000, full_page: bool = True,
            until_heading: str | None = None) -> Capture:
    """Open ``url`` in headless chromium, wait (at most ``timeout`` seconds in all) for
    the app, ``min_charts`` drawn charts and the end of the script run, then save a
    screenshot to ``path``: the whole page, or down to the heading ``until_heading``."""
    from playwright.sync_api import sync_playwright

    budget_ms = timeout * 1000.0
    started = time.monotonic()

    def left() -> float:
        return max(1000.0, budget_ms - (time.monotonic() - started) * 1000.0)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=CHROMIUM_ARGS, timeout=left())
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url, timeout=left(), wait_until="domcontentloaded")
            page.wait_for_selector('[data-testid="stApp"]', timeout=left())
            if min_charts:
                page.wait_for_function(f"n => ({_DRAWN})('{CHART}') >= n", arg=min_charts,
                                       timeout=left())
            page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached",
                                   timeout=left())
            page.wait_for_timeout(1500)  # the last charts' transitions
            if full_page:
                # Streamlit scrolls inside its main block, not the document: grow the
                # viewport to the block's height so that one screenshot holds it all.
                tall = page.evaluate(
                    "() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                    " return m ? m.scrollHeight : document.body.scrollHeight; }")
                if tall > height:
                    page.set_viewport_size({"width": width, "height": int(tall) + 40})
                    page.wait_for_timeout(1500)
            exceptions = [e.inner_text() for e in page.query_selector_all(EXCEPTION)]
            charts = int(page.evaluate(_DRAWN, CHART))
            path.parent.mkdir(parents=True, exist_ok=True)
            clip = None
            if until_heading is not None:
                box = page.locator("h1, h2, h3", has_text=until_heading).first.bounding_box(
                    timeout=left())
                if box is not None:
                    clip = {"x": 0, "y": 0, "width": width, "height": max(box["y"] - 8, 100)}
            page.screenshot(path=str(path), clip=clip, full_page=full_page and clip is None,
                            timeout=left())
        finally:
            browser.close()
    return Capture(charts=charts, exceptions=exceptions, path=path)


def _demo_store(folder: Path) -> Path:
    """The sample model checked day by day, as ``mqm demo`` does; returns its config."""
    import yaml

    from monitor.cli.demo import run_demo
    from monitor.config import load_config
    from monitor.store.db import create_engine, ensure_schema

    source = yaml.safe_load((ROOT / "monitor.yaml").read_text(encoding="utf-8"))
    for model in source["models"].values():
        for key in ("schema", "reference"):
            model[key] = str((ROOT / model[key]).resolve())
    source["database_url"] = f"sqlite:///{folder / 'mqm.db'}"
    config_file = folder / "monitor.yaml"
    config_file.write_text(yaml.safe_dump(source), encoding="utf-8")
    config = load_config(config_file)
    engine = create_engine(config.database_url)
    ensure_schema(engine)
    run_demo(config, engine, ROOT / "sample_data", echo=lambda _: None)
    engine.dispose()
    return config_file


def main(out: Path = ROOT / "docs") -> None:
    """Write the README's screenshots of the demo store."""
    with tempfile.TemporaryDirectory(prefix="mqm-shots-") as tmp:
        config = _demo_store(Path(tmp))
        with serve(config, log=Path(tmp) / "streamlit.log") as url:
            shots = [
                (f"{url}/", out / "dashboard-overview.png", 1, None),
                (f"{url}/model?model=loan_default&days=30", out / "dashboard-model.png", 9,
                 "Schema"),
                (f"{url}/run?model=loan_default&run=10",
                 out / "dashboard-run.png", 1, None),
            ]
            for page_url, path, charts, until in shots:
                shot = capture(page_url, path, min_charts=charts, until_heading=until)
                if shot.exceptions:
                    raise SystemExit(f"{page_url}: the page shows an exception: "
                                     f"{shot.exceptions[0]}")
                print(f"wrote {path} ({shot.charts} charts)")


if __name__ == "__main__":
    main()
