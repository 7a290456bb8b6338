"""The layering contract (pyproject's [tool.importlinter]) holds, and it would catch an upward import.

`make lint` runs `lint-imports` on the tree; this test runs it too, then plants violations in a copy
of the packages and checks that each one breaks the contract that names it, so a contract that
silently checks nothing (a renamed package, a typo in a layer) fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "evonorm_search", "workers", "db", "primitives")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # The copy under `root` comes first on the path, ahead of the installed (editable) packages.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def copy_tree(dst: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(REPO / "pyproject.toml", dst / "pyproject.toml")
    return dst


def test_the_tree_keeps_the_layering() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "planted", "broken"), [
    # the CLI reaching up into the API (what `serve` did before it moved to api/cli.py)
    ("evonorm_search/cli.py", "def _up() -> None:\n    from api.app import create_app\n",
     "Dependencies point down"),
    ("primitives/formula.py", "import evonorm_search.domain\n", "Dependencies point down"),
    ("api/views.py", "from workers.backbones import BACKBONES\n", "The API reaches workers only"),
    ("workers/train.py", "import sqlalchemy\n", "Only db imports SQLAlchemy"),
])
def test_a_planted_violation_breaks_its_contract(tmp_path: Path, module: str, planted: str,
                                                 broken: str) -> None:
    root = copy_tree(tmp_path)
    assert lint_imports(root).returncode == 0   # the copy itself is clean
    with (root / module).open("a") as f:
        f.write("\n\n" + planted)
    result = lint_imports(root)
    assert result.returncode != 0, result.stdout
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout, result.stdout
    assert "1 broken" in result.stdout, result.stdout
