"""API responses (and the CLI's summary, front and exports) of a recorded search, byte for byte.

A refactor of the read side (views, summary, live front, exports) must not change what a client
sees. This test builds the same small search every time (a real runner, one job at a time, the
in-process executor, real screening and the fingerprint-derived fake training of `api_fakes`, plus
a hand-made cancelled search and one whose stored config no longer validates), reads it through
every read endpoint and the CLI, and compares the bytes with `golden/recorded_search.json`.

Only what differs between two runs of the same search is masked: timestamps and the worker's
host:pid. To record the file again after an intended change of the responses:

    EVONORM_RECORD_GOLDEN=1 .venv/bin/python -m pytest tests/api/test_api_golden.py -k sqlite
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import api_fakes
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from db import CandidateOutcome, CandidateStatus, NewCandidate, SearchStatus, Store
from evonorm_search import cli
from evonorm_search.config import SearchConfig
from evonorm_search.runner import SearchRunner
from evonorm_search.settings import Settings
from evonorm_search.summary import export_winners
from primitives import structural_hash
from primitives.zoo import ZOO
from workers.executors import InProcessExecutor, worker_name

GOLDEN = Path(__file__).parent / "golden" / "recorded_search.json"
RECORD = os.environ.get("EVONORM_RECORD_GOLDEN") == "1"

SEARCH = {**api_fakes.TINY_SEARCH, "name": "golden", "budget": 40, "in_flight": 1, "cost_objective": True}
_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)?")


def _build(store: Store) -> tuple[int, int, int]:
    """The recorded searches: a finished one, a cancelled one, one with a config that no longer validates."""
    cfg = SearchConfig.model_validate(SEARCH)
    sid = store.create_search(cfg.name, cfg.model_dump(mode="json"), seed=cfg.seed).id
    with InProcessExecutor() as ex:
        SearchRunner(store, sid, ex, **api_fakes.FAST_RUNNER).run()

    stopped_cfg = SearchConfig.model_validate({"name": "stopped", "strategy": "random", "budget": 4,
                                               "tasks": [{"backbone": "mobilenet", "task": "digits"}]})
    stopped = store.create_search(stopped_cfg.name, stopped_cfg.model_dump(mode="json"), seed=3).id
    graphs = [ZOO[n].graph for n in ("layernorm", "gn_relu", "evonorm_b0")]
    added = store.add_candidates(stopped, [NewCandidate(graph=g.dumps(), structural_hash=structural_hash(g),
                                                        mutation="random") for g in graphs if g is not None])
    store.set_search_status(stopped, SearchStatus.CANCELLED)
    store.finish_candidates([CandidateOutcome(c.id, CandidateStatus.REJECTED, rejection_stage="cancelled",
                                              rejection_reason="the search was cancelled") for c in added])

    legacy = store.create_search("legacy", {"budget": 5, "strategy": "evolution", "old_field": 1,
                                            "tasks": [{"backbone": "resnet", "task": "digits"}]}, seed=0).id
    store.set_search_status(legacy, SearchStatus.CANCELLED)
    return sid, stopped, legacy


# Worker seconds are measured (the screening is real): only that they are numbers is golden.
_SPEND = re.compile(r'(\\?"core_(?:hours|s)\\?":\s*)-?[0-9][0-9.e+-]*')


def _mask(text: str) -> str:
    return _SPEND.sub(r"\1<spent>", _TIME.sub("<time>", text.replace(worker_name(), "<worker>")))


def _responses(url: str, tmp_path: Path) -> dict[str, str]:
    store = Store(url)
    try:
        sid, stopped, legacy = _build(store)
        candidates = [c.id for s in (sid, stopped) for c in store.list_candidates(s, limit=500)]
    finally:
        store.close()
    out: dict[str, str] = {}
    with TestClient(create_app(Settings(db_url=url, executor="inprocess", max_running=0),
                                runner_kwargs=api_fakes.FAST_RUNNER, warm_fronts=0)) as client:
        def get(path: str, **params: Any) -> None:
            r = client.get(path, params=params)
            key = path + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")
            headers = {k: v for k, v in r.headers.items() if k in ("content-type", "content-disposition",
                                                                    "x-layer-name")}
            out[key] = f"{r.status_code} {json.dumps(headers, sort_keys=True)}\n{r.text}"

        get("/api/searches")
        get("/api/presets")
        get("/api/zoo")
        get("/openapi.json")
        get("/api/searches", status="cancelled")
        for s in (sid, stopped, legacy):
            get(f"/api/searches/{s}")
            get(f"/api/searches/{s}/front")
            get(f"/api/searches/{s}/candidates")
        get(f"/api/searches/{sid}/candidates", status="rejected")
        get(f"/api/searches/{sid}/candidates", rejection_stage="quality")
        get(f"/api/searches/{sid}/candidates", sort="generation", order="desc", limit=7, offset=3)
        get(f"/api/searches/{sid}/candidates", sort="updated_at", limit=5, offset=20)
        get(f"/api/searches/{sid}/candidates", after=9, limit=4)
        for c in candidates:
            get(f"/api/candidates/{c}")
        front = client.get(f"/api/searches/{sid}/front").json()
        for c in [m["id"] for m in front["members"]] + [b["candidate_id"] for b in front["baselines"]]:
            get(f"/api/candidates/{c}/module")
        get("/api/candidates/999999")
        get(f"/api/searches/{sid}/module")   # no such route: the 404 body

    runner = CliRunner()
    for args in (["status", str(sid)], ["status", str(stopped)], ["front", str(sid)], ["front", str(stopped)]):
        r = runner.invoke(cli.app, [*args, "--db", url], env={"COLUMNS": "400"})
        out["cli " + " ".join(args)] = f"{r.exit_code}\n{r.output}"
    store = Store(url)
    try:
        summary = cli._summary(store, sid)
        out["cli summary-json"] = json.dumps(summary, indent=2, default=str)
        winners = tmp_path / "winners"
        paths = export_winners(store, sid, winners)
    finally:
        store.close()
    for p in paths:
        out[f"export-winners {p.name}"] = p.read_text()
    return {k: _mask(v) for k, v in out.items()}


def test_recorded_search_reads_the_same(database: Any, tmp_path: Path) -> None:
    got = _responses(database.url, tmp_path)
    if RECORD:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert sorted(got) == sorted(want), "the same requests"
    for key in want:
        assert got[key] == want[key], f"{key} reads differently"
