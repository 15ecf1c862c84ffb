"""The submitit_slurm launcher against a real SLURM (``make test-slurm``; marker ``slurm``).

A single-node cluster comes up for the session (:mod:`tools.slurm_cluster`: Debian's packages,
installed if missing, as root) and every test goes through ``hydra/launcher=submitit_slurm_cpu``
as a user on a CPU-only cluster would: a sweep, a rerun that submits nothing, preemption by
``scontrol requeue`` with wandb offline, a SIGUSR2 time-limit requeue, 2-task DDP, and an
Optuna search (a searching sweeper) whose trials are tallied.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tools.slurm_cluster import Cluster, available, install

from equinorm.train.run import run
from tests.conftest import SHORT, compose_cfg, read_history, run_cli, run_dir_of

pytestmark = pytest.mark.slurm

LAUNCHER = ["hydra/launcher=submitit_slurm_cpu", "hydra.launcher.cpus_per_task=1"]
# 180 batches of 8 per epoch: a few seconds an epoch, so a signal lands inside one
LONG = [*SHORT, "epochs=3", "schedule.milestones=[1,2]", "train.batch_size=8"]


@pytest.fixture(scope="module")
def cluster():
    why = available()
    if why:
        pytest.skip(f"a SLURM cluster here {why}")
    try:
        install()
    except Exception as exc:  # e.g. no route to the package mirror
        pytest.skip(f"could not install SLURM here: {exc}")
    with Cluster() as c:
        old = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(c.conf)
        try:
            yield c
        finally:
            if old is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old


def _sacct_jobs(cluster) -> set[str]:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-o", "JobID", "-S", "now-1days"],
        capture_output=True,
        text=True,
        env=cluster.env(),
    ).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def _sweep(tmp_path, *args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "equinorm.train", "-m", *LAUNCHER, *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _running_job(cluster) -> str | None:
    out = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "-o", "%i"],
        capture_output=True,
        text=True,
        env=cluster.env(),
    ).stdout.split()
    return out[0] if out else None


def _after_first_epoch(proc, run_dir: Path, cluster) -> str:
    """The running job's id once its run has finished epoch 1 (and is inside epoch 2)."""
    history = run_dir / "history.csv"
    while proc.poll() is None:
        job = _running_job(cluster)
        if job and history.is_file() and len(history.read_text().splitlines()) >= 2:
            return job
        time.sleep(0.2)
    raise AssertionError(f"the sweep ended first: {proc.communicate()[0][-3000:]}")


def _finish(proc, cluster, job: str) -> str:
    """Wait for the sweep; SLURM holds a requeued job back 2 minutes (its BeginTime), which
    this test does not need to wait out: the job is released as soon as it is pending."""
    while proc.poll() is None:
        state = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%T %r"],
            capture_output=True,
            text=True,
            env=cluster.env(),
        ).stdout.strip()
        if state == "PENDING BeginTime":
            subprocess.run(
                ["scontrol", "update", f"JobId={job}", "StartTime=now"], env=cluster.env()
            )
        time.sleep(0.5)
    return proc.communicate()[0]


