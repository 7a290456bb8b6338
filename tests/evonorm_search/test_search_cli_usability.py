"""What a new user meets on the command line (issue 15), each through a real `evonorm-search` process:
one-line errors that leave nothing behind, a progress display that fits 80 columns and says what is
happening, a front table that shows each layer once with its whole origin, and winners in every layout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from db import CandidateStatus, Store

CLI = [sys.executable, "-c", "from evonorm_search.cli import main; main()"]


def cli(*args: str, columns: int = 80, timeout: float = 300, cwd: Path | None = None,
        ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "OMP_NUM_THREADS": "1", "TERM": "dumb"}
    env.pop("EVONORM_DB_URL", None)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny_config(**overrides: object) -> dict[str, object]:
    return {
        "name": "usability", "budget": 8, "population_size": 4, "tournament_size": 2, "in_flight": 1,
        "seed_with_zoo": ["bn_relu"], "groups": 8, "timeout_s": 120, "seed": 5, "cost_objective": True,
        "tasks": [{"backbone": "resnet", "task": "digits", "steps": 10, "batch_size": 32,
                   "backbone_kwargs": {"widths": [8, 16], "blocks": [1, 1]}}],
        "rejection": {"stability_steps": 3, "quality": False},
        **overrides,
    }


def _searches(db: Path) -> int:
    if not db.exists():
        return 0
    with Store(db) as store:
        return len(store.list_searches(limit=100))


# -- failed starts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--executor", "nosuch"], "--executor: unknown executor 'nosuch'"),
    (["--executor", "ray", "--ray-address", "ray://127.0.0.1:{port}"], "--ray-address: cannot reach"),
    (["--executor", "ray", "--ray-address", "127.0.0.1:{port}"], "--ray-address: cannot reach"),
], ids=["executor", "ray-client-address", "gcs-address"])
def test_a_failed_start_is_one_line_and_leaves_no_search(args: list[str], message: str, tmp_path: Path) -> None:
    db = tmp_path / "search.db"
    config = tmp_path / "search.json"
    config.write_text(json.dumps(tiny_config()))
    port = str(closed_port())
    result = cli("run", "--config", str(config), "--db", str(db), *[a.replace("{port}", port) for a in args],
                 timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode in (1, 2), out
    assert "Traceback" not in out
    assert message in " ".join(result.stderr.split())
    assert _searches(db) == 0, "a failed start left a search behind (serve would start it)"


@pytest.mark.parametrize("command", [["run", "--preset", "quick"], ["status", "1"], ["front", "1"],
                                     ["export-winners", "1"], ["rerank", "1", "--top", "1"]])
def test_an_unreachable_postgresql_is_one_line(command: list[str], tmp_path: Path) -> None:
    url = f"postgresql+psycopg://user:s3cret@127.0.0.1:{closed_port()}/evonorm"
    result = cli(*command, "--db", url, cwd=tmp_path, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "Traceback" not in out
    text = " ".join(result.stderr.split())
    assert "--db: cannot open the database at" in text and "unreachable" in text
    assert "s3cret" not in out, "the password is not printed"


# -- a tiny search, run as a user would ------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    db: Path
    stdout: str
    stderr: str
    tmp: Path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("usability")
    config = tmp / "search.json"
    config.write_text(json.dumps(tiny_config()))
    db = tmp / "search.db"
    result = cli("run", "--config", str(config), "--executor", "inprocess", "--db", str(db),
                 "--export-dir", str(tmp / "winners"), columns=80)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    yield Run(db, result.stdout, result.stderr, tmp)


def test_the_progress_fits_80_columns_and_keeps_count_time_and_best(tiny_run: Run) -> None:
    bars = [line for line in tiny_run.stdout.splitlines() if line.startswith("search ") and "/8" in line]
    assert bars, tiny_run.stdout
    last = bars[-1]
    assert len(last) <= 80, last
    assert "8/8" in last and "0:00:" in last and "best 0." in last, last


def test_each_rejection_is_printed_as_it_comes(tiny_run: Run) -> None:
    with Store(tiny_run.db) as store:
        rows = store.candidates_by_status(1, [CandidateStatus.REJECTED])
    rejected = [c for c in rows if c.reused_from is None]
    assert rejected, "the seed-5 search rejects some candidates (a stability and a numeric rejection)"
    for c in rejected:
        said = f"#{c.id} rejected at {c.rejection_stage}"
        line = next((x for x in tiny_run.stdout.splitlines() if said in x), None)
        assert line is not None, (c.id, c.rejection_stage, tiny_run.stdout)
        assert len(line) <= 80, line


def test_the_front_shows_each_layer_once_with_its_whole_origin(tiny_run: Run) -> None:
    from evonorm_search.cli import origin_text

    result = cli("front", "1", "--db", str(tiny_run.db), columns=400)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    ids = [row.split("│")[1].strip() for row in rows]
    assert ids.count("1") == 1, "BN-ReLU, seed and front member, is one row"
    with Store(tiny_run.db) as store:
        by_id = {c.id: c for c in store.candidates_by_status(1, [CandidateStatus.EVALUATED])}
    for row, cid in zip(rows, ids, strict=True):
        if cid.isdigit() and int(cid) in by_id:
            origin = origin_text(int(cid), by_id)
            assert origin in row, (origin, row)   # whole, not cut at 40 characters
    assert any("zoo seed bn_relu" in row for row in rows)


def test_a_baseline_that_is_not_a_seed_says_so_not_random_graph() -> None:
    from types import SimpleNamespace

    from evonorm_search.cli import origin_text

    base = SimpleNamespace(mutation="baseline:bn_relu", parent_ids=())
    drawn = SimpleNamespace(mutation=None, parent_ids=())
    assert origin_text(1, {1: base, 2: drawn}) == "zoo bn_relu, the search's baseline (never bred from)"
    assert origin_text(2, {1: base, 2: drawn}) == "random graph"


# -- winners in every layout -----------------------------------------------------------------------


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_winners_per_layout_and_a_wrong_input_is_named(tiny_run: Run) -> None:
    out = tiny_run.tmp / "by-layout"
    default = cli("export-winners", "1", "--db", str(tiny_run.db), "-o", str(out / "default"))
    assert default.returncode == 0, default.stderr
    images = sorted((out / "default").glob("*.py"))
    assert images and not any(p.stem.endswith("_tokens") for p in images), "the search trained on images only"
    tokens = cli("export-winners", "1", "--db", str(tiny_run.db), "-o", str(out / "tokens"),
                 "--layout", "tokens")
    assert tokens.returncode == 0, tokens.stderr
    token_files = sorted((out / "tokens").glob("*_tokens.py"))
    assert [p.stem.removesuffix("_tokens") for p in token_files] == [p.stem for p in images]
    for path in token_files:
        module = _load(path)
        cls = next(v for v in vars(module).values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
                   and v.__module__ == module.__name__)
        layer = cls(16)
        assert layer(torch.randn(2, 5, 16)).shape == (2, 5, 16)
        said = r"expects \(B, T, C\) tokens with C = num_features = 16, got shape \[2, 16, 4, 4\]"
        with pytest.raises(ValueError, match=said):
            layer(torch.randn(2, 16, 4, 4))
    bad = cli("export-winners", "1", "--db", str(tiny_run.db), "--layout", "nhwc")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_a_search_on_images_and_text_exports_both_layouts() -> None:
    from evonorm_search.config import load_config
    from evonorm_search.summary import search_layouts, winner_filename

    assert search_layouts(load_config("quick")) == ["nchw", "tokens"]
    assert search_layouts(load_config(None, tiny_config())) == ["nchw"]
    names = [winner_filename("bn_relu", lay) for lay in ("nchw", "tokens")]
    assert names == ["bn_relu.py", "bn_relu_tokens.py"]
