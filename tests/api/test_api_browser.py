"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by playwright).

Launch a small search from the form, watch points appear on the Pareto front
while it runs, click one to open the candidate, download its `.py` module,
import it and run the layer on a tensor. Screenshots go to
tests/api/artifacts/ (gitignored).

Skipped when /usr/bin/chromium is missing (`apt-get install -y chromium`).
Playwright's own browser download is never used.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import api_fakes
import pytest
import torch

from api.app import create_app
from evonorm_search.settings import Settings

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                       reason=f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 950}, accept_downloads=True)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.errors = errors
        try:
            yield page
        finally:
            context.close()
            browser.close()


def test_launch_watch_open_download(page: Any, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    # 0.1 s per candidate: the front fills in over a few seconds while the page watches.
    app = create_app(Settings(db_url=str(tmp_path / "browser.db"), executor="inprocess"),
                     runner_kwargs=api_fakes.SLOW_RUNNER)
    with api_fakes.LiveServer(app) as server:
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-view=searches]")
        form = page.locator("#launch")
        form.locator("input[name=name]").fill("browser-test")
        form.locator("input[name=budget]").fill("40")
        form.locator("input[name=population_size]").fill("8")
        form.locator("input[name=tournament_size]").fill("3")
        page.click("#launch-button")

        # the search page, live: points appear on the front as candidates finish
        page.wait_for_selector("body[data-view=search]", timeout=30_000)
        assert page.url.endswith("#/search/1")
        plot = page.locator("#front-plot")
        page.wait_for_function("Number(document.querySelector('#front-plot').dataset.points) >= 1",
                               timeout=60_000)
        first = int(plot.get_attribute("data-points") or 0)
        page.wait_for_function("document.querySelector('#search-title').textContent.includes('finished')",
                               timeout=120_000)
        count = "Number(document.querySelector('#front-plot').dataset.points)"
        page.wait_for_function(f"{count} >= {max(first, 3)}", timeout=10_000)
        points = page.locator("#front-plot .scatterlayer .trace:nth-child(2) .points path")
        assert points.count() >= 3
        assert page.locator("#front-plot .scatterlayer .trace:nth-child(3) .points path").count() == 2  # zoo
        assert page.locator("#candidates tbody tr").count() == 40
        assert "40 candidates" in page.inner_text("#page-info")
        page.screenshot(path=str(ARTIFACTS / "dashboard-search.png"), full_page=True)

        # click a point on the front: plotly_click opens the candidate
        box = points.first.bounding_box()
        assert box is not None
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.click(x, y)
        page.wait_for_selector("body[data-view=candidate]", timeout=10_000)
        assert "#/candidate/" in page.url
        assert page.locator("#graph svg g.node.output").count() == 1
        assert page.locator("#scores tbody tr").count() == 2
        formula = page.inner_text("#formula")
        class_name = page.inner_text("#class-name")
        page.screenshot(path=str(ARTIFACTS / "dashboard-candidate.png"), full_page=True)

        # download the .py and use it
        with page.expect_download() as info:
            page.click("#downloads a[data-format=py]")
        download = info.value
        assert download.suggested_filename.endswith(".py")
        path = tmp_path / download.suggested_filename
        download.save_as(path)
    assert formula.removeprefix("y = ") in path.read_text()
    spec = importlib.util.spec_from_file_location(f"downloaded_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    layer = getattr(module, class_name)(8)
    x = torch.randn(4, 8, 6, 6)
    y = layer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert page.errors == [], page.errors


def test_faults_are_listed_and_arrive_live_and_a_failed_search_offers_resume(page: Any, tmp_path: Path) -> None:
    from db import EventKind, SearchStatus, Store

    db = str(tmp_path / "faults.db")
    app = create_app(Settings(db_url=db, executor="inprocess"), runner_kwargs=api_fakes.FAST_RUNNER)
    with api_fakes.LiveServer(app) as server:
        store = Store(db)
        sid = store.create_search("faulty", {**api_fakes.TINY_SEARCH, "budget": 3}, seed=0).id
        store.set_search_status(sid, SearchStatus.FAILED, error="an error")
        store.append_event(EventKind.STORE_OUTAGE, {"since": 0, "down_s": 71.5, "runner_restarted": True},
                           search_id=sid)
        page.goto(f"{server.url}/#/search/{sid}")
        page.wait_for_selector("#faults li[data-kind=store_outage]", timeout=30_000)
        assert "database unreachable for 71.5 s" in page.inner_text("#faults")
        assert page.locator("#search-actions button[data-action=resume]").is_enabled()
        # A fault recorded while the page is open shows up without a reload.
        store.append_event(EventKind.NODE_LOST, {"node": "abcdef01", "address": "10.0.0.7", "candidates": [2]},
                           search_id=sid)
        page.wait_for_selector("#faults li[data-kind=node_lost]", timeout=30_000)
        assert "(10.0.0.7) lost (candidates #2)" in page.inner_text("#faults")
        store.close()
    assert page.errors == [], page.errors