def test_a_sweep_runs_and_a_rerun_submits_nothing(cluster, tmp_path):
    args = ["experiment=digits_demo", "debug=smoke", "norm=bn,equi", "seed=0,1"]
    args.append(f"results_dir={tmp_path}")
    first = run_cli("-m", *LAUNCHER, *args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:]
    assert first.stdout.splitlines()[-1] == "sweep of 4 job(s): 4 complete"
    submitted = _sacct_jobs(cluster)
    again = run_cli("-m", *LAUNCHER, *args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "4 of 4 job(s) already finished: not launched" in again.stdout
    assert again.stdout.splitlines()[-1] == "sweep of 4 job(s): 4 skipped"
    assert _sacct_jobs(cluster) == submitted  # nothing was submitted


def test_an_optuna_search_on_slurm_tallies_the_trials_it_launched(cluster, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    args = ["experiment=digits_demo", "debug=smoke", "hparams_search=optuna_lr", "norm=bn"]
    args += ["dataset.val_size=300", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2"]
    proc = run_cli("-m", *LAUNCHER, *args, f"results_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert proc.stdout.splitlines()[-1] == "sweep of 2 job(s): 2 complete"
    (sweep,) = (tmp_path / "sweeps").iterdir()
    jobs = [json.loads(p.read_text()) for p in (sweep / "jobs").glob("*.json")]
    assert len(jobs) == 2  # each recorded itself on its node
    for job in jobs:
        summary = json.loads((Path(job["run_dir"]) / "summary.json").read_text())
        assert (summary["norm"], summary["seed"], summary["status"]) == ("bn", 0, "complete")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cfg = compose_cfg(*LONG, results=tmp_path_factory.mktemp("reference"))
    assert run(cfg)["status"] == "complete"
    return read_history(run_dir_of(cfg))


def test_scontrol_requeue_mid_epoch_with_wandb_offline_resumes_exactly(
    cluster, tmp_path, reference
):
    """Preemption: SIGTERM reaches the trainer and wandb's service; the sweep still exits 0."""
    args = [*LONG, "wandb.mode=offline", f"results_dir={tmp_path}"]
    run_dir = run_dir_of(compose_cfg(*args))
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = _sweep(tmp_path, *args, env=env)
    job = _after_first_epoch(proc, run_dir, cluster)
    subprocess.run(["scontrol", "requeue", job], check=True, env=cluster.env())
    out = _finish(proc, cluster, job)
    assert proc.returncode == 0, out[-3000:]
    assert out.splitlines()[-1] == "sweep of 1 job(s): 1 complete"
    assert read_history(run_dir) == reference
    attempts = json.loads((run_dir / "provenance.json").read_text())["attempts"]
    assert [a["outcome"] for a in attempts] == ["stopped", "complete"]
    assert attempts[0]["slurm_job_id"] and len(list((tmp_path / "wandb").glob("offline-*"))) == 1


def test_a_sigusr2_time_limit_requeues_and_resumes_exactly(cluster, tmp_path, reference):
    """SLURM's --signal=USR2@signal_delay_s, sent by hand: checkpoint, requeue, resume."""
    args = [*LONG, f"results_dir={tmp_path}"]
    run_dir = run_dir_of(compose_cfg(*args))
    proc = _sweep(tmp_path, *args)
    job = _after_first_epoch(proc, run_dir, cluster)
    subprocess.run(["scancel", "--signal=USR2", job], check=True, env=cluster.env())
    out = _finish(proc, cluster, job)
    assert proc.returncode == 0, out[-3000:]
    assert read_history(run_dir) == reference
    attempts = json.loads((run_dir / "provenance.json").read_text())["attempts"]
    assert [a["outcome"] for a in attempts] == ["stopped", "complete"]


def test_a_cancelled_job_fails_alone_and_the_sweep_ends_with_its_tally(cluster, tmp_path):
    """scancel (or the out-of-memory killer) ends a job without a result: submitit's
    UncompletedJobError ended the whole sweep with its traceback, and no tally."""
    proc = _sweep(tmp_path, *LONG, "norm=bn,equi", f"results_dir={tmp_path}")
    histories = lambda: list((tmp_path / "runs").rglob("history.csv"))  # noqa: E731
    while not any(len(h.read_text().splitlines()) >= 2 for h in histories()):
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.2)
    job = _running_job(cluster)
    assert job is not None
    subprocess.run(["scancel", job], check=True, env=cluster.env())
    out = proc.communicate()[0]
    assert proc.returncode == 1 and "Traceback" not in out, out[-3000:]
    last = out.splitlines()[-2:]
    assert last[0] == "sweep of 2 job(s): 1 complete, 1 failed", out[-3000:]
    assert "its process ended without a result" in last[1] and "CANCELLED" in last[1], last[1]


def test_two_tasks_per_job_train_one_run_with_ddp(cluster, tmp_path):
    args = ["experiment=digits_demo", "debug=smoke", "norm=bn", "seed=0"]
    proc = run_cli(
        "-m",
        *LAUNCHER,
        "hydra.launcher.tasks_per_node=2",
        *args,
        f"results_dir={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    runs = [p.parent for p in (tmp_path / "runs").rglob("summary.json")]
    assert len(runs) == 1  # one result set, written by rank 0
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["world_size"] == 2
