"""A sweep over any key: run identity from the overrides, and a longer schedule continuing a run."""

from __future__ import annotations

import pytest

from equinorm.train import identity
from equinorm.train.run import PartialRunError, run
from equinorm.train.rundir import RunDir
from equinorm.train.schedules import Schedule
from tests.conftest import SHORT, compose_cfg, read_history, run_cli, run_dir_of


def _variant(*overrides: str) -> str:
    cfg = compose_cfg("experiment=digits_demo", "norm=equi", *overrides, return_hydra=True)
    parts = run_dir_of(cfg).relative_to(f"{cfg.results_dir}/runs/digits_demo").parts
    assert parts[0] == "digits-preact_resnet18-equi" and parts[-1] == "seed=0"
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
        # keys the layout names, keys that change no result, and epochs (a longer schedule)
        (("seed=0", "epochs=20", "train.device=cpu", "dataset.workers=0", "wandb.mode=online"), ""),
        (("debug=smoke",), ""),
    ],
)
def test_variant_names_only_what_changes_the_experiment(overrides, expected):
    assert _variant(*overrides) == expected


def test_variant_of_a_group_choice_compares_its_keys_with_that_choice():
    assert _variant("mixup=manifold", "mixup.alpha=2.0") == "mixup=manifold,mixup.alpha=2.0"
    cfg = compose_cfg("experiment=digits_demo", "mixup=manifold", return_hydra=True)
    own = cfg.mixup.alpha
    assert _variant("mixup=manifold", f"mixup.alpha={own}") == "mixup=manifold"


def test_a_long_variant_keeps_a_readable_prefix_and_a_hash():
    long = tuple(f"key{i}.value={'x' * 20}" for i in range(10))
    name = identity.dirname(long)
    assert len(name) <= identity.MAX_LEN and name.startswith("key0.value=")
    assert name != identity.dirname((*long[:-1], "key9.value=y"))
    assert "/" not in identity.dirname(("dataset.name=a/b",))


def test_an_ordinary_sweep_over_a_key_runs_each_value_and_a_rerun_skips(tmp_path):
    args = [*SHORT, "epochs=2", "schedule.milestones=[1,2]", f"results_dir={tmp_path}"]
    sweep = ["-m", *args, "schedule.lr=0.1,0.05"]
    first = run_cli(*sweep, cwd=tmp_path)
    assert first.returncode == 0, first.stdout
    assert "2 complete" in first.stdout
    base = tmp_path / "runs/digits_demo/digits-preact_resnet18-equi"
    variant = "schedule.lr=0.05,schedule.milestones=[1,2]"
    own = base / "schedule.milestones=[1,2]" / "seed=2"
    other = base / variant / "seed=2"
    assert (own / "summary.json").is_file() and (other / "summary.json").is_file()
    assert {r["lr"] for r in read_history(own)} == {"0.1", "0.010000000000000002"}
    assert read_history(other)[0]["lr"] == "0.05"
    again = run_cli(*sweep, cwd=tmp_path)
    assert again.returncode == 0 and "2 skipped" in again.stdout, again.stdout
    assert "2 of 2 job(s) already finished: not launched" in again.stdout  # nothing started
    # the same run asked for singly (its own lr spelled out) is that run: skipped
    single = run_cli(*args, "schedule.lr=5e-2", cwd=tmp_path)
    assert single.returncode == 0 and "skipping" in single.stdout, single.stdout


# -- a longer schedule --------------------------------------------------------------------------


def _short(tmp_path, *extra):
    return compose_cfg(*SHORT, "schedule.milestones=[1,2]", *extra, results=tmp_path)


def test_more_epochs_continue_a_finished_step_schedule_run_exactly(tmp_path):
    run(_short(tmp_path / "a", "epochs=3"))
    cfg = _short(tmp_path / "a", "epochs=5")
    assert (run_dir_of(cfg) / "checkpoint.pt").is_file()  # kept: the step schedule can go on
    summary = run(cfg)
    assert summary["status"] == "complete" and summary["epoch"] == 5
    fresh = _short(tmp_path / "b", "epochs=5")
    run(fresh)
    assert read_history(run_dir_of(cfg)) == read_history(run_dir_of(fresh))
    assert "epochs 3 -> 5: continuing from epoch 3" in (run_dir_of(cfg) / "train.log").read_text()
    assert RunDir(run_dir_of(cfg)).stored_epochs() == 5


def test_fewer_epochs_or_a_schedule_over_all_epochs_is_one_line(tmp_path):
    run(_short(tmp_path, "epochs=3"))
    with pytest.raises(PartialRunError, match="finished 3 epochs, epochs=2 is fewer"):
        run(_short(tmp_path, "epochs=2"))
    stretched = ["schedule.rescale=true", "schedule.length=3"]
    cfg = _short(tmp_path / "r", "epochs=2", *stretched)
    run(cfg)
    assert not (run_dir_of(cfg) / "checkpoint.pt").exists()  # nothing can continue it
    longer = _short(tmp_path / "r", "epochs=3", *stretched)
    assert run_dir_of(longer) != run_dir_of(cfg)  # a sweep over its epochs: runs of their own
    # the same directory under another epochs (the experiment's file edited): one line
    longer.run_path = cfg.run_path
    with pytest.raises(PartialRunError, match="rescale=true stretches the schedule"):
        run(longer)


@pytest.mark.parametrize(
    ("schedule", "continues"),
    [
        ({"name": "step", "lr": 0.1, "momentum": 0.9, "gamma": 0.1, "milestones": [2]}, True),
        (
            {
                "name": "step",
                "lr": 0.1,
                "momentum": 0.9,
                "gamma": 0.1,
                "milestones": [2],
                "rescale": True,
                "length": 4,
            },
            False,
        ),
        (
            {
                "name": "superconvergence",
                "lr_points": [[0, 0.1], [2, 1.0], [3, 0.01]],
                "momentum_points": [[0, 0.95], [2, 0.85]],
                "final_momentum": 0.9,
            },
            True,
        ),
        ({"name": "cosine", "lr": 0.1, "momentum": 0.9, "min_lr": 0.0}, False),
    ],
)
def test_continues_as_means_the_same_schedule_over_the_trained_epochs(schedule, continues):
    short, long = Schedule(schedule, 4), Schedule(schedule, 6)
    same = all(short(t / 8) == long(t / 8) for t in range(4 * 8 + 1))
    assert (short.continues_as(6) is None) == continues == same


def test_epochs_names_a_run_only_where_it_changes_the_trajectory():
    assert _variant("epochs=20") == ""  # step: the run continues
    stretched = _variant("epochs=20", "schedule.rescale=true")
    assert stretched == "epochs=20,schedule.rescale=true"
