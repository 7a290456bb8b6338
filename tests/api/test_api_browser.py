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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import api_fakes
import pytest
import torch

from api.app import create_app
from evonorm_search.config import load_config
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
        points = page.locator("#front-plot .trace.front .point")
        assert points.count() >= 3
        assert page.locator("#front-plot .trace.baselines .point").count() == 2  # zoo
        # the funnel: verified members are marked, and estimates over several seeds have error bars
        assert int(plot.get_attribute("data-verified") or 0) >= 1
        assert int(plot.get_attribute("data-errorbars") or 0) >= 1
        assert page.locator("#front-plot .errorbar").count() >= 1
        assert page.locator("#candidates tbody tr").count() == 40
        assert "40 candidates" in page.inner_text("#page-info")
        page.screenshot(path=str(ARTIFACTS / "dashboard-search.png"), full_page=True)

        # hover a point on the front: its formula; click it: the candidate opens
        box = points.first.bounding_box()
        assert box is not None
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.wait_for_selector("#front-plot .plot-tip:not([hidden])")
        assert page.inner_text("#front-plot .plot-tip").startswith("#")
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


@contextmanager
def _launch_form(page: Any, db: Path, preset: str) -> Iterator[tuple[Any, Any]]:
    """A live server on a fresh database, its page open at the launch form with `preset` chosen."""
    app = create_app(Settings(db_url=str(db), executor="inprocess"), runner_kwargs=api_fakes.FAST_RUNNER)
    with api_fakes.LiveServer(app) as server:
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-view=searches]")
        form = page.locator("#launch")
        form.locator("select[name=preset]").select_option(preset)
        yield server, form


def test_launch_form_sets_a_micro_batch_per_task(page: Any, tmp_path: Path) -> None:
    """The small_batch preset fills a task row's micro-batch; a micro-batch that does not divide the
    batch comes back as an error on that row's field; a good one launches a search with the preset's
    baselines and a `@mb` objective."""
    import httpx

    with _launch_form(page, tmp_path / "micro.db", "small_batch") as (server, form):
        micro = form.locator(".task-row input[name=t_micro_batch]")
        values = [micro.nth(i).input_value() for i in range(micro.count())]
        assert "" in values and any(v for v in values), values      # full batch and micro-batch rows
        row = values.index("")
        micro.nth(row).fill("3")
        form.locator("input[name=budget]").fill("6")
        page.click("#launch-button")
        page.wait_for_function("document.querySelector('#launch-errors').textContent.includes('micro_batch')")
        assert f"tasks.{row}.micro_batch" in page.inner_text("#launch-errors")
        assert "invalid" in (micro.nth(row).get_attribute("class") or "")
        micro.nth(row).fill("8")
        page.click("#launch-button")
        page.wait_for_selector("body[data-view=search]", timeout=30_000)
        search = httpx.get(f"{server.url}/api/searches/1", timeout=30).json()
    assert "mobilenet:shapes32@mb8" in search["objectives"]
    assert search["config"]["baselines"] == load_config("small_batch").baselines
    expected = "the server responded with a status of 422"       # the console's line for the bad launch
    assert [e for e in page.errors if expected not in e] == [] and len(page.errors) == 1, page.errors


