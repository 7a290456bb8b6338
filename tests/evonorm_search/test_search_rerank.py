"""Final re-ranking: layer selection and the per-layer summary (no Ray), then real Ray Tune runs."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import search_fakes
from rich.console import Console
from typer.testing import CliRunner

import evonorm_search.rerank as rerank_module
from db import RerankRecord, RerankTrialRecord, Store
from evonorm_search.cli import app
from evonorm_search.config import load_config
from evonorm_search.rerank import (
    BASELINES,
    PlannedTrial,
    RerankInterrupted,
    RerankLayer,
    RerankProgress,
    RerankSettings,
    StopSignals,
    Trial,
    reports_per_trial,
    rerank_table,
    run_rerank,
    select_layers,
    summarise,
    task_plan,
)
from evonorm_search.runner import SearchRunner
from evonorm_search.summary import evaluated, pareto_front
from primitives.zoo import ZOO
from workers.executors import InProcessExecutor
from workers.train import TrainConfig, train

# A tiny, real task: the narrow ResNet on digits trains tens of steps in about a second.
TINY_TASK = {"backbone": "resnet", "task": "digits", "steps": 6, "backbone_kwargs": {"widths": [8, 8, 8]}}


def fake_search(store: Store, **overrides: object) -> int:
    """A finished search whose results come from the fake trainer (fast), on the tiny task."""
    cfg = load_config("quick", {"budget": 16, "population_size": 4, "tournament_size": 2, "in_flight": 2,
                                "tasks": [TINY_TASK], **overrides})
    sid = store.create_search(cfg.name, cfg.model_dump(mode="json"), seed=cfg.seed).id
    SearchRunner(store, sid, InProcessExecutor(), rung_fn=search_fakes.FAKE_RUNG).run()
    return sid


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "rerank.db"))
    yield s
    s.close()


def test_select_layers_ranks_the_front_and_adds_the_zoo(sqlite_store: Store) -> None:
    sid = fake_search(sqlite_store)
    front = pareto_front(evaluated(sqlite_store, sid), [True])
    layers = select_layers(sqlite_store, sid, top_k=2)
    candidates = [layer for layer in layers if layer.candidate_id is not None]
    zoo = [layer.zoo_layer for layer in layers if layer.zoo_layer is not None]
    assert zoo == list(BASELINES)
    # one objective: the front is the best accuracy (and its functional duplicates); seeds count as zoo
    expected = [m for m in front if m.candidate.zoo_name not in BASELINES][:2]
    assert [c.candidate_id for c in candidates] == [m.candidate_id for m in expected]
    assert all(c.search_objectives is not None for c in candidates)
    # bn_relu was seeded by the quick preset; if it is on the front it comes back once, as the baseline
    assert len({layer.graph for layer in layers}) == len(layers)
    assert [layer.eps for layer in layers if layer.zoo_layer == "evonorm_b0"] == [ZOO["evonorm_b0"].eps]


def test_task_plan_lengthens_the_recipe(sqlite_store: Store) -> None:
    cfg = load_config("quick", {"tasks": [TINY_TASK]})
    [(task, lrs)] = task_plan(cfg, RerankSettings(steps_mult=3))
    assert task.config.steps == 18 and lrs == (0.05, 0.1, 0.2)  # digits' recipe lr 0.1 x (0.5, 1, 2)
    [(task, lrs)] = task_plan(cfg, RerankSettings(steps=7, lrs=(0.3,)))
    assert task.config.steps == 7 and lrs == (0.3,)
    assert reports_per_trial(10, 4) == 5 and reports_per_trial(400, 5) == 5 and reports_per_trial(3, 5) == 3


def test_summarise_takes_the_best_complete_lr() -> None:
    layer = RerankLayer("candidate 7", "{}", 1e-5, "x", candidate_id=7, search_objectives=(0.5,))
    settings = RerankSettings(seeds=(0, 1))
    trials = [
        Trial("candidate 7", 0.1, 0, 0.80, 0.5, 10, True, 0.80),
        Trial("candidate 7", 0.1, 1, 0.90, 0.4, 10, True, 0.90),
        # the higher mean, but one seed was stopped by ASHA: not eligible
        Trial("candidate 7", 0.2, 0, 0.95, 0.3, 10, True, 0.95),
        Trial("candidate 7", 0.2, 1, 0.60, 0.9, 5, False, 0.97),
        Trial("other", 0.1, 0, 0.99, 0.1, 10, True, 0.99),
    ]
    row = summarise(layer, "resnet:digits", 0, trials, [0.1, 0.2], settings, 10, "run1")
    m = row.metrics
    assert row.candidate_id == 7 and row.zoo_layer is None and row.backbone == "resnet:digits"
    assert m["complete"] and m["lr"] == 0.1 and m["accuracies"] == [0.80, 0.90]
    assert math.isclose(m["accuracy"], 0.85) and math.isclose(m["accuracy_std"], 0.0707, abs_tol=1e-4)
    assert m["stopped_early"] == 1 and m["best_reported"] == 0.97 and m["search_accuracy"] == 0.5
    assert m["sweep"]["0.2"] == {"mean": 0.95, "finished": 1, "trials": 2}

    stopped = [Trial("candidate 7", 0.1, 0, 0.3, None, 5, False, 0.4)]
    m = summarise(layer, "resnet:digits", 0, stopped, [0.1], RerankSettings(seeds=(0,)), 10, "r").metrics
    assert not m["complete"] and m["lr"] is None and m["accuracy"] == 0.4 and m["accuracies"] == []


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="baselines"):
        RerankSettings(baselines=("selu",))  # outside the search space
    with pytest.raises(ValueError, match="seed"):
        RerankSettings(seeds=())
    with pytest.raises(ValueError, match="lrs"):
        RerankSettings(lrs=(0.1, -1.0))


def test_train_callback_reports_without_changing_training() -> None:
    factory = ZOO["bn_relu"].factory()
    cfg = TrainConfig(steps=10, backbone_kwargs={"widths": (8, 8, 8)})
    seen: list[tuple[int, float, float]] = []
    plain = train(factory, "resnet", "digits", cfg, seed=3)
    watched = train(factory, "resnet", "digits", cfg, seed=3, on_eval=lambda *a: seen.append(a), eval_every=4)
    assert [s for s, _, _ in seen] == [4, 8, 10]
    assert watched.val_accuracy == plain.val_accuracy and watched.val_loss == plain.val_loss
    assert seen[-1] == (10, plain.val_loss, plain.val_accuracy)


@pytest.fixture
def ray_local() -> Iterator[object]:
    """A local Ray with the test machine's 2 CPUs."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def test_rerank_on_ray_tune_records_the_table(ray_local: object, sqlite_store: Store) -> None:
    # Real Tune, real training, 6 trials of 60 steps. The rerank table itself is tested on
    # both backends in tests/db/test_db_rerank.py.
    store = sqlite_store
    sid = fake_search(store)
    settings = RerankSettings(top_k=1, steps=60, lrs=(0.05, 0.2), seeds=(0,), evals=3,
                              baselines=("bn_relu", "layernorm"))
    records = run_rerank(store, sid, settings)
    assert len(records) == 3  # (1 candidate + 2 baselines) x 1 objective
    assert store.rerank_results(sid) == records
    # every trial was recorded as it ended: 3 layers x 2 lrs x 1 seed
    trials = store.rerank_trials(sid)
    assert len(trials) == 6 and len({t.key for t in trials}) == 6
    assert {t.metrics["status"] for t in trials} <= {"finished", "stopped", "diverged"}
    assert sorted((t.metrics["label"], t.metrics["lr"]) for t in trials) == sorted(
        (r.metrics["label"], lr) for r in records for lr in (0.05, 0.2))
    # the same re-ranking again trains nothing: the table comes from the recorded trials
    seen: list[str] = []

    class Watch(RerankProgress):
        def started(self, trial: PlannedTrial) -> None:
            seen.append(trial.key)

        def finished(self, trial: PlannedTrial, record: RerankTrialRecord) -> None:
            seen.append(trial.key)

    again = run_rerank(store, sid, settings, progress=Watch())
    assert seen == [] and store.rerank_trials(sid) == trials
    assert [(r.metrics["label"], r.metrics["accuracy"], r.metrics["lr"]) for r in again] == [
        (r.metrics["label"], r.metrics["accuracy"], r.metrics["lr"]) for r in records]

    # SIGINT (Ctrl+C) after the first trial of a new plan (other seeds): the run stops with what it finished
    class Interrupt(RerankProgress):
        def finished(self, trial: PlannedTrial, record: RerankTrialRecord) -> None:
            if not stop.event.is_set():
                os.kill(os.getpid(), signal.SIGINT)

    # The handler before: Python's default, or SIG_IGN where the test runner was started in the
    # background of a non-interactive shell (`cmd &`), which ignores SIGINT for its children.
    before = signal.getsignal(signal.SIGINT)
    stop = StopSignals()
    with stop, pytest.raises(RerankInterrupted) as info:
        run_rerank(store, sid, replace(settings, seeds=(1, 2)), progress=Interrupt(), stop=stop)
    assert signal.getsignal(signal.SIGINT) == before   # handlers restored
    assert stop.signum == signal.SIGINT
    kept = store.rerank_trials(sid)[len(trials):]
    assert 1 <= len(kept) < 12 and info.value.recorded == len(kept) and info.value.total == 12
    assert info.value.this_run == len(kept) and store.rerank_results(sid) == records + again   # no table
    by_layer = {r.metrics["label"]: r for r in records}
    assert set(by_layer) >= {"zoo bn_relu", "zoo layernorm"}
    for r in records:
        m = r.metrics
        assert r.backbone == "resnet:digits" and m["steps"] == 60 and m["seeds"] == [0]
        assert sum(s["trials"] for s in m["sweep"].values()) == 2  # both lrs ran (maybe stopped early)
        assert m["accuracy"] is None or 0.0 <= m["accuracy"] <= 1.0
        assert m["errors"] == []
        if m["complete"]:
            assert m["lr"] in (0.05, 0.2) and len(m["accuracies"]) == 1
    # BN-ReLU learns digits in 60 steps (chance is 0.1, ~0.3 after 30 steps) at one rate at least
    bn = by_layer["zoo bn_relu"].metrics
    assert bn["best_reported"] is not None and bn["best_reported"] > 0.2
    with pytest.raises(AttributeError):
        records[0].backbone = "x"  # type: ignore[misc]
    console = Console(record=True, width=200)
    console.print(rerank_table(records))
    text = console.export_text()
    assert "zoo bn_relu" in text and "zoo layernorm" in text and "resnet:digits" in text


