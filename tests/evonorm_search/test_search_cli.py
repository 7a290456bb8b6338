"""The main-job commands of the CLI (`run`, `status`, `front`, `export-winners`, `evaluate`) end to end.

The search is real but tiny: a narrow ResNet trained for a few steps on the
bundled digits, with the cost objective, in process, so one run takes seconds.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from db import CandidateStatus, SearchStatus, Store
from evonorm_search import cli
from evonorm_search.cli import app
from evonorm_search.config import SearchConfig, load_config
from evonorm_search.pareto import hypervolume
from evonorm_search.summary import evaluated, pareto_front
from primitives import Graph, structural_hash
from primitives.compile import class_name_for

runner = CliRunner()

SUMMARY_KEYS = {"search_id", "status", "objectives", "candidates", "evaluated", "rejected", "core_hours",
                "by_status", "rejected_by_stage", "front", "verified_front", "baselines", "test",
                "hypervolume_history"}


def tiny_config(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "cli-test", "budget": 8, "population_size": 4, "tournament_size": 2, "in_flight": 1,
        "seed_with_zoo": ["bn_relu"], "groups": 8, "timeout_s": 120, "cost_objective": True,
        "tasks": [{"backbone": "resnet", "task": "digits", "steps": 10, "batch_size": 32,
                   "backbone_kwargs": {"widths": [8, 16], "blocks": [1, 1]}}],
        "rejection": {"stability_steps": 3, "quality": False},
        **overrides,
    }


def _text(output: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(output.split())


@dataclass(frozen=True)
class Finished:
    db: str
    search_id: int
    output: str
    summary: dict[str, Any]
    export_dir: Path


@pytest.fixture(scope="module")
def finished(module_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    """One tiny search run through `evonorm-search run`, on each backend."""
    tmp = tmp_path_factory.mktemp("cli-run")
    config = tmp / "search.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    db = module_database.url
    if module_database.backend == "sqlite":
        db = str(tmp / "new" / "dir" / "search.db")  # `run` creates the file and its directory
    summary, export_dir = tmp / "out" / "summary.json", tmp / "winners"
    threads, width = torch.get_num_threads(), cli.console.width
    torch.set_num_threads(1)
    cli.console.width = 300     # one line per table row
    try:
        result = runner.invoke(app, ["run", "--config", str(config), "--executor", "inprocess", "--db", db,
                                     "--summary-json", str(summary), "--export-dir", str(export_dir)])
    finally:
        torch.set_num_threads(threads)
        cli.console.width = width
    assert result.exit_code == 0, result.output
    data = json.loads(summary.read_text())
    yield Finished(db, data["search_id"], result.output, data, export_dir)


def test_run_finishes_the_budget_and_prints_the_front(finished: Finished) -> None:
    s = finished.summary
    assert set(s) == SUMMARY_KEYS
    assert s["status"] == "finished" and s["objectives"] == ["resnet:digits", "cost"]
    assert s["candidates"] == 8 and s["evaluated"] + s["rejected"] == 8
    assert s["by_status"]["evaluated"] == s["evaluated"] and s["by_status"]["rejected"] == s["rejected"]
    assert sum(s["rejected_by_stage"].values()) == s["rejected"]
    assert s["baselines"]["bn_relu"]["status"] == "evaluated"
    assert s["front"], "an evaluated seed means a non-empty front"
    for m in s["front"]:
        assert len(m["objectives"]) == 2 and 0 <= m["objectives"][0] <= 1 and m["objectives"][1] > 0
        # objectives are estimates: the accuracy a mean over the rung's seeds, the cost measured once
        assert [e["mean"] for e in m["estimates"]] == pytest.approx(m["objectives"])
        assert m["estimates"][1]["n"] == 1 and m["rung"] is not None
    assert all(m["verified"] for m in s["verified_front"])
    out = _text(finished.output)
    assert f"search {finished.search_id}: finished" in out
    assert "cost: fwd+bwd time relative to BN-ReLU, lower is better" in out
    assert "zoo bn_relu" in out and "baseline" in out
    assert " ± " in out and "verified front:" in out        # estimates with their error bars
    assert f"exported {len(s['front'])} winners" in out


def test_hypervolume_history_grows_to_the_fronts_hypervolume(finished: Finished) -> None:
    s = finished.summary
    history = s["hypervolume_history"]
    assert history and [n for n, _ in history] == sorted({n for n, _ in history})
    assert history[-1][0] == s["evaluated"]
    volumes = [hv for _, hv in history]
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(volumes)), volumes
    maximise = load_config(None, tiny_config()).maximise
    assert volumes[-1] == pytest.approx(hypervolume([m["objectives"] for m in s["front"]], maximise))
    assert volumes[-1] > 0


def test_status_prints_the_counts(finished: Finished) -> None:
    result = runner.invoke(app, ["status", str(finished.search_id), "--db", finished.db])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    expected = {k: v for k, v in finished.summary.items()
                if k not in ("front", "verified_front", "hypervolume_history")}
    assert shown == expected


def test_front_prints_the_members_and_baselines(finished: Finished, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.console, "width", 400)  # one line per row
    result = runner.invoke(app, ["front", str(finished.search_id), "--db", finished.db])
    assert result.exit_code == 0, result.output
    assert f"Pareto front of search {finished.search_id} (mean ± standard error (seeds) per task at each " \
           "layer's highest rung; cost:" in _text(result.output)
    for m in finished.summary["front"]:
        acc = m["estimates"][0]
        shown = f"{acc['mean']:.4f}" + (f" ± {acc['stderr']:.4f}" if acc["stderr"] is not None else "") \
            + f" ({acc['n']})"
        assert any(m["formula"] in line and shown in line for line in result.output.splitlines()), m
    assert "zoo bn_relu" in result.output
    # --json: the same front, with every member's estimates, rung and verified flag
    as_json = runner.invoke(app, ["front", str(finished.search_id), "--db", finished.db, "--json"])
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    assert [m["id"] for m in report["members"]] == [m["id"] for m in finished.summary["front"]]
    for m in report["members"] + report["verified_members"]:
        assert {"mean", "stderr", "n"} <= set(m["estimates"][0]) and isinstance(m["verified"], bool)
    assert report["alpha"] == 0.05 and "paired t-test" in report["test"]


def test_front_title_without_a_cost_objective(finished: Finished, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(None, tiny_config(cost_objective=False))
    with Store(finished.db) as store:
        sid = store.create_search("no-cost", cfg.model_dump(mode="json"), seed=0).id
    monkeypatch.setattr(cli.console, "width", 400)
    result = runner.invoke(app, ["front", str(sid), "--db", finished.db])
    assert result.exit_code == 0, result.output
    assert f"Pareto front of search {sid} (mean ± standard error (seeds) per task at each layer's highest " \
           "rung)" in _text(result.output)
    assert "cost" not in result.output


def test_export_winners_writes_importable_layers(finished: Finished, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    result = runner.invoke(app, ["export-winners", str(finished.search_id), "-o", str(out),
                                 "--db", finished.db])
    assert result.exit_code == 0, result.output
    paths = sorted(out.glob("*.py"))
    assert [p.name for p in paths] == sorted(p.name for p in finished.export_dir.glob("*.py"))
    assert len(paths) == len(finished.summary["front"])
    assert "bn_relu.py" in {p.name for p in paths}  # a seed on the front keeps its zoo name
    with Store(finished.db) as store:
        cfg = SearchConfig.model_validate(store.get_search(finished.search_id).config)
        front = pareto_front(evaluated(store, finished.search_id), cfg.maximise)
    assert sorted(m.candidate_id for m in front) == sorted(m["id"] for m in finished.summary["front"])
    hashes = set()
    for path in paths:
        spec = importlib.util.spec_from_file_location(f"cli_winner_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        graph = Graph.loads(mod.GRAPH)
        hashes.add(structural_hash(graph))
        layer = getattr(mod, class_name_for(path.stem, graph))(16, groups=8)
        x = torch.randn(4, 16, 5, 5)
        y = layer(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
    assert hashes == {structural_hash(m.candidate.graph) for m in front}


@pytest.mark.parametrize("command", ["status", "front", "export-winners"])
def test_an_unknown_search_id_is_an_error(finished: Finished, command: str, tmp_path: Path) -> None:
    extra = ["-o", str(tmp_path)] if command == "export-winners" else []
    args = [command, "987654", "--db", finished.db, *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "no search 987654" in result.output


def test_resume_of_an_unknown_search_is_an_error(finished: Finished) -> None:
    result = runner.invoke(app, ["run", "--resume", "987654", "--db", finished.db, "--executor", "inprocess"])
    assert result.exit_code == 2, result.output
    assert "no search 987654" in result.output


def test_resume_while_another_runner_holds_the_search_is_refused(tmp_path: Path) -> None:
    db = str(tmp_path / "held.db")
    store = Store(db)
    cfg = load_config(None, tiny_config())
    sid = store.create_search(cfg.name, cfg.model_dump(mode="json"), seed=0).id
    store.claim_search(sid, "gpu-node-7:4242:1:abcd", stale_after_s=3600)   # a live runner elsewhere
    result = runner.invoke(app, ["run", "--resume", str(sid), "--db", db, "--executor", "inprocess"])
    assert result.exit_code == 2, result.output
    assert f"search {sid} is being run by gpu-node-7:4242:1:abcd" in _text(result.output)
    assert store.get_search(sid).num_candidates == 0   # nothing touched
    store.close()


# -- read-only commands never create a database ---------------------------------------------------


@pytest.mark.parametrize("args", [["status", "1"], ["front", "1"], ["export-winners", "1"],
                                  ["rerank", "1", "--top", "1"], ["run", "--resume", "1"]])
@pytest.mark.parametrize("as_url", [False, True])
def test_a_missing_sqlite_database_is_an_error(args: list[str], as_url: bool, tmp_path: Path) -> None:
    path = tmp_path / "typo" / "search.db"
    result = runner.invoke(app, [*args, "--db", f"sqlite:///{path}" if as_url else str(path)],
                           catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert f"the database {path} does not exist" in _text(result.output)
    assert not path.parent.exists()


def test_a_bad_config_names_the_field_and_touches_no_database(tmp_path: Path) -> None:
    db = tmp_path / "search.db"
    bad = tmp_path / "bad.json"
    config = tiny_config(budget=0, populaton_size=3)
    config["tasks"][0]["task"] = "mnist"
    bad.write_text(json.dumps(config))
    result = runner.invoke(app, ["run", "--config", str(bad), "--db", str(db), "--executor", "inprocess"])
    assert result.exit_code == 2, result.output
    out = _text(result.output)
    assert "invalid search config" in out
    assert "budget:" in out and "populaton_size:" in out and "tasks.0.task:" in out and "'mnist'" in out
    assert not db.exists()

    not_yaml = tmp_path / "bad.yaml"
    not_yaml.write_text("tasks: [unclosed\n")
    result = runner.invoke(app, ["run", "--config", str(not_yaml), "--db", str(db)])
    assert result.exit_code == 2 and "not valid .yaml" in _text(result.output)
    assert not db.exists()


# -- Ctrl-C ----------------------------------------------------------------------------------------


def test_ctrl_c_stops_without_a_traceback_and_the_search_resumes(tmp_path: Path) -> None:
    config = tmp_path / "search.json"
    # long enough (a couple of seconds per candidate) that the poll below sees the first one training
    steps = {"steps": 500, "batch_size": 32, "backbone_kwargs": {"widths": [8, 16], "blocks": [1, 1]}}
    # one rung: a candidate trains once (the funnel's climbs would multiply the training here)
    config.write_text(json.dumps(tiny_config(budget=2, cost_objective=False, rungs=[{"steps_frac": 1}],
                                             tasks=[{"backbone": "resnet", "task": "digits", **steps}])))
    db = tmp_path / "search.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EVONORM_EXPORT_DIR": str(tmp_path / "exports")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from evonorm_search.cli import main; main()", "run", "--config", str(config),
         "--executor", "inprocess", "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # A shell's background job (`make test &`) ignores SIGINT, and Python keeps an inherited
        # SIG_IGN: give the child the default, as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (db.exists() and _evaluating(db)):  # the seed is training
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the search never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr
    assert "search 1 interrupted" in stderr and f"evonorm-search run --resume 1 --db {db}" in _text(stderr)
    with Store(db) as store:
        search = store.get_search(1)
        assert search.status is SearchStatus.RUNNING and search.num_candidates < 2

    result = runner.invoke(app, ["run", "--resume", "1", "--db", str(db), "--executor", "inprocess",
                                 "--export-dir", str(tmp_path / "winners")])
    assert result.exit_code == 0, result.output
    with Store(db) as store:
        search = store.get_search(1)
        assert search.status is SearchStatus.FINISHED and search.num_candidates == 2
        assert not store.count_by_status(1).get(CandidateStatus.EVALUATING)


def _evaluating(db: Path) -> bool:
    with Store(db) as store:
        searches = store.list_searches(limit=1)
        return bool(searches) and store.count_by_status(searches[0].id).get(CandidateStatus.EVALUATING, 0) > 0


# -- evaluate --------------------------------------------------------------------------------------


@pytest.fixture
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_evaluate_json_runs_every_stage(restore_threads: None) -> None:
    torch.set_num_threads(3)
    result = runner.invoke(app, ["evaluate", "bn_relu", "--backbones", "resnet", "--steps", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [stage for stage, _ in data["stage_seconds"]][:5] == ["static", "numeric", "duplicate", "stability",
                                                                 "quality"]
    if data["status"] == "evaluated":
        assert [(s["backbone"], s["steps"]) for s in data["scores"]] == [("resnet", 2)]
    else:  # the quality stage's short training is cut to --steps too: 2 steps may not beat its margin
        assert data["status"] == "rejected" and data["rejection"]["stage"] == "quality", data
        assert data["scores"] == []
    assert torch.get_num_threads() == 1  # --threads defaults to 1


def test_evaluate_json_has_one_score_per_backbone(restore_threads: None) -> None:
    result = runner.invoke(app, ["evaluate", "bn_relu", "--backbones", "resnet,transformer", "--steps", "2",
                                 "--no-rejection", "--threads", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "evaluated" and data["rejection"] is None
    assert [(s["backbone"], s["steps"]) for s in data["scores"]] == [("resnet", 2), ("transformer", 2)]
    assert all(0 <= s["accuracy"] <= 1 for s in data["scores"])
    assert torch.get_num_threads() == 2
    bad = runner.invoke(app, ["evaluate", "bn_relu", "--threads", "0"])
    assert bad.exit_code == 2 and "--threads" in bad.output


@pytest.mark.parametrize(("layer", "backbones", "message"), [
    ("bn_relu", "resnet,vgg", "unknown ['vgg']"),
    ("bn_relu", " , ", "--backbones"),
    ('{"nodes": [', "resnet", "invalid graph: $: malformed JSON"),
    ('{"nodes": [{"op": "bogus", "inputs": [0]}]}', "resnet", "unknown op 'bogus'"),
    ("no_such_layer", "resnet", "'no_such_layer' is neither a zoo layer"),
])
def test_evaluate_refuses_bad_input(layer: str, backbones: str, message: str) -> None:
    result = runner.invoke(app, ["evaluate", layer, "--backbones", backbones, "--steps", "1", "--json"])
    assert result.exit_code == 2, result.output
    assert message in _text(result.output)
