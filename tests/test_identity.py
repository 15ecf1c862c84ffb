"""A run's identity is what it computes (issue 27): any key of any group can be swept, two
commands that compute the same thing are one run, a key nothing reads is refused, and a finished
run is never taken over by a command that computes something else."""

from __future__ import annotations

import json
import re

import pytest

from equinorm.errors import ConfigError
from equinorm.experiment import identity
from equinorm.train.run import run
from tests.conftest import SHORT, compose_cfg, read_history, run_cli, run_dir_of


def _variant(*overrides: str) -> str:
    cfg = compose_cfg("experiment=digits_demo", "norm=equi", *overrides)
    parts = run_dir_of(cfg).relative_to(f"{cfg.results_dir}/runs/digits_demo").parts
    assert parts[-1] == "seed=0"
    return "/".join(parts[1:-1])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ((), ""),
        (("schedule.lr=0.1",), ""),  # the experiment's own value: that very run
        (("schedule.lr=0.05",), "schedule.lr=0.05"),
        (("schedule.lr=5e-2",), "schedule.lr=0.05"),  # one canonical spelling
        (("schedule.lr=.05", "optim.weight_decay=0"), "optim.weight_decay=0.0,schedule.lr=0.05"),
        (("schedule.milestones=[10,13]",), ""),
        (("schedule.milestones=[5,13]",), "schedule.milestones=[5,13]"),
        (("mixup=manifold",), "mixup=manifold"),
        (("mixup=none",), ""),
        (("epochs=20",), "epochs=20"),  # another length: another run, never a takeover
        (("debug=smoke",), "debug=smoke"),  # a smoke run never stands in for the real one
        # keys the layout names and keys that change no result
        (("seed=0", "train.device=cpu", "dataset.workers=0", "wandb.mode=online"), ""),
        (("norm.impl=reference", "train.compile=true", "train.progress=false"), ""),
        (("train.channels_last=true",), ""),  # a memory layout: the same function
        (("train.eval_batch_size=64",), ""),  # every test image is scored, in batches of any size
        (("dataset.loader=device",), ""),  # what auto picks for a dataset that fits in memory
        (("schedule.length=100",), ""),  # read only to rescale the schedule: smoke runs do
        (("debug=smoke", "schedule.length=100"), "debug=smoke,schedule.length=100"),
        (("dataset.standardize=false",), ""),  # what EquiNorm's input is anyway (paper 5.2)
        (("dataset.standardize=true",), "dataset.standardize=true"),
        (  # unless only the first batches are: then it says how many images
            ("train.max_eval_batches=2", "train.eval_batch_size=64"),
            "train.eval_batch_size=64,train.max_eval_batches=2",
        ),
    ],
)
def test_variant_names_only_what_changes_the_computation(overrides, expected):
    assert _variant(*overrides) == expected


def test_every_group_can_be_swept_and_each_value_is_a_run_of_its_own():
    sweeps = {
        "arch.width_mult": ("0.25", "0.5"),
        "norm.stat_fraction": ("0.5", "1.0"),
        "dataset.augment.crop_padding": ("1", "2"),
        "mixup.alpha": ("2.0", "6.0"),
        "schedule.gamma": ("0.1", "0.2"),
        "optim.nesterov": ("false", "true"),
        "train.batch_size": ("32", "64"),
    }
    for key, values in sweeps.items():
        extra = ["mixup=manifold"] if key.startswith("mixup.") else []
        cfgs = [compose_cfg("experiment=digits_demo", *extra, f"{key}={v}") for v in values]
        assert cfgs[0].run_dir != cfgs[1].run_dir, key
        own = compose_cfg("experiment=digits_demo", *extra)
        assert {own.run_dir} & {c.run_dir for c in cfgs}, key  # one value is the experiment's
        for cfg, value in zip(cfgs, values, strict=True):
            if cfg.run_dir != own.run_dir:
                assert cfg.variant[key] == value, key


def test_a_key_nothing_reads_is_one_line_not_a_run():
    with pytest.raises(ConfigError, match=r"train\.new_key is not a key of this config"):
        compose_cfg("experiment=digits_demo", "+train.new_key=1")
    with pytest.raises(Exception, match="alpha"):  # mixup=none has no alpha: Hydra refuses it
        compose_cfg("experiment=digits_demo", "mixup=none", "mixup.alpha=2")


def test_a_run_on_two_processes_is_not_the_one_process_run(monkeypatch):
    one = compose_cfg("experiment=digits_demo")
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun --nproc_per_node=2: a global batch of 128
    two = compose_cfg("experiment=digits_demo")
    assert two.variant == {"train.devices": "2"} and two.run_dir != one.run_dir
    both = compose_cfg("experiment=digits_demo", "train.devices=2")  # 2 devices, any processes
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert compose_cfg("experiment=digits_demo", "train.devices=2").run_dir == both.run_dir


