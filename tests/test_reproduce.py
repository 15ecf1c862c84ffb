"""The reproduce targets: their sweeps, their cost estimates, how jobs are launched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from equinorm.launch import reproduce
from equinorm.models.complexity import forward_macs


def test_each_target_expands_to_the_experiments_sweeps():
    jobs = {e: reproduce.sweep_jobs(e) for e in reproduce.TARGETS["all"]}
    assert {e: len(j) for e, j in jobs.items()} == {
        "cifar10_wrn_overfit": 20,
        "cifar10_wrn_quarter": 20,
        "cifar10_preresnet152_mixup": 30,
        "cifar100_preresnet152_mixup": 30,
        "svhn_wrn_mixup": 30,
        "imagenet_resnet50": 9,
        "cifar10_wrn_short": 20,
    }
    own = "experiment=cifar10_wrn_short"
    assert ["norm=equi", "seed=0", own] in jobs["cifar10_wrn_short"]
    assert ["norm=gn", "seed=2", "experiment=imagenet_resnet50"] in jobs["imagenet_resnet50"]
    assert ["norm=equi_quarter", "seed=9", "experiment=cifar10_wrn_quarter"] in jobs[
        "cifar10_wrn_quarter"
    ]
    assert reproduce.sweep_jobs("cifar10_wrn_short", ["seed=0,1"]) == [
        ["norm=equi", "seed=0", own],
        ["norm=equi", "seed=1", own],
        ["norm=bn", "seed=0", own],
        ["norm=bn", "seed=1", own],
    ]
    # a fixed value replaces the experiment's axis: the jobs the command would launch (issue 24)
    assert reproduce.sweep_jobs("cifar10_wrn_short", ["seed=0", "norm=bn"]) == [
        ["norm=bn", "seed=0", own]
    ]


def test_gpu_hours_from_macs_follow_the_cost_model(tmp_path):
    (row,) = reproduce.plan("short", tflops=100.0, bench_dir=tmp_path)
    flops = 2 * forward_macs("wrn") * (3 * 50_000 + 10_000)  # train step = 3 forwards
    assert row.jobs == 20 and row.epochs == (30,) and row.basis == ("MACs",)
    assert row.gpu_hours == pytest.approx(20 * 30 * flops / 100e12 / 3600)


def test_gpu_hours_use_measured_throughput_when_benchmarked(tmp_path):
    (tmp_path / "h100.csv").write_text(
        "device_type,arch,norm,width_mult,input_size,images_per_s\n"
        "cuda,wrn,equi,1.0,32,20000\ncuda,wrn,bn,1.0,32,10000\ncpu,wrn,bn,0.25,32,50\n"
        "cuda,resnet50,bn,1.0,224,1000\n"
    )
    (row,) = reproduce.plan("short", bench_dir=tmp_path)
    per_epoch = 50_000 + 10_000 / 3
    expected = 10 * 30 * per_epoch * (1 / 20_000 + 1 / 10_000) / 3600
    assert row.basis == ("measured",) and row.gpu_hours == pytest.approx(expected)
    # a throughput measured on 224x224 crops is not that of 32x32 images, nor the reverse
    for target, args in [("short", ["arch=resnet50", "norm=bn"]), ("imagenet", ["arch=wrn"])]:
        (other,) = reproduce.plan(target, args, bench_dir=tmp_path)
        assert other.basis == ("MACs",), (target, args)


def test_the_plan_counts_the_jobs_the_command_launches_at_their_width(tmp_path, capsys):
    (full,) = reproduce.plan("short", bench_dir=tmp_path)
    (one,) = reproduce.plan("short", ["seed=0", "norm=bn"], bench_dir=tmp_path)
    assert one.jobs == 1 and one.gpu_hours == pytest.approx(full.gpu_hours / full.jobs)
    (half,) = reproduce.plan(
        "short", ["seed=0", "norm=bn", "arch.width_mult=0.5"], bench_dir=tmp_path
    )
    assert 0.2 < half.gpu_hours / one.gpu_hours < 0.35  # ~ width squared, the stem aside
    mixed_args = ["seed=0", "norm=bn", "epochs=10,30", "schedule.rescale=true"]
    (mixed,) = reproduce.plan("short", mixed_args, bench_dir=tmp_path)
    assert mixed.jobs == 2 and mixed.epochs == (10, 30)
    search = ["hydra/sweeper=optuna", "hydra.sweeper.n_trials=6"]  # Optuna: its trials
    (tuned,) = reproduce.plan(
        "short", [*search, "optim.weight_decay=interval(1e-5,1e-3)"], bench_dir=tmp_path
    )
    assert tuned.jobs == 6 and tuned.gpu_hours == pytest.approx(6 * one.gpu_hours)
    assert reproduce.main(["all", "--plan", "--", "norm=foo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "norm=foo" in err and "equi" in err


class Child:
    """What the launcher uses of a subprocess.Popen: a child that ends with ``code`` once waited
    for (``log``: where its command line is kept)."""

    def __init__(self, cmd, code=0, log=None):
        self.code, self.returncode = code, None
        if log is not None:
            log.append(cmd)

    def poll(self):
        return self.returncode

    def wait(self):
        self.returncode = self.code
        return self.code

    def kill(self):
        pass


def test_launch_runs_a_multirun_or_one_torchrun_per_job_then_the_report(monkeypatch):
    calls = []
    monkeypatch.setattr(reproduce.subprocess, "Popen", lambda cmd, **kw: Child(cmd, log=calls))
    monkeypatch.setattr(reproduce, "report", lambda args: calls.append(["report", *args]) or 0)
    assert reproduce.launch("short", ["seed=0,1"], nproc=1) == 0
    assert calls[0][-3:] == ["-m", "experiment=cifar10_wrn_short", "seed=0,1"]
    assert calls[-1] == ["report", "--results", "results", "--experiment", "cifar10_wrn_short"]
    calls.clear()
    assert reproduce.launch("short", ["seed=0,1", "debug=smoke"], nproc=2) == 0
    runs = [c for c in calls if c[0] != "report"]
    assert len(runs) == 4 and all("--nproc_per_node=2" in c for c in runs)
    assert runs[0][-4:] == ["norm=equi", "seed=0", "experiment=cifar10_wrn_short", "debug=smoke"]
    assert runs[3][-4:-2] == ["norm=bn", "seed=1"]
    # ARGS="results_dir=DIR" trained there and reported on results/: "no runs", exit 1
    for argv, where in [
        (["short", "--", "results_dir=/tmp/elsewhere", "seed=0"], "/tmp/elsewhere"),
        (["short", "--results", "/tmp/mine", "--", "results_dir=/tmp/other"], "/tmp/mine"),
    ]:
        calls.clear()
        assert reproduce.main(argv) == 0
        assert [o for o in calls[0] if o.startswith("results_dir=")][-1] == f"results_dir={where}"
        assert calls[-1][:3] == ["report", "--results", where], calls[-1]


def test_each_torchrun_shares_the_cpus_among_its_processes(monkeypatch):
    """torchrun sets OMP_NUM_THREADS=1 in each process where it is unset (its banner says so),
    and the trainer takes it as said: NPROC=2 trained on 1 thread per process whatever the
    machine had, and printed torchrun's banner for every job."""
    envs = []
    popen = lambda cmd, **kw: envs.append(kw.get("env") or {}) or Child(cmd)  # noqa: E731
    monkeypatch.setattr(reproduce.subprocess, "Popen", popen)
    monkeypatch.setattr(reproduce, "report", lambda args: 0)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    for name in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(name, raising=False)
    assert reproduce.launch("short", ["seed=0", "debug=smoke"], nproc=2) == 0
    assert [env.get("OMP_NUM_THREADS") for env in envs] == ["4", "4"]  # 8 CPUs, 2 processes
    envs.clear()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own choice is kept
    assert reproduce.launch("short", ["seed=0", "debug=smoke"], nproc=2) == 0
    assert [env.get("OMP_NUM_THREADS") for env in envs] == ["3", "3"]


