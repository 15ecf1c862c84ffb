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


@pytest.mark.parametrize("sweep", [False, True])
def test_a_user_experiment_that_inherits_ours_name_is_one_line_not_pooled_with_ours(
    conf, tmp_path, sweep
):
    """Extending digits_demo without a name of its own, its runs went to runs/digits_demo/,
    each named against the user's experiment: its schedule.lr=0.05 run took digits_demo's own
    cell, and the report pooled its seeds with digits_demo's lr 0.1 ones."""
    (conf / "experiment" / "mine.yaml").write_text(MINE.replace("name: mine\n", ""))
    out = tmp_path / "r"
    flags = ["-m"] if sweep else []
    args = ["--config-dir", str(conf), "experiment=mine", f"results_dir={out}"]
    proc = run_cli(*flags, *args, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout.count("\n") == 1, proc.stdout[-3000:]
    assert proc.stdout.startswith(
        "equinorm: error: experiment=mine is named digits_demo, so its runs would go among "
        "experiment=digits_demo's runs (runs/digits_demo/)"
    ), proc.stdout
    way = "('name: mine' in its file, or name=... on the command line)"
    assert proc.stdout.rstrip().endswith(way)
    assert not out.exists()


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
    from equinorm.experiment.command import preflight

    line = preflight([*located, "experiment=mien", f"results_dir={out}"], lambda cfg: None)
    assert line.startswith("experiment=mien is not one of cifar100_preresnet152_mixup,")
    assert line.endswith(" imagenet_resnet50, mine, svhn_wrn_mixup")  # it named ours alone
    assert not out.exists()


CWN = '''"""Centered weight normalization (Huang et al. 2017) with BatchNorm: a user's own norm."""
import functools

from torch import nn
from torch.nn import functional as F

from equinorm.layers import NormSpec


class CWNConv2d(nn.Conv2d):
    def forward(self, x):
        w = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
        w = w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return F.conv2d(x, w, None, self.stride, self.padding, self.dilation, self.groups)


def cwn(momentum=0.1):
    bn = functools.partial(nn.BatchNorm2d, momentum=momentum)
    return NormSpec("cwn", functools.partial(CWNConv2d, bias=False), bn, True)
'''


@pytest.fixture
def cwn(tmp_path) -> tuple[Path, list[str]]:
    """An installed package (its module and dist-info) providing the norm ``cwn`` through its
    entry point, and a config folder with its option files: (site dir, command-line start)."""
    site = tmp_path / "site"
    (site / "cwn_norm-1.0.dist-info").mkdir(parents=True)
    (site / "cwn_norm.py").write_text(CWN)
    (site / "cwn_norm-1.0.dist-info" / "METADATA").write_text("Name: cwn-norm\nVersion: 1.0\n")
    (site / "cwn_norm-1.0.dist-info" / "entry_points.txt").write_text(
        "[equinorm.norms]\ncwn = cwn_norm:cwn\n"
    )
    conf = tmp_path / "conf" / "norm"
    conf.mkdir(parents=True)
    (conf / "cwn.yaml").write_text("name: cwn\nmomentum: 0.1\n")
    (conf / "cwn_typo.yaml").write_text("name: cwn\nmoment: 0.1\n")
    (conf / "cwn_slow.yaml").write_text("name: cwn\nmomentum: 0.01\n")
    return site, ["--config-dir", str(conf.parent), "experiment=digits_demo", "debug=smoke"]


def test_a_norm_of_another_package_gets_the_one_line_checks(cwn, tmp_path, monkeypatch):
    from equinorm import experiment
    from equinorm.experiment.command import preflight
    from equinorm.layers import norms
    from equinorm.train import build

    site, common = cwn
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(norms, "NORMS", dict(norms.NORMS))  # the suite's own, afterwards

    def line(*argv: str) -> str | None:
        return preflight([*common, *argv], lambda cfg: build.check(cfg, job=True))

    assert line("norm=cwn") is None
    assert line("norm=cwn_typo") == (  # named against cwn.yaml, which has no such key
        "norm.moment is not a key of this config (nothing would read it); remove it or check "
        "its spelling"
    )
    (tmp_path / "conf" / "norm" / "cwn.yaml").write_text("name: cwn\nmoment: 0.1\n")
    experiment._reference.cache_clear()  # composed once per process; a new process reads it anew
    assert line("norm=cwn") == "norm: norm 'cwn' takes no option(s) moment; valid options: momentum"
    assert line("norm.name=cwm") == (  # a typo: the valid names include the package's
        "norm.name=cwm: unknown norm 'cwm'; valid norms: equi, bn, gn, ws_gn, wn, none, cwn"
    )


def test_a_norm_of_another_package_trains_sweeps_and_scores_through_its_entry_point(cwn, tmp_path):
    site, common = cwn
    env = {"PYTHONPATH": str(site)}
    results = tmp_path / "r"
    proc = run_cli(
        "-m",
        *common,
        "norm=cwn,bn,cwn_slow",
        "seed=0",
        f"results_dir={results}",
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0 and "sweep of 3 job(s): 3 complete" in proc.stdout, proc.stdout
    cell = results / "runs" / "digits_demo" / "digits-preact_resnet18-cwn"
    assert json.loads((cell / "debug=smoke/seed=0/summary.json").read_text())["norm"] == "cwn"
    # an option file of another name is named against the option of its norm's name (as the
    # suite's equi_quarter against equi): it collided with cwn's run
    assert (cell / "debug=smoke,norm.momentum=0.01/seed=0/summary.json").is_file()
    scored = run_cli(str(results), module="equinorm.train.evaluate", cwd=tmp_path, env=env)
    assert scored.returncode == 0 and scored.stdout.count("model.pt (epoch 2)") == 3


@pytest.mark.parametrize(
    ("typo", "says"),
    [
        ("  max_train_batches: 2", "sets train.max_train_batch, not a key of this config ("),
        ("  length: 2", "sets schedule.lenght, not a key of this config (schedule.length?)"),
        # a top-level key had no schema: 'epoch: 2' trained the experiment's 15 epochs
        ("epochs: 2", "sets epoch, not a key of this config (epochs?)"),
    ],
)
def test_a_typo_in_a_user_experiment_names_the_key_it_meant(conf, tmp_path, typo, says):
    """A misspelt key of the experiment's own schedule was told to need "another schedule than
    the experiment's"; one outside the groups was Hydra's ConfigKeyError text."""
    path = conf / "experiment" / "mine.yaml"
    wrong = typo.replace("max_train_batches", "max_train_batch").replace("length", "lenght")
    wrong = wrong.replace("epochs:", "epoch:")
    path.write_text(MINE.replace(typo, wrong))
    proc = run_cli("--config-dir", str(conf), "experiment=mine", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout.count("\n") == 1, proc.stdout[-2000:]
    assert proc.stdout.startswith(f"equinorm: error: experiment=mine {says}")


@pytest.mark.parametrize(
    ("text", "says"),
    [  # Hydra's "In 'arch/wide': ConfigKeyError raised while composing config:: Key ..."
        ("defaults:\n  - wrn\n  - _self_\nwiden_factr: 8\n", "arch=wide sets arch.widen_factr, no"),
        # no name and nothing of ours under it: "arch.name: Key 'name' is not in struct"
        ("width_mult: 0.5\n", "arch=wide sets no arch.name: an option of yours extends one of "),
    ],
    ids=["typo", "no-name"],
)
def test_a_users_group_option_is_checked_as_ours_are(tmp_path, monkeypatch, capsys, text, says):
    import sys

    from equinorm.train import app

    (tmp_path / "conf" / "arch").mkdir(parents=True)
    (tmp_path / "conf" / "arch" / "wide.yaml").write_text(text)
    argv = ["--config-dir", str(tmp_path / "conf"), "experiment=digits_demo", "arch=wide"]
    monkeypatch.setattr(sys, "argv", ["equinorm-train", *argv, f"results_dir={tmp_path / 'r'}"])
    monkeypatch.setattr(app, "hydra_main", lambda: pytest.fail("it passed the preflight"))
    with pytest.raises(SystemExit) as stop:
        app.main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"equinorm: error: {says}"), err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("text", "says"),
    [  # the package line left out (it trained the base config: 300 epochs of name "default")
        ("name: plain\nepochs: 3\n", "experiment=mine: its file lacks the first line '# @package"),
        (MINE.split("\n", 1)[1], "the experiment's file lacks the first line '# @package"),
        ("# @package _global_\nname: mine\nepochs: [1\n", "mine.yaml, line 4: not valid YAML ("),
    ],
    ids=["no-package-line", "no-package-line-extending-ours", "yaml-syntax"],
)
@pytest.mark.parametrize("sweep", [False, True])
def test_a_malformed_user_experiment_file_is_one_line_and_trains_nothing(
    conf, tmp_path, text, says, sweep
):
    (conf / "experiment" / "mine.yaml").write_text(text)
    out = tmp_path / "r"
    flags = ["-m"] if sweep else []
    args = ["--config-dir", str(conf), "experiment=mine", f"results_dir={out}"]
    proc = run_cli(*flags, *args, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout.count("\n") == 1, proc.stdout[-3000:]
    assert proc.stdout.startswith("equinorm: error: ") and says in proc.stdout
    assert not out.exists()


def test_a_key_typed_under_experiment_is_not_taken_for_a_file_without_its_package_line(tmp_path):
    proc = run_cli("experiment=digits_demo", "+experiment.foo=1", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout.count("\n") == 1, proc.stdout[-3000:]
    assert proc.stdout.startswith("equinorm: error: experiment.foo is not a key of this config")


@pytest.mark.parametrize("where", ["searchpath", "config-dir"])
def test_an_edited_copy_of_one_of_our_files_is_one_line_not_silently_ignored(conf, tmp_path, where):
    """A user's copy of conf/experiment/digits_demo.yaml with epochs: 3 trained ours for 15
    epochs without a word: Hydra reads the suite's config dir first."""
    from equinorm.experiment import CONF_DIR
    from equinorm.experiment.command import preflight

    ours = (CONF_DIR / "experiment" / "digits_demo.yaml").read_text()
    assert "\nepochs: 15\n" in ours
    (conf / "experiment" / "digits_demo.yaml").write_text(ours.replace("epochs: 15", "epochs: 3"))
    located = (
        [f"hydra.searchpath=[file://{conf}]"]
        if where == "searchpath"
        else ["--config-dir", str(conf)]
    )
    out = tmp_path / "r"
    proc = run_cli(*located, "experiment=digits_demo", f"results_dir={out}", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout.count("\n") == 1, proc.stdout[-3000:]
    assert proc.stdout.startswith(
        f"equinorm: error: {conf / 'experiment' / 'digits_demo.yaml'} is never read: the suite's "
        "own conf/experiment/digits_demo.yaml comes first"
    ), proc.stdout
    assert "(experiment=digits_demo_mine, name: digits_demo_mine)" in proc.stdout
    assert not out.exists()
    # any run from that dir is refused (the file would be ignored whenever chosen); an
    # identical copy is harmless, as is a dir of one's own files only
    assert "is never read" in preflight([*located, "experiment=mine"], lambda cfg: None)
    (conf / "experiment" / "digits_demo.yaml").write_text(ours)
    (conf / "train.yaml").write_text((CONF_DIR / "train.yaml").read_text())
    assert preflight([*located, "experiment=mine"], lambda cfg: None) is None
    (conf / "train.yaml").write_text("epochs: 3\n")
    line = preflight([*located, "experiment=mine"], lambda cfg: None)
    assert line.endswith(
        "conf/train.yaml comes first in Hydra's search path; set its keys in an "
        "experiment of yours instead"
    ), line
