"""A user's first commands (issue 24): our own --help, a short first run without arguments, a long
sweep that says it is being checked, Ctrl-C there in one line."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import equinorm
from equinorm import experiment
from equinorm.run import provenance
from equinorm.train import app


def _main(argv, monkeypatch, hydra_main=None) -> int:
    monkeypatch.setattr(sys, "argv", ["equinorm-train", *argv])
    if hydra_main is not None:
        monkeypatch.setattr(app, "hydra_main", hydra_main)
    with pytest.raises(SystemExit) as stop:
        app.main()
        raise SystemExit(0)
    return stop.value.code


PROBE = """
import runpy, sys
sys.argv = ["equinorm.train", "--help"]
try:
    runpy.run_module("equinorm.train", run_name="__main__")
except SystemExit as stop:
    print("exit", stop.code, "torch loaded:", "torch" in sys.modules)
"""


def test_help_lists_our_experiments_and_real_options_before_torch_loads():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120
    )
    out = proc.stdout
    assert out.rstrip().endswith("exit 0 torch loaded: False"), proc.stderr[-2000:]
    blocks, group = {}, None  # each group's lines: its own and the wrapped ones under it
    for line in out.split("groups (GROUP=OPTION):")[1].split("\n\n")[0].splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            group = line.split()[0]
        blocks[group] = blocks.get(group, "") + line
    for group in ("experiment", *experiment.GROUPS, "debug", "hydra/launcher"):
        listed = {o.strip() for o in blocks[group].split(group, 1)[1].split(",")}
        assert set(experiment.options(group)) <= listed, (group, listed)
    assert "_common" not in out and "schema" not in out and "_shared" not in out
    assert "docs/runs.md" in out and "--hydra-help" in out


def test_help_names_the_configs_folder_wherever_it_is_run(tmp_path, monkeypatch):
    """It said conf/train.yaml from any folder (and from a wheel's install, where the configs
    are inside the package)."""
    from equinorm.experiment.usage import usage

    monkeypatch.chdir(experiment.CONF_DIR.parent)
    assert "<group>/<option>.yaml under conf;" in usage()
    monkeypatch.chdir(tmp_path)
    assert f"<group>/<option>.yaml under {experiment.CONF_DIR};" in " ".join(usage().split())


def test_every_launcher_the_help_names_is_one_a_sweep_takes():
    """The help listed our SLURM presets alone: submitit_local, which runs a sweep's jobs side by
    side here (docs/cluster.md), was in no list but an error's."""
    from equinorm.experiment.command import preflight
    from equinorm.experiment.usage import LAUNCHERS

    names = [name.split()[0] for name in LAUNCHERS] + experiment.options("hydra/launcher")
    assert "submitit_local" in names
    for name in names:
        argv = ["-m", "experiment=digits_demo", "debug=smoke", f"hydra/launcher={name}"]
        assert preflight(argv, lambda cfg: None) is None, name
    assert "is not one of" in preflight(["-m", "hydra/launcher=nope"], lambda cfg: None)


def test_hydra_help_after_overrides_is_hydra_s_help(tmp_path, monkeypatch, capsys):
    """``experiment=X --hydra-help``: Hydra composes its help without our config, so our keys
    failed it with a traceback ("Could not override 'experiment'"); only Hydra's keys reach it."""
    monkeypatch.chdir(tmp_path)
    argv = ["experiment=digits_demo", "norm=bn", "hydra.searchpath=[]", "--hydra-help"]
    assert _main(argv, monkeypatch, app.hydra_main) == 0
    out = capsys.readouterr().out
    assert "hydra/launcher:" in out and "Use '--cfg hydra' to Show the Hydra config." in out


def test_no_arguments_runs_the_demo_s_single_run(monkeypatch, capsys):
    seen = []
    assert _main([], monkeypatch, lambda: seen.append(list(sys.argv[1:]))) == 0
    assert seen == [["experiment=digits_demo"]]
    assert "experiment=digits_demo's run" in capsys.readouterr().err
    assert _main(["norm=bn"], monkeypatch, lambda: None) == 0  # the next try: not the demo's
    assert "no experiment=: the base config" in capsys.readouterr().err
    assert _main(["experiment=digits_demo", "norm=bn"], monkeypatch, lambda: None) == 0
    assert "no experiment=" not in capsys.readouterr().err


def test_a_long_sweep_says_it_is_being_checked_and_ctrl_c_there_is_one_line(
    monkeypatch, capsys, tmp_path
):
    argv = ["-m", "experiment=digits_demo", "seed=range(7)", f"results_dir={tmp_path}"]
    checked = []

    def compose(job, hydra=False):
        checked.append(job)
        if len(checked) == 3:
            raise KeyboardInterrupt
        return real(job, hydra=hydra)

    real = experiment.compose
    monkeypatch.setattr(experiment, "compose", compose)
    assert _main(argv, monkeypatch, lambda: pytest.fail("launched")) == 130
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "equinorm: checking 21 jobs before launching any",
        "equinorm: interrupted while checking the jobs; nothing was launched or written",
    ]
    assert not any(tmp_path.iterdir())