def test_make_plan_honours_overrides_and_the_readme_shows_what_it_prints(capsys):
    root = Path(__file__).resolve().parents[1]
    assert reproduce.main(["short", "--plan", "--", "seed=0,1,2", "epochs=30"]) == 0
    subset = capsys.readouterr().out
    assert "| `make reproduce-short` | cifar10_wrn_short | 6 | 30 |" in subset
    row = next(line for line in subset.splitlines() if "reproduce-short" in line)
    assert row.split("|")[-2].startswith(" 20, ")  # tuning: 2 norms x 5 lrs x 2 seeds (issue 26)
    assert reproduce.main(["all", "--plan"]) == 0
    printed = capsys.readouterr().out.strip()
    readme = (root / "README.md").read_text()
    start = readme.index("| target | experiments | runs |")
    assert readme[start : readme.index("\n\n", start)] == printed, "README: paste `make plan`"


def test_on_slurm_every_experiment_is_submitted_at_once_and_nproc_is_tasks(monkeypatch, tmp_path):
    started, waited = [], []

    class Proc(Child):
        def __init__(self, cmd, **kwargs):
            super().__init__(cmd)
            started.append((cmd, kwargs))

        def wait(self):
            waited.append(len(started))
            return super().wait()

    monkeypatch.setattr(reproduce.subprocess, "Popen", Proc)
    monkeypatch.setattr(reproduce, "preflight", lambda argv, check: None)
    monkeypatch.setattr(reproduce, "report", lambda args: 0)
    slurm = ["hydra/launcher=submitit_slurm_gpu", "hydra.launcher.partition=gpu"]
    assert reproduce.launch("cifar10", slurm, nproc=2, results_dir=str(tmp_path)) == 0
    assert len(started) == 3 and waited == [3, 3, 3]  # all submitted before any wait
    for cmd, kwargs in started:
        assert "torch.distributed.run" not in cmd and cmd[3] == "-m"
        assert cmd[-2:] == ["hydra.launcher.tasks_per_node=2", "hydra.launcher.gpus_per_node=2"]
        assert not kwargs["start_new_session"]
    started.clear(), waited.clear()
    cpu = ["hydra/launcher=submitit_slurm_cpu"]
    assert reproduce.launch("short", cpu, nproc=2, results_dir=str(tmp_path), detach=True) == 0
    assert waited == [] and started[0][1]["start_new_session"]  # returns; they live on
    assert started[0][0][-1] == "hydra.launcher.tasks_per_node=2"  # no GPUs on the CPU preset


