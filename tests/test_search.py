"""Searching sweepers (issue 25): the real hydra-optuna-sweeper through equinorm's checks, run
identity and tally -- the issue's command, a diverged trial, the ``optuna_lr`` preset scored on a
validation split, Optuna's storage without alembic's lines; and what the sweep hands a searching
sweeper (the experiment's grid left out) and checks (each value it may draw that can be listed).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from equinorm import experiment
from equinorm.report.cli import main as report_main
from equinorm.run.record import objective
from tests.conftest import SHORT, run_cli
from tests.test_resume import rows, start, wait_for

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")

ISSUE = [  # the issue's command, on the smoke setting (2 epochs of 3 batches)
    "-m",
    "experiment=digits_demo",
    "hydra/sweeper=optuna",
    "hydra.sweeper.n_trials=3",
    "hydra.sweeper.direction=maximize",
    "schedule.lr=interval(0.01,0.3)",
    "hydra.sweeper.sampler.seed=0",
    "debug=smoke",
]


def _sweep(results: Path) -> tuple[Path, list[dict]]:
    """The sweep's folder and its trials' summaries, in launch order."""
    (sweep,) = (results / "sweeps").iterdir()
    jobs = sorted((sweep / "jobs").glob("*.json"), key=lambda p: int(p.stem))
    runs = [Path(json.loads(p.read_text())["run_dir"]) for p in jobs]
    return sweep, [json.loads((run / "summary.json").read_text()) for run in runs]


def test_the_issues_optuna_command_runs_its_trials_on_the_experiments_run(tmp_path):
    results = tmp_path / "r"
    proc = run_cli(*ISSUE, f"results_dir={results}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    sweep, trials = _sweep(results)
    assert len(trials) == 3
    for summary in trials:  # the experiment's norms x seeds are not searched: its single run
        assert (summary["norm"], summary["seed"], summary["status"]) == ("equi", 0, "complete")
        assert set(summary["variant"]) == {"debug", "schedule.lr"}
        assert 0.01 <= float(summary["variant"]["schedule.lr"]) <= 0.3
    tally = (sweep / "tally.txt").read_text()
    assert tally.startswith("sweep of 3 job(s): 3 complete"), tally
    assert "sweep of 3 job(s)" in proc.stdout
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(s["test_acc"] for s in trials)  # no split: test accuracy
    assert "scored on the test set" in proc.stdout  # and it said so, in one line


def test_a_diverged_trial_is_a_failed_trial_and_the_study_goes_on(tmp_path):
    results = tmp_path / "r"
    proc = run_cli(
        "-m",
        "experiment=digits_demo",
        "hydra/sweeper=optuna",
        "hydra.sweeper.direction=maximize",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.sampler.seed=1",  # draws both values
        "norm=none",  # no normalization: lr 1e6 overflows in the first steps
        "schedule.lr=choice(1e6,0.1)",
        "debug=smoke",
        "train.fail_on_divergence=false",
        f"results_dir={results}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    sweep, trials = _sweep(results)
    statuses = [s["status"] for s in trials]
    assert len(statuses) == 4 and set(statuses) == {"complete", "diverged"}
    # each trial tallied, none failed; a value drawn again is its finished run, skipped
    assert len({s["variant"].get("schedule.lr") for s in trials}) == 2  # 0.1: the own value
    assert "sweep of 4 job(s): 1 complete, 1 diverged, 2 skipped" in proc.stdout
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"schedule.lr": 0.1}
    assert "Traceback" not in proc.stdout


def test_a_trial_killed_under_submitit_is_a_failed_trial_and_the_search_goes_on(tmp_path):
    """SIGKILL (the out-of-memory killer) to a trial's process ended the whole search with
    submitit's UncompletedJobError traceback; now it is one failed trial in the tally."""
    args = ["-m", "hydra/launcher=submitit_local", "hparams_search=optuna_lr", *SHORT, "norm=bn"]
    args += ["dataset.val_size=300", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1"]
    args += ["epochs=40", "schedule.milestones=[20,30]", "train.max_train_batches=5"]
    args += ["train.max_eval_batches=1"]
    proc = start([*args, f"results_dir={tmp_path}"], tmp_path)
    histories = lambda: [p.parent for p in (tmp_path / "runs").rglob("history.csv")]  # noqa: E731
    assert wait_for(lambda: any(rows(d) >= 1 for d in histories()), proc), proc.communicate()[0]
    (killed,) = histories()  # one trial at a time: the first
    job = subprocess.run(["pgrep", "-f", f"submitit.core._submit {tmp_path}"], capture_output=True)
    (pid,) = job.stdout.split()
    os.kill(int(pid), signal.SIGKILL)
    out = proc.communicate()[0]
    assert proc.returncode == 1 and "Traceback" not in out, out[-3000:]
    assert "sweep of 2 job(s): 1 complete, 1 failed" in out, out[-3000:]
    error = json.loads((killed / "error.json").read_text())  # the lost trial's own run
    assert error["error"].startswith("its process ended without a result")


def test_the_optuna_lr_preset_searches_one_norm_on_the_validation_split(tmp_path):
    results = tmp_path / "r"
    proc = run_cli(
        "-m",
        "experiment=digits_demo",
        "hparams_search=optuna_lr",
        "norm=bn",
        "dataset.val_size=300",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'study.db'}",  # alembic sets it up
        "debug=smoke",
        f"results_dir={results}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    sweep, trials = _sweep(results)
    assert [(s["norm"], s["seed"]) for s in trials] == [("bn", 0), ("bn", 0)]
    assert all(s["variant"]["dataset.val_size"] == "300" for s in trials)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(s["val_acc"] for s in trials)  # held out, not test
    assert (tmp_path / "study.db").is_file()
    assert "alembic" not in proc.stdout and "scored on the test set" not in proc.stdout
    assert report_main(["--results", str(results)]) == 0
    stem = "digits_demo_hparam_schedule.lr_dataset.val_size=300_debug=smoke"
    rows = (results / "tables" / f"{stem}.md").read_text().count("| digits / preact_resnet18 |")
    assert rows == len({s["variant"]["schedule.lr"] for s in trials})


def test_a_stored_study_run_again_adds_new_trials_not_copies(tmp_path):
    """Rerunning a study kept in a storage (what docs/tuning.md says adds trials) drew the first
    run's values again with the preset's seeded sampler: every trial a skipped run, and the study
    holding each value twice."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["-m", "experiment=digits_demo", "hparams_search=optuna_lr", "norm=bn", "debug=smoke"]
    args += ["dataset.val_size=300", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}"]
    args += ["hydra.sweeper.study_name=bn_lr", f"results_dir={tmp_path / 'r'}"]
    first = run_cli(*args, cwd=tmp_path)
    again = run_cli(*args, cwd=tmp_path)
    assert first.returncode == again.returncode == 0, again.stdout[-3000:]
    assert "sweep of 2 job(s): 2 complete" in again.stdout, again.stdout[-3000:]
    assert "holds 2 trial(s)" in again.stdout
    trials = optuna.load_study(study_name="bn_lr", storage=storage).trials
    assert len({t.params["schedule.lr"] for t in trials}) == len(trials) == 4
    unnamed = run_cli(*args[:-2], "hydra.sweeper.n_trials=1", args[-1], cwd=tmp_path)
    assert "without hydra.sweeper.study_name keeps this search as a new study" in unnamed.stdout


def test_a_stored_studys_trial_a_stopped_search_left_running_is_asked_again_first(tmp_path):
    """Ctrl-C during a stored study's trial left it running in the study for good, and the
    rerun's new draws never came back to it: its run's checkpoint was never resumed."""
    import optuna
    from omegaconf import OmegaConf

    from equinorm.launch.search import continued

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="bn_lr", storage=storage, direction="maximize")
    study.tell(study.ask({"schedule.lr": optuna.distributions.LogUniformDistribution(0.01, 1)}), 90)
    stopped = study.ask()
    lr = stopped.suggest_float("schedule.lr", 0.01, 1.0, log=True)
    sweeper = OmegaConf.create(
        {"storage": storage, "study_name": "bn_lr", "sampler": {"seed": 0}, "n_trials": 2}
    )
    continued(sweeper)
    states = lambda: [t.state.name for t in study.trials]  # noqa: E731
    assert states() == ["COMPLETE", "RUNNING", "WAITING"]  # the stopped one, queued again
    again = study.ask()  # as the sweeper asks: the stopped trial's value first
    assert again.suggest_float("schedule.lr", 0.01, 1.0, log=True) == lr
    assert sweeper.sampler.seed == 2  # then new draws
    study.tell(again, 91)
    continued(sweeper)  # a third run: the stopped trial was asked again once already
    assert states() == ["COMPLETE", "RUNNING", "COMPLETE"]


def test_a_searching_sweeper_gets_its_params_without_the_experiments_grid():
    grid = ["experiment=digits_demo"]
    assert len(experiment.jobs(grid)) == 15  # equinorm's sweeper: 3 norms x 5 seeds
    cfg = experiment.compose([*grid, "hydra/sweeper=optuna"], hydra=True)
    assert not experiment.enumerates(cfg.hydra.sweeper)
    assert experiment.sweep_params(cfg) == {}
    preset = [*grid, "hparams_search=optuna_lr", "hydra.sweeper.params.seed='range(2)'"]
    changed = experiment.compose(preset, hydra=True)
    assert experiment.sweep_params(changed) == {
        "schedule.lr": "tag(log, interval(0.01, 1.0))",
        "seed": "range(2)",  # an entry the command line set stays
    }


def test_a_search_is_checked_at_each_value_it_may_draw_that_can_be_listed():
    jobs = experiment.jobs(
        [
            "experiment=digits_demo",
            "hydra/sweeper=optuna",
            "schedule.lr=interval(0.01,0.3)",
            "norm=choice(equi,bn,gn)",
        ]
    )
    fixed = ["experiment=digits_demo", "hydra/sweeper=optuna"]
    assert jobs == [
        [*fixed, "schedule.lr=0.01", "norm=equi"],
        [*fixed, "schedule.lr=0.3", "norm=equi"],
        [*fixed, "schedule.lr=0.01", "norm=bn"],
        [*fixed, "schedule.lr=0.01", "norm=gn"],
    ]


@pytest.mark.parametrize(
    ("summary", "value"),
    [
        ({"status": "complete", "test_acc": 91.5}, 91.5),
        ({"status": "complete", "test_acc": 91.5, "val_acc": 88.0}, 88.0),  # held out first
        ({"status": "diverged", "test_acc": 10.0}, None),
        ({"status": "complete", "test_acc": math.nan}, None),
        ({"status": "running", "test_acc": 50.0}, None),
        (None, None),
    ],
)
def test_a_job_returns_its_validation_accuracy_else_test_else_none(summary, value):
    assert objective(summary) == value