def test_launch_form_keeps_a_preset_tasks_rung_floor(page: Any, tmp_path: Path) -> None:
    """The quick preset's Transformer row shows its rung floor (min_steps_frac 1); launched from the
    form, the search keeps it, and a floor above 1 comes back as an error on that row's field. The
    form shows the preset's core-hour cap too, and a cleared cap launches with none; a breed_after
    above the population is an error on its field, and a valid one launches."""
    import httpx

    with _launch_form(page, tmp_path / "floor.db", "quick") as (server, form):
        floor = form.locator(".task-row input[name=t_min_steps_frac]")
        values = [floor.nth(i).input_value() for i in range(floor.count())]
        assert values == ["", "1"], values                # MobileNet: the rung's fraction; Transformer: all
        cap = form.locator("input[name=max_core_hours]")
        assert cap.input_value() == str(load_config("quick").max_core_hours)
        cap.fill("")
        breed = form.locator("input[name=breed_after]")
        assert breed.input_value() == ""                  # the preset's: wait for a full population
        breed.fill("99")
        floor.nth(1).fill("2")
        form.locator("input[name=budget]").fill("4")
        page.click("#launch-button")
        page.wait_for_function("document.querySelector('#launch-errors').textContent.includes('min_steps_frac')")
        assert "invalid" in (floor.nth(1).get_attribute("class") or "")
        floor.nth(1).fill("1")
        page.click("#launch-button")
        page.wait_for_function("document.querySelector('#launch-errors').textContent.includes('breed_after')")
        assert "invalid" in (breed.get_attribute("class") or "")
        breed.fill("3")
        page.click("#launch-button")
        page.wait_for_selector("body[data-view=search]", timeout=30_000)
        search = httpx.get(f"{server.url}/api/searches/1", timeout=30).json()
    assert [t.get("min_steps_frac") for t in search["config"]["tasks"]] == [None, 1.0]
    assert search["config"]["max_core_hours"] is None
    assert search["config"]["breed_after"] == 3
    expected = "the server responded with a status of 422"
    assert [e for e in page.errors if expected not in e] == [] and len(page.errors) == 2, page.errors


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


def test_what_users_hit(page: Any, tmp_path: Path) -> None:
    """Issue 15's dashboard items: the token popover closes on navigation, an empty front says so,
    baseline stars let the front point under them show, the candidates table gives the rejection
    reason, the searches table keeps its controls in view, the lineage stays in its panel, and
    downloads take a channel count and say what a .pt2 cannot do."""
    import httpx

    from db import SearchStatus, Store

    db = tmp_path / "usability.db"
    app = create_app(Settings(db_url=str(db), executor="inprocess"), runner_kwargs=api_fakes.FAST_RUNNER)
    with api_fakes.LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        sid = client.post("/api/searches", json=api_fakes.TINY_SEARCH).json()["id"]
        api_fakes.wait_for(lambda: client.get(f"/api/searches/{sid}").json()["status"] == "finished", 120,
                           what="the search to finish")
        with Store(str(db)) as store:   # a search with nothing evaluated yet, held paused
            empty = store.create_search("empty", dict(api_fakes.TINY_SEARCH), seed=0).id
            store.set_search_status(empty, SearchStatus.PAUSED, expected=[SearchStatus.QUEUED])
        listed = f"/api/searches/{sid}/candidates"
        rejected = client.get(listed, params={"status": "rejected"}).json()["items"]
        evaluated = client.get(listed, params={"status": "evaluated"}).json()["items"]
        assert rejected and evaluated

        page.set_viewport_size({"width": 1100, "height": 900})   # a laptop's window
        page.goto(server.url + "/")
        page.wait_for_selector("body[data-view=searches]")
        # the paused search's cancel button is inside the table's visible box
        wrap = page.locator("#searches").locator("xpath=..").bounding_box()
        cancel = page.locator(f"#searches button[data-action=cancel][data-search='{empty}']").bounding_box()
        assert wrap and cancel
        assert cancel["x"] + cancel["width"] <= wrap["x"] + wrap["width"] + 0.5, (wrap, cancel)

        page.set_viewport_size({"width": 1400, "height": 950})
        page.click("details.token summary")
        assert page.evaluate("document.querySelector('details.token').open")
        page.goto(f"{server.url}/#/search/{empty}")
        page.wait_for_selector("body[data-view=search]")
        popover_open = page.evaluate("document.querySelector('details.token').open")
        assert not popover_open, "the popover covers pause / resume / cancel"
        # an empty front: a message, no default axes
        assert page.get_attribute("#front-plot", "data-empty") == "1"
        assert page.locator("#front-plot .xtick").count() == 0
        assert "No evaluated candidates yet" in page.inner_text("#front-plot")
        assert page.locator("#hv-plot .xtick").count() == 0

        page.goto(f"{server.url}/#/search/{sid}")
        page.wait_for_function("document.querySelector('#search-title').textContent.includes('finished')")
        page.wait_for_function("Number(document.querySelector('#front-plot').dataset.points) >= 1")
        # zoo stars are hollow: a front member at a baseline's point (BN-ReLU, seed and member) shows through
        stars = page.locator("#front-plot .trace.baselines .point")
        assert stars.count() == 2 and {stars.nth(i).get_attribute("fill") for i in range(2)} == {"none"}
        page.wait_for_function("document.querySelectorAll('#candidates tbody tr.clickable').length >= 30")
        table = page.inner_text("#candidates tbody")
        for c in rejected[:5]:
            assert c["rejection_reason"] and c["rejection_reason"][:20] in table, c
        page.screenshot(path=str(ARTIFACTS / "dashboard-usability-search.png"), full_page=True)

        child = next(c for c in evaluated if c["parent_ids"])
        page.goto(f"{server.url}/#/candidate/{child['id']}")
        page.wait_for_selector("body[data-view=candidate]")
        panel = page.locator("#lineage").locator("xpath=..").bounding_box()
        lineage = page.locator("#lineage").bounding_box()
        assert panel and lineage and lineage["x"] + lineage["width"] <= panel["x"] + panel["width"] + 0.5
        assert ".train()" in page.inner_text("#dl-note")
        page.fill("#dl-channels", "16")
        with page.expect_download() as info:
            page.click("#downloads a[data-format=torchscript]")
        path = tmp_path / "layer.pt"
        info.value.save_as(path)
    layer = torch.jit.load(str(path))
    assert layer(torch.randn(2, 16, 4, 4)).shape == (2, 16, 4, 4)
    assert page.errors == [], page.errors