def test_a_local_search_under_torchrun_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(reproduce.subprocess, "Popen", lambda *a, **k: pytest.fail("launched"))
    search = ["hparams_search=optuna_lr", "norm=bn"]
    assert reproduce.launch("short", search, nproc=2, results_dir=str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("equinorm: error: cifar10_wrn_short is a search (a searching sweeper)")
    grid = ["hparams_search=grid", "norm=bn", "seed=0", "debug=smoke"]  # torchrun per job: fine
    monkeypatch.setattr(reproduce.subprocess, "Popen", lambda cmd, **kw: Child(cmd, code=1))
    monkeypatch.setattr(reproduce, "_report", lambda target, results_dir: 0)
    assert reproduce.launch("short", grid, nproc=2, results_dir=str(tmp_path)) == 1


def test_detach_without_slurm_is_one_line_not_a_foreground_run(monkeypatch, capsys):
    """DETACH=1 without a SLURM launcher ran every sweep in the foreground, as if not given."""
    monkeypatch.setattr(reproduce.subprocess, "Popen", lambda *a, **k: pytest.fail("launched"))
    with pytest.raises(SystemExit) as stop:
        reproduce.main(["short", "--detach", "--", "seed=0"])
    assert stop.value.code == 2
    assert "--detach (DETACH=1) returns once a SLURM launcher" in capsys.readouterr().err


def test_on_slurm_a_request_that_does_not_fit_submits_nothing(monkeypatch, tmp_path, capsys):
    fits = "hydra.launcher.mem_gb=64 exceeds"
    monkeypatch.setattr(reproduce, "preflight", lambda argv, check: fits)
    monkeypatch.setattr(reproduce.subprocess, "Popen", lambda *a, **k: pytest.fail("submitted"))
    slurm = ["hydra/launcher=submitit_slurm_cpu"]
    assert reproduce.launch("all", slurm, results_dir=str(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"equinorm: error: experiment=cifar10_wrn_overfit: {fits}"


def test_a_bad_override_launches_no_experiment_and_no_report(monkeypatch, tmp_path, capsys):
    """make reproduce-short ARGS="norm=foo" ran the trainer (refused), then the report ("no runs
    ... run make demo first"); an override that only some experiments lack ran the others."""
    monkeypatch.setattr(reproduce.subprocess, "Popen", lambda *a, **k: pytest.fail("launched"))
    monkeypatch.setattr(reproduce, "_report", lambda *a: pytest.fail("reported"))
    assert reproduce.launch("cifar10", ["arch.final_norm=true"], results_dir=str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("equinorm: error: experiment=cifar10_wrn_overfit: arch.final_norm ")
    assert err.count("\n") == 1 and not any(tmp_path.iterdir())


@pytest.mark.parametrize("target", ["short", "cifar10"])
def test_a_name_for_a_targets_runs_is_one_line(monkeypatch, tmp_path, capsys, target):
    """ARGS="name=foo" trained every run under runs/foo (cifar10's three experiments in one tree,
    the quarter's EquiNorm runs refused there as another config), then the report found no run
    of the target's experiments: exit 1 after the whole sweep."""
    monkeypatch.setattr(reproduce.subprocess, "Popen", lambda *a, **k: pytest.fail("launched"))
    monkeypatch.setattr(reproduce, "_report", lambda *a: pytest.fail("reported"))
    assert reproduce.launch(target, ["name=foo"], results_dir=str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("equinorm: error: name=foo: a target's runs keep their experiments'")
    assert err.count("\n") == 1 and not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("override", "says"),
    [  # each printed a plan for jobs the trainer refuses (only check_config ran)
        ("epochs=3", "schedule.lr_points end at epoch 30 > epochs=3"),
        ("mixup.alpha=-1", "mixup.alpha=-1.0 must be > 0"),
        ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0 must be a positive"),  # 0 runs
    ],
)
def test_make_plan_refuses_what_the_trainer_refuses(override, says, capsys):
    search = ["hparams_search=optuna_lr"] if override.startswith("hydra.sweeper") else []
    assert reproduce.main(["short", "--plan", "--", *search, override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"equinorm: error: {says}") and err.count("\n") == 1, err