def test_ctrl_c_before_a_job_has_located_its_run_names_no_run(monkeypatch, capsys):
    """A sweep's Ctrl-C as its next job began: 'None keeps its last checkpoint, if any'."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from equinorm.train import app

    def locate(cfg, choices):
        raise KeyboardInterrupt

    monkeypatch.setattr(app.experiment, "locate", locate)
    runtime = SimpleNamespace(runtime=SimpleNamespace(choices={}), overrides=SimpleNamespace())
    with pytest.raises(SystemExit) as stop:
        app._job(OmegaConf.create({"run_dir": None}), runtime)
    assert stop.value.code == 130
    assert capsys.readouterr().err.splitlines() == [
        "equinorm: interrupted (Ctrl-C); this job had not begun its run: run the same command "
        "again to resume"
    ]


def test_jobs_that_differ_only_in_seed_are_checked_as_if_each_were_composed():
    from omegaconf import OmegaConf

    from equinorm.experiment.command import composed

    def plain(cfg):
        return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))

    jobs = experiment.jobs(
        ["experiment=digits_demo", "norm=bn,gn", "schedule.lr=0.05,0.1", "seed=0,3"]
    )
    assert len(jobs) == 8
    seen = [(job, plain(cfg)) for job, cfg in composed(jobs)]
    assert [job for job, _ in seen] == jobs
    for job, cfg in seen:
        assert cfg == plain(experiment.compose(job, hydra=True)), job
    assert len({cfg["run_dir"] for _, cfg in seen}) == 8


def test_hydras_glob_and_range_sweeps_are_checked_and_expanded(monkeypatch, tmp_path, capsys):
    """`-m norm='glob(equi*)' 'seed=range(0,2)'`, Hydra's own sweep syntax: the check before
    launching said "equinorm: error: ConfigLoader is not set" and launched nothing."""
    argv = ["experiment=digits_demo", "norm=glob(equi*)", "seed=range(0,2)"]
    norms = ("equi", "equi_quarter")
    assert experiment.jobs(argv) == [
        [f"norm={n}", f"seed={s}", argv[0]] for n in norms for s in (0, 1)
    ]
    monkeypatch.chdir(tmp_path)
    assert _main(["-m", *argv], monkeypatch, lambda: None) == 0, capsys.readouterr().err


def _documented_commands() -> list[str]:
    """Every ``python -m equinorm.train`` line of the README's and docs/' bash blocks, but those
    with a placeholder (``/path/to``, ``$n``) or a SLURM launcher (tests/test_slurm.py runs those
    on a cluster)."""
    root = Path(__file__).resolve().parents[1]
    found = []
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                skip = ("/path/to", "$", "submitit_slurm")
                if line.startswith("python -m equinorm.train") and not any(s in line for s in skip):
                    found.append(line)
    return list(dict.fromkeys(found))  # the README's and docs/runs.md's first lines are one


@pytest.mark.parametrize("line", _documented_commands(), ids=lambda c: c[24:] or "(none)")
def test_every_documented_command_line_passes_its_checks(line, monkeypatch, tmp_path):
    """The README's `experiment=cifar10_wrn_short schedule.lr=0.2,0.1,0.05` sweep was refused
    ("schedule.lr is not a key of this config's schedule"): each line a user copies is checked as
    the trainer checks it, up to launching."""
    monkeypatch.chdir(tmp_path)
    assert _main(shlex.split(line)[3:], monkeypatch, lambda: None) == 0
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "equinorm.report"],
        ["-m", "equinorm.launch.tune"],
        ["-m", "equinorm.train.evaluate"],
        ["scripts/reproduce.py"],
        ["scripts/gpu_check.py"],
        ["scripts/bench.py"],
    ],
    ids=lambda c: c[-1],
)
def test_the_other_commands_help_like_the_trainer(command):
    # python -m equinorm.report said "cannot be directly executed"; descriptions stopped mid-line
    proc = subprocess.run(
        [sys.executable, *command, "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: ") and "__main__" not in proc.stdout
    description = proc.stdout.split("\n\n")[1]
    assert description.rstrip().endswith("."), description


def test_version_names_this_code_and_its_commit():
    proc = subprocess.run(
        [sys.executable, "-m", "equinorm.train", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = proc.stdout.strip()  # Hydra's --version printed "Hydra 1.3.8" alone
    assert line.startswith(f"equinorm {equinorm.__version__} (commit "), line
    commit = provenance.code()["commit"]  # (dirty or not: other tests may be writing files)
    assert f"(commit {commit[:7] if commit else 'unknown'}" in line and "torch " in line


def test_the_readme_layer_example_runs_and_its_transform_is_the_layers():
    """The README's python block, as a user pastes it (it named two undefined variables): the
    transform alone gives the kernel the layer convolves with."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", readme, re.S)
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    conv, x = ns["conv"], ns["x"]
    assert ns["y"].shape == (8, 128, 32, 32)
    assert torch.allclose(ns["w2"], conv.normalized_weight(x), rtol=1e-5, atol=1e-6)


def test_the_epoch_line_s_time_left_rounds_up_and_reads_in_hours_past_one():
    from equinorm.train.trainer import eta

    assert eta(0.6) == "  eta 0m01s"  # one epoch of 0.6 s left is not "0m00s"
    assert eta(61) == "  eta 1m01s"
    assert eta(2.5 * 3600) == "  eta 2h30m"  # a 300-epoch run, not "150m00s"
    assert eta(0) == ""