def test_search_page_asks_for_its_data_at_once_and_loads_no_plotting_library(page: Any, tmp_path: Path) -> None:
    """What a first visit to a search costs (its time is benchmarks/dashboard_first_render.py's): one small
    script, no plotting library (the plots are SVG), and the search, its front, its first page of
    candidates and its faults requested together, not one after another."""
    import httpx

    app = create_app(Settings(db_url=str(tmp_path / "first.db"), executor="inprocess"),
                     runner_kwargs=api_fakes.FAST_RUNNER)
    with api_fakes.LiveServer(app) as server:
        sid = httpx.post(f"{server.url}/api/searches", json=api_fakes.TINY_SEARCH).json()["id"]
        api_fakes.wait_for(lambda: httpx.get(f"{server.url}/api/searches/{sid}").json()["status"] == "finished",
                           60, what="the search to finish")
        page.goto(f"{server.url}/#/search/{sid}")
        page.wait_for_function("window.__evonorm.firstRender !== null")
        assert page.evaluate("typeof window.Plotly") == "undefined"
        resources = page.evaluate("performance.getEntriesByType('resource').map((r) => ({name: r.name, "
                                  "type: r.initiatorType, start: r.startTime, end: r.responseEnd, "
                                  "size: r.encodedBodySize}))")
        scripts = [r for r in resources if r["name"].endswith(".js")]
        assert [r["name"].rsplit("/", 1)[-1] for r in scripts] == ["app.js"]
        assert scripts[0]["size"] < 30_000, scripts   # gzip-compressed
        data = {r["name"].removeprefix(server.url).split("?")[0]: r for r in resources
                if "/api/searches/" in r["name"]}
        first = [f"/api/searches/{sid}", f"/api/searches/{sid}/front", f"/api/searches/{sid}/candidates",
                 f"/api/searches/{sid}/faults"]
        assert set(first) <= set(data), data
        # all four asked for before the first answer arrived
        assert max(data[p]["start"] for p in first) < min(data[p]["end"] for p in first), data
        # the table pages: 50 rows asked for, 50 drawn (the search has 30)
        page_request = next(r["name"] for r in resources if "/candidates?" in r["name"])
        assert "limit=50" in page_request and "offset=0" in page_request
        assert page.locator("#candidates tbody tr").count() == api_fakes.TINY_SEARCH["budget"]
        assert int(page.get_attribute("#front-plot", "data-points") or 0) >= 1
        assert page.locator("#hv-plot .trace.hv .point").count() >= 1
    assert page.errors == [], page.errors