def test_cli_rerank_parses_runs_and_prints(sqlite_store: Store, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # The training is faked here (Ray Tune runs above): this checks options, errors and output.
    db = str(tmp_path / "rerank.db")
    sid = fake_search(sqlite_store)
    seen: list[RerankSettings] = []

    def fake_run(store: Store, search_id: int, settings: RerankSettings, **_: object) -> list[RerankRecord]:
        seen.append(settings)
        layers = select_layers(store, search_id, settings.top_k, settings.baselines)
        rows = [summarise(layer, "resnet:digits", 0,
                          [Trial(layer.label, 0.1, 0, 0.5 + i / 100, 1.0, 12, True, 0.6)],
                          [0.1], settings, 12, "run") for i, layer in enumerate(layers)]
        return store.add_rerank_results(search_id, rows)

    monkeypatch.setattr(rerank_module, "run_rerank", fake_run)
    result = CliRunner().invoke(app, ["rerank", str(sid), "--top", "1", "--steps", "12", "--lrs", "0.1",
                                      "--seeds", "0", "--evals", "2", "--db", db])
    assert result.exit_code == 0, result.output
    assert seen == [RerankSettings(top_k=1, steps=12, lrs=(0.1,), seeds=(0,), evals=2)]
    assert "Re-ranking" in result.output and "rows recorded" in result.output
    assert all(f"zoo {n}" in result.output for n in BASELINES)
    rows = sqlite_store.rerank_results(sid)
    assert sorted(r.zoo_layer for r in rows if r.zoo_layer) == sorted(BASELINES)
    # best first: the last layer got the highest fake accuracy
    assert result.output.index("zoo evonorm_s0") < result.output.index("zoo bn_relu")
    bad = CliRunner().invoke(app, ["rerank", str(sid), "--top", "1", "--lrs", "fast", "--db", db])
    assert bad.exit_code == 2 and "--lrs" in bad.output
    bad = CliRunner().invoke(app, ["rerank", str(sid), "--top", "1", "--seeds", "0.5", "--db", db])
    assert bad.exit_code == 2 and "--seeds" in bad.output
    missing = CliRunner().invoke(app, ["rerank", "999", "--top", "1", "--db", db])
    assert missing.exit_code == 2 and "no search 999" in missing.output


CLI = [sys.executable, "-c", "from evonorm_search.cli import main; main()"]


def test_cli_rerank_records_each_trial_stops_on_sigterm_and_resumes(sqlite_store: Store,
                                                                    tmp_path: Path) -> None:
    """`rerank` as a user runs it (a real process, real Ray Tune): a line per trial as it ends, each trial
    in the store as it ends; SIGTERM stops it with one line and exit 143 (no native crash dump from Ray's
    driver), keeping what finished; the same command again runs only the trials not yet recorded.
    (SIGINT takes the same path: tested in-process above.)"""
    store = sqlite_store
    sid = fake_search(store)
    # 3 layers x 2 lrs x 2 seeds = 12 short trials on one objective
    args = [*CLI, "rerank", str(sid), "--top", "1", "--steps", "60", "--lrs", "0.05,0.1", "--seeds", "0,1",
            "--evals", "2", "--baselines", "bn_relu,layernorm", "--db", store.url]
    total = 12
    out = tmp_path / "first.out"
    with out.open("w") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        end = time.monotonic() + 240
        while len(store.rerank_trials(sid)) < 2:
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < end, out.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = out.read_text()
    first = store.rerank_trials(sid)
    assert rc == 143, text
    assert 2 <= len(first) < total, text
    lines = text.strip().splitlines()
    assert lines[-1] == (f"rerank stopped by SIGTERM: {len(first)} of {total} trials recorded ({len(first)} in "
                         "this run); run the same command again to resume")
    assert "Traceback" not in text and "SIGTERM received" not in text and "***" not in text, text
    assert f"re-ranking: {total} trials, {total} to run" in text
    for t in first:   # each recorded trial was shown as it ended, with its result
        m = t.metrics
        assert m["status"] in ("finished", "stopped", "diverged")
        assert any(f"{m['label']} lr {m['lr']:g} seed {m['seed']}: " in line for line in lines), (m, text)
    assert store.rerank_results(sid) == []   # no table from an unfinished re-ranking

    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(first)} recorded by an earlier run, {total - len(first)} to run" in done.stdout
    assert done.stdout.count("  started ") == total - len(first)
    trials = store.rerank_trials(sid)
    assert len(trials) == total and trials[:len(first)] == first   # the first run's trials were not redone
    assert len({t.key for t in trials}) == total
    rows = store.rerank_results(sid)
    assert len(rows) == 3 and "Re-ranking" in done.stdout and "3 rows recorded" in done.stdout
    # the table counts every trial, the interrupted run's included
    assert sum(s["trials"] for r in rows for s in r.metrics["sweep"].values()) == total
