"""``make gpu-check`` itself: its pipeline runs end to end (shrunk, on the CPU), it refuses a
machine without CUDA in one line, and training needs no wandb when ``wandb.mode=disabled``."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = [sys.executable, str(ROOT / "scripts" / "gpu_check.py")]


def test_gpu_check_pipeline_runs_on_a_cpu(tmp_path):
    out = tmp_path / "check"
    args = ["--device", "cpu", "--quick", "--skip", "tests", "bench", "--out", str(out)]
    proc = run_cli(*args, cwd=tmp_path, module="", launcher=SCRIPT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    summary = proc.stdout.split("gpu-check summary")[1]
    assert "smoke  ok" in summary and "demo   ok" in summary and "bench  skipped" in summary
    smoke = sorted(p.parent.name for p in (out / "smoke" / "runs").glob("*/*/seed=0"))
    assert "digits-preact_resnet18-gn" in smoke and "cifar10-wrn-equi" in smoke
    assert any((out / "demo" / "figures").iterdir()) and any((out / "demo" / "tables").iterdir())


def test_gpu_check_without_cuda_says_so_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        return  # a CUDA machine: nothing to refuse
    proc = run_cli("--out", str(tmp_path), cwd=tmp_path, module="", launcher=SCRIPT)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout
    assert lines[0].startswith("gpu-check: no CUDA device visible to torch")


def test_training_runs_without_wandb_installed_when_disabled(tmp_path):
    """A GPU image without wandb: ``import wandb`` fails, a disabled-wandb run still completes."""
    blocker = tmp_path / "no_wandb"
    blocker.mkdir()
    (blocker / "wandb.py").write_text("raise ImportError('wandb is not installed here')\n")
    proc = run_cli(
        "experiment=digits_demo",
        "debug=smoke",
        "wandb.mode=disabled",
        f"results_dir={tmp_path / 'results'}",
        cwd=tmp_path,
        env={"PYTHONPATH": str(blocker)},
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
