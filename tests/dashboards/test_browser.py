"""The dashboard in a real browser: `streamlit run` on a loopback port, Debian's chromium
driven by Playwright; charts drawn, no exception box, screenshots saved.

Skipped when chromium or Playwright is missing, unless ``MQM_REQUIRE_BROWSER=1`` (set by
``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from dashboards.screenshots import CHROMIUM, capture, serve
from tests.dashboards.conftest import MODEL

TIMEOUT = 150.0  # seconds for each wait: the server's start, each page


def _need_a_browser() -> None:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} not found (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("playwright is not installed (pip install -e '.[test]')")
    if missing:
        message = "; ".join(missing) + ": browser test skipped"
        if os.environ.get("MQM_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.slow
def test_pages_render_in_chromium(demo_config: Path, tmp_path: Path) -> None:
    _need_a_browser()
    from PIL import Image

    with serve(demo_config, timeout=TIMEOUT, log=tmp_path / "streamlit.log") as url:
        shots = {
            "overview": capture(f"{url}/", tmp_path / "overview.png", min_charts=1,
                                timeout=TIMEOUT),
            "model": capture(f"{url}/model?model={MODEL}&days=all", tmp_path / "model.png",
                             min_charts=9, timeout=TIMEOUT),
            "run": capture(f"{url}/?model={MODEL}&run=9", tmp_path / "run.png",
                           min_charts=1, timeout=TIMEOUT),
        }
    for name, shot in shots.items():
        assert shot.exceptions == [], (name, shot.exceptions)
        with Image.open(shot.path) as image:
            assert image.width == 1440 and image.height >= 900, (name, image.size)
    assert shots["overview"].charts == 1
    assert shots["model"].charts == 11  # with segments, multivariate AUC and versions
    assert shots["run"].charts == 1  # the distribution of the most drifted column
