"""Issue 25 item 2: experiments kept outside the repository, through Hydra's documented
``hydra.searchpath`` or ``--config-dir``, get the suite's identity and one-line checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

MINE = """# @package _global_
defaults:
  - /experiment/digits_demo@_here_
  - _self_

name: mine
epochs: 2
schedule:
  milestones: [1]
  length: 2
train:
  max_train_batches: 2
  max_eval_batches: 1
  equilibrium_stats: false
hydra:
  sweeper:
    params:
      norm: bn
      seed: range(1)
"""


@pytest.fixture
def conf(tmp_path) -> Path:
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "mine.yaml").write_text(MINE)
    return tmp_path / "conf"


def test_a_user_experiment_on_the_search_path_sweeps_a_key_by_identity(conf, tmp_path):
    results = tmp_path / "r"
    search = f"hydra.searchpath=[file://{conf}]"
    proc = run_cli(
        "-m",
        search,
        "experiment=mine",
        "schedule.lr=0.1,0.05",
        f"results_dir={results}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    cell = results / "runs" / "mine" / "digits-preact_resnet18-bn"
    found = sorted(str(p.parent.relative_to(cell)) for p in cell.rglob("summary.json"))
    assert found == ["schedule.lr=0.05/seed=0", "seed=0"]  # 0.1 is the experiment's own run
    summary = json.loads((cell / "schedule.lr=0.05" / "seed=0" / "summary.json").read_text())
    assert summary["variant"] == {"schedule.lr": "0.05"} and summary["status"] == "complete"


@pytest.mark.parametrize("where", ["searchpath", "config-dir"])
def test_a_bad_value_in_a_user_experiment_is_one_line_and_writes_nothing(conf, tmp_path, where):
    located = (
        [f"hydra.searchpath=[file://{conf}]"]
        if where == "searchpath"
        else ["--config-dir", str(conf)]
    )
    out = tmp_path / "r"
    proc = run_cli(
        *located, "experiment=mine", "norm.stat_fraction=2", f"results_dir={out}", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stdout.strip().splitlines() == [
        "equinorm: error: norm.stat_fraction must be in (0, 1], got 2.0"
    ]
    proc = run_cli(*located, "experiment=mien", f"results_dir={out}", cwd=tmp_path)
    assert proc.returncode == 2  # the valid experiments named were the suite's alone
    assert "experiment=mien is not one of cifar100_preresnet152_mixup," in proc.stdout
    assert " imagenet_resnet50, mine, svhn_wrn_mixup" in proc.stdout
    assert not out.exists()
