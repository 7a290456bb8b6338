"""benchmarks/gpu_check: skips cleanly without a GPU; its steps run (tiny, on the CPU) and write their JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: the check would run for real")
def test_without_a_gpu_it_says_so_exits_0_and_writes_nothing(tmp_path: Path) -> None:
    assert os.access(SCRIPT, os.X_OK), "benchmarks/gpu_check must be executable"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run([str(SCRIPT), "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "GPU check skipped: no CUDA device" in done.stdout
    assert not (tmp_path / "out").exists()


def test_the_steps_run_on_the_cpu_and_write_their_results(tmp_path: Path) -> None:
    from benchmarks.gpu import main

    assert main(["--device", "cpu", "--quick", "--only", "layer_speed", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["steps"]["layer_speed"]["status"] == "ok" and summary["meta"]["device"] == "cpu"
    speed = json.loads((tmp_path / "gpu_layer_speed.json").read_text())
    rows = speed["layers"]["evonorm_s0"]
    for precision in ("float32", "bf16_autocast_channels_last"):
        baseline = rows[precision]["handwritten EvoNorm-S0 (eager)"]
        generated = rows[precision]["generated (eager)"]
        assert baseline["paired_ratio"] == 1.0 and generated["median_ms"] > 0