def test_a_smaller_eval_batch_is_the_same_run_so_that_it_resumes_not_restarts(tmp_path):
    """The advice of an evaluation out of memory (a smaller train.eval_batch_size) started another
    run in a directory of its own, the stopped one left unfinished."""
    args = [*SHORT, "epochs=2", "schedule.milestones=[1]"]
    first = compose_cfg(*args, results=tmp_path)
    assert run(first)["status"] == "complete"
    before = {p.name: p.read_bytes() for p in run_dir_of(first).iterdir() if p.is_file()}
    smaller = compose_cfg(*args, "train.eval_batch_size=4", results=tmp_path)
    assert run_dir_of(smaller) == run_dir_of(first)
    assert run(smaller)["status"] == "complete"  # found complete: nothing trained again
    after = {p.name: p.read_bytes() for p in run_dir_of(first).iterdir() if p.is_file()}
    assert after == before


def test_a_number_for_a_name_is_its_folder(tmp_path):
    """name=2 (a numbered study) was a TypeError's traceback: Hydra reads it as an int."""
    cfg = compose_cfg("experiment=digits_demo", "name=2", results=tmp_path)
    assert cfg.name == "2" and run_dir_of(cfg).parent.parent == tmp_path / "runs" / "2"


def test_a_long_variant_keeps_a_readable_prefix_and_a_hash():
    long = {f"key{i}.value": "x" * 20 for i in range(10)}
    name = identity.dirname(long)
    assert len(name) <= identity.MAX_LEN and name.startswith("key0.value=")
    assert name != identity.dirname({**long, "key9.value": "y"})
    assert "/" not in identity.dirname({"dataset.name": "a/b"})


def test_more_epochs_on_a_finished_run_is_another_run_and_leaves_it_untouched(tmp_path):
    short = compose_cfg(*SHORT, "epochs=2", "schedule.milestones=[1]", results=tmp_path)
    assert run(short)["status"] == "complete"
    before = {p.name: p.read_bytes() for p in run_dir_of(short).iterdir() if p.is_file()}
    longer = compose_cfg(*SHORT, "epochs=3", "schedule.milestones=[1]", results=tmp_path)
    assert run_dir_of(longer) != run_dir_of(short)
    assert run(longer)["epoch"] == 3
    after = {p.name: p.read_bytes() for p in run_dir_of(short).iterdir() if p.is_file()}
    assert after == before  # model.pt, summary.json, history: as they were


def test_a_reruns_batches_are_cut_from_the_jobs_left_to_launch(tmp_path):
    """hydra.sweeper.max_batch_size (submitit_local's default: what the CPUs hold) cut the batches
    before the finished jobs were skipped: seeds 1 and 3 of a rerun ran one at a time."""
    args = ["-m", "experiment=digits_demo", "debug=smoke", "norm=bn", f"results_dir={tmp_path}"]
    first = run_cli(*args, "seed=0,2", cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:]
    again = run_cli(*args, "seed=0,1,2,3", "hydra.sweeper.max_batch_size=2", cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "sweep of 4 job(s): 2 complete, 2 skipped" in again.stdout
    launches = re.findall(r"Launching (\d+) jobs locally", again.stdout)
    assert launches == ["2"], again.stdout[-3000:]  # one batch of the two left, not two of one


def test_a_sweep_over_an_arch_key_runs_each_value_and_leaves_the_experiments_slot(tmp_path):
    """The issue's command: two widths, two runs -- not two failures and a corrupted slot."""
    args = ["experiment=digits_demo", "debug=smoke", "norm=bn", "seed=0", f"results_dir={tmp_path}"]
    sweep = ["-m", *args, "arch.width_mult=0.25,.25,0.5"]  # .25: 0.25's run, not launched
    first = run_cli(*sweep, cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:]
    assert "sweep of 3 job(s): 2 complete, 1 skipped" in first.stdout
    assert "1 job(s) the run of an earlier job (the same config): not launched" in first.stdout
    cell = tmp_path / "runs/digits_demo/digits-preact_resnet18-bn"
    widths = {json.loads(p.read_text())["width_mult"] for p in cell.rglob("summary.json")}
    assert widths == {0.25, 0.5}
    assert not (cell / "seed=0").exists()  # the experiment's own run was never touched
    again = run_cli(*sweep, cwd=tmp_path)
    assert again.returncode == 0 and "3 skipped" in again.stdout, again.stdout
    assert "3 of 3 job(s) already finished: not launched" in again.stdout  # nothing started
    # the same run asked for singly (spelt otherwise) is that run: skipped
    single = run_cli(*args, "arch.width_mult=.25", cwd=tmp_path)
    assert single.returncode == 0 and "skipping" in single.stdout, single.stdout
    own = compose_cfg(*args[:-1], "arch.width_mult=0.5", results=tmp_path)
    assert read_history(run_dir_of(own))  # debug=smoke's own width, in its own run
