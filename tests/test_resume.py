"""Resumable runs: kills at any instant, preemption, skipping, locks, divergence, DDP."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from equinorm.errors import ConfigError
from equinorm.run import checkpoint as ckpt
from equinorm.run.record import RunDir, RunLockedError
from equinorm.run.resume import PartialRunError
from equinorm.train.evaluate import evaluate
from equinorm.train.run import run
from equinorm.train.signals import Preempted
from tests.conftest import SHORT, compose_cfg, read_history, run_cli, run_dir_of

VAL = [*SHORT, "dataset.val_size=200"]


def snapshot(path: Path) -> dict:
    return {
        p.name: (hashlib.md5(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(path.iterdir())
        if p.is_file()
    }


def rows(path: Path) -> int:
    try:
        return max(len((path / "history.csv").read_text().splitlines()) - 1, 0)
    except FileNotFoundError:
        return 0


def start(args, cwd, module: str | None = "equinorm.train", **popen):
    """The CLI (``python -m module *args``; ``module=None``: ``python *args``), started."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, *(["-m", module] if module else []), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def wait_for(predicate, proc):
    """Until ``predicate()`` holds or the process ends (an event either way, no clock budget)."""
    while proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_sigkill_twice_then_resume_equals_uninterrupted_and_rerun_changes_nothing(tmp_path):
    # with a validation split: its images and its val_* columns resume exactly too (issue 26)
    reference = compose_cfg(*VAL, results=tmp_path / "ref")
    run(reference)
    args = [*VAL, f"results_dir={tmp_path / 'killed'}"]
    run_dir = run_dir_of(compose_cfg(*VAL, results=tmp_path / "killed"))
    # first kill: mid-way through epoch 2 (after the first checkpoint); second: inside epoch 3
    for after_rows, delay in ((1, 0.3), (2, 0.5)):
        proc = start(args, tmp_path)
        assert wait_for(lambda n=after_rows: rows(run_dir) >= n, proc), proc.communicate()[0]
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert rows(run_dir) < 4, "the run finished before it could be killed"
    cfg = compose_cfg(*VAL, results=tmp_path / "killed")
    assert run(cfg)["status"] == "complete"  # resumed (the CLI runs this same function)
    assert (run_dir / "train.log").read_text().count("resumed at epoch") == 2  # 2nd and 3rd start
    assert read_history(run_dir) == read_history(run_dir_of(reference))
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"

    before = snapshot(run_dir)
    assert run(cfg)["status"] == "complete"  # skipped: not one file touched
    assert snapshot(run_dir) == before


def signalled_mid_run(cfg, handler, expected, monkeypatch) -> BaseException:
    """Run ``cfg`` with ``handler`` installed for SIGUSR1 before it (as submitit's is) and the
    signal sent at batch 4 of epoch 2: the ``expected`` exception the run raises."""
    from equinorm.train import trainer as trainer_mod

    previous = signal.signal(signal.SIGUSR1, handler)
    real_poll = trainer_mod.Trainer._poll

    def poll(self, b, guard):
        if self.state.epoch == 1 and b == 3:
            os.kill(os.getpid(), signal.SIGUSR1)
        return real_poll(self, b, guard)

    monkeypatch.setattr(trainer_mod.Trainer, "_poll", poll)
    try:
        with pytest.raises(expected) as raised:
            run(cfg)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    return raised.value


def test_signal_is_handed_on_to_a_previous_handler_after_the_checkpoint(tmp_path, monkeypatch):
    """The requeue path of submitit: its handler runs once our checkpoint is on disk."""
    calls = []

    def submitit_like(signum, frame):
        calls.append((signum, (run_dir_of(cfg) / "checkpoint.pt").exists()))
        raise SystemExit(-1)

    cfg = compose_cfg(*SHORT, "epochs=2", "schedule.milestones=[1]", results=tmp_path)
    signalled_mid_run(cfg, submitit_like, SystemExit, monkeypatch)
    assert calls == [(signal.SIGUSR1, True)]
    assert ckpt.load(run_dir_of(cfg) / "checkpoint.pt")["batch"] == 4


def test_ctrl_c_during_the_last_evaluation_stops_the_process_once_the_run_is_recorded(
    tmp_path, monkeypatch
):
    """A Ctrl-C after the last step's poll (the last evaluation, writing model.pt) set the
    flag nobody read again: the run completed, and in a sweep the next job began, the Ctrl-C
    gone."""
    cfg = compose_cfg(*SHORT, "epochs=2", "schedule.milestones=[1]", results=tmp_path)
    from equinorm.train import trainer as trainer_mod

    real_evaluate = trainer_mod.Trainer.evaluate

    def evaluate(self):
        if self.state.epoch == 1:  # the last epoch's
            signal.raise_signal(signal.SIGINT)  # handled before it returns
        return real_evaluate(self)

    monkeypatch.setattr(trainer_mod.Trainer, "evaluate", evaluate)
    with pytest.raises(Preempted, match="stopped by SIGINT once its run had ended"):
        run(cfg)
    summary = json.loads((run_dir_of(cfg) / "summary.json").read_text())
    assert summary["status"] == "complete" and (run_dir_of(cfg) / "model.pt").exists()


class Killed(BaseException):
    """A SIGKILL at one point of a run's end (no handler, no cleanup runs)."""


@pytest.mark.parametrize("at", ["model.pt", "summary", "wandb"])
def test_a_run_killed_as_it_ends_is_complete_only_with_its_weights_and_its_rerun_ends_it(
    tmp_path, monkeypatch, at
):
    """The run's end wrote summary.json "complete", then waited on wandb's finish (seconds;
    online, its uploads), then wrote model.pt: a job killed in between (a time limit's SIGKILL
    after its grace, out of memory) was complete without weights, and every rerun skipped it."""
    cfg = compose_cfg(*SHORT, "epochs=2", "schedule.milestones=[1]", results=tmp_path)
    run_dir = run_dir_of(cfg)
    from equinorm.train import trainer as trainer_mod

    def kill(*args, **kwargs):
        raise Killed

    if at == "model.pt":
        real_save = trainer_mod.ckpt.save_atomic

        def save(obj, path, **kw):
            if Path(path).name == "model.pt":
                kill()
            return real_save(obj, path, **kw)

        monkeypatch.setattr(trainer_mod.ckpt, "save_atomic", save)
    elif at == "summary":
        real_write = trainer_mod.Trainer.write_summary

        def write(self, status, **extra):
            if status == "complete":
                kill()
            return real_write(self, status, **extra)

        monkeypatch.setattr(trainer_mod.Trainer, "write_summary", write)
    else:
        monkeypatch.setattr(trainer_mod.WandbLogger, "finish", kill)
    with pytest.raises(Killed):
        run(cfg)
    status = json.loads((run_dir / "summary.json").read_text())["status"]
    assert status != "complete" or (run_dir / "model.pt").is_file()
    RunDir(run_dir).unlock()  # the killed process's lock ends with it
    monkeypatch.undo()
    summary = run(cfg)  # the rerun: skips the run, or finishes it
    assert summary["status"] == "complete" and summary["epoch"] == 2
    assert (run_dir / "model.pt").is_file() and not (run_dir / "checkpoint.pt").exists()
    recorded = json.loads((run_dir / "summary.json").read_text())
    assert "rebuilt" not in recorded and recorded["global_batch"] == summary["global_batch"]


def test_a_run_started_with_ctrl_c_ignored_keeps_ignoring_it(tmp_path, monkeypatch):
    """`cmd &` from a shell without job control starts with SIGINT ignored, so that the
    terminal's Ctrl-C to its process group is not the run's: Python leaves it ignored, and so does
    the trainer (it stopped the run, while the sweep above it, ignoring it, went on)."""
    cfg = compose_cfg(*SHORT, "epochs=2", "schedule.milestones=[1]", results=tmp_path)
    from equinorm.train import trainer as trainer_mod

    real_poll = trainer_mod.Trainer._poll

    def poll(self, b, guard):
        if self.state.epoch == 1 and b == 3:
            signal.raise_signal(signal.SIGINT)  # handled (or ignored) before it returns
        return real_poll(self, b, guard)

    monkeypatch.setattr(trainer_mod.Trainer, "_poll", poll)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert run(cfg)["status"] == "complete"
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_second_process_on_the_same_run_refuses(tmp_path):
    cfg = compose_cfg(*SHORT, results=tmp_path)
    holder = RunDir(run_dir_of(cfg))
    holder.lock()
    try:
        with pytest.raises(RunLockedError, match="in use by another process"):
            run(cfg)
        proc = run_cli(*SHORT, f"results_dir={tmp_path}", cwd=tmp_path)
        assert proc.returncode == 2 and "in use by another process" in proc.stdout.splitlines()[-1]
    finally:
        holder.unlock()
    assert not (run_dir_of(cfg) / "history.csv").exists()


def test_the_same_sweep_once_per_gpu_trains_each_run_once(tmp_path):
    """How a sweep spreads over a machine's GPUs (docs/cluster.md): the same command once per
    GPU. A run that another one holds is left to it ("in use"; held here as that sweep would),
    a finished one skipped; each run is trained once, and the tally says what the others had."""
    args = ["-m", "experiment=digits_demo", "debug=smoke", "norm=bn,equi", "seed=0,1"]
    args.append(f"results_dir={tmp_path}")
    one = ["experiment=digits_demo", "debug=smoke", "norm=bn", "seed=0"]
    held = RunDir(run_dir_of(compose_cfg(*one, results=tmp_path)))
    held.lock()
    try:
        first = run_cli(*args, cwd=tmp_path)
    finally:
        held.unlock()
    assert first.returncode == 0, first.stdout[-3000:]
    assert "sweep of 4 job(s): 3 complete, 1 in use" in first.stdout, first.stdout[-3000:]
    second = run_cli(*args, cwd=tmp_path)  # the sweep on the other GPU, once it has the run
    assert "sweep of 4 job(s): 1 complete, 3 skipped" in second.stdout, second.stdout[-3000:]
    again = run_cli(*one, f"results_dir={tmp_path}", cwd=tmp_path).stdout  # one finished run
    assert re.search(r"is complete \(epoch 2/2, test acc \d+\.\d\d\): skipping", again), again
    summaries = list((tmp_path / "runs").rglob("summary.json"))
    assert len(summaries) == 4
    for summary in summaries:
        provenance = json.loads((summary.parent / "provenance.json").read_text())
        assert len(provenance["attempts"]) == 1, summary  # trained by one sweep, not both


def test_sweeps_started_together_keep_their_own_folders(tmp_path):
    """The same command started once per GPU in one loop (docs/cluster.md) shared one
    sweeps/<second>/ folder: one multirun.yaml and one tally.txt for both, and a searching
    sweeper's job records were overwritten by the other's."""
    args = ["-m", "experiment=digits_demo", "seed=range(0,0)", f"results_dir={tmp_path}"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "equinorm.train", *args]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env) for _ in range(2)]
    assert [p.wait() for p in procs] == [0, 0]
    sweeps = sorted((tmp_path / "sweeps").iterdir())
    assert len(sweeps) == 2, sweeps
    assert all((s / "tally.txt").read_text() == "sweep of 0 job(s): no jobs\n" for s in sweeps)


def test_resume_with_a_different_config_refuses_naming_the_difference(tmp_path):
    cfg = compose_cfg(*SHORT, results=tmp_path)
    run(cfg)
    changed = compose_cfg(*SHORT, "optim.weight_decay=5e-4", results=tmp_path)
    assert run_dir_of(changed) != run_dir_of(cfg)  # an override: a run of its own
    # the experiment's file edited since (same directory, another config): refused
    stored = run_dir_of(cfg) / "config.yaml"
    stored.write_text(stored.read_text().replace("weight_decay: 0.0001", "weight_decay: 0.0005"))
    with pytest.raises(ConfigError, match=r"optim\.weight_decay: 0\.0005 -> 0\.0001"):
        run(cfg)
    stored.write_text(stored.read_text().replace("weight_decay: 0.0005", "weight_decay: 0.0001"))
    same_but_elsewhere = compose_cfg(
        *SHORT, "wandb.mode=offline", "train.progress=true", results=tmp_path
    )
    assert run(same_but_elsewhere)["status"] == "complete"  # non-semantic keys may differ
    # a run made before the suite had a key: the job at the key's own value is that very run
    stored.write_text(stored.read_text().replace("  final_norm: false\n", ""))
    assert "final_norm" not in stored.read_text()
    assert run(cfg)["status"] == "complete"
    other = compose_cfg(*SHORT, "arch.final_norm=true", results=tmp_path)  # named by its variant
    with pytest.raises(ConfigError, match=r"arch\.final_norm: <absent> -> True"):
        RunDir(run_dir_of(cfg)).check_same_config(other)


def test_divergence_stops_cleanly_and_a_multirun_goes_on(tmp_path):
    # an ordinary sweep over the learning rate: each value gets its own run directory
    proc = run_cli(
        "-m", *SHORT, "norm=none", "schedule.lr=1e6,0.1", f"results_dir={tmp_path}", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    status = {}
    for lr in ("1e6", "0.1"):
        cfg = compose_cfg(*SHORT, "norm=none", f"schedule.lr={lr}", results=tmp_path)
        status[f"lr{float(lr)}"] = json.loads((run_dir_of(cfg) / "summary.json").read_text())
    assert status["lr1000000.0"]["status"] == "diverged"
    assert status["lr1000000.0"]["diverged_epoch"] == 1
    assert status["lr0.1"]["status"] == "complete"  # the sweep went on after the divergence


def test_a_sweep_over_epochs_of_a_schedule_over_all_epochs_gives_each_its_own_run(tmp_path):
    """epochs names a run only where it changes the trajectory (here: a rescaled schedule)."""
    args = [*SHORT, "schedule.rescale=true", f"results_dir={tmp_path}"]
    proc = run_cli("-m", *args, "epochs=1,2", cwd=tmp_path)
    assert proc.returncode == 0 and "2 complete" in proc.stdout, proc.stdout[-3000:]
    dirs = {run_dir_of(compose_cfg(*args, f"epochs={e}")) for e in (1, 2)}
    assert len(dirs) == 2 and all((d / "model.pt").is_file() for d in dirs)
    assert any("epochs=2" in str(d) for d in dirs)


def test_diverged_run_reports_epoch_and_is_never_overwritten(tmp_path):
    cfg = compose_cfg(*SHORT, "norm=none", "schedule.lr=1e6", results=tmp_path)
    summary = run(cfg)
    assert summary["status"] == "diverged" and summary["diverged_epoch"] == 1
    history = read_history(run_dir_of(cfg))
    assert history[-1]["train_loss"] == "nan"
    before = snapshot(run_dir_of(cfg))
    assert run(cfg)["status"] == "diverged"
    assert snapshot(run_dir_of(cfg)) == before


def test_resume_false_refuses_to_touch_an_unfinished_run(tmp_path):
    cfg = compose_cfg(*SHORT, results=tmp_path)
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True)
    torch.save({}, run_dir / "checkpoint.pt")
    with pytest.raises(PartialRunError, match=r"train\.resume=false"):
        run(compose_cfg(*SHORT, "train.resume=false", results=tmp_path))


def test_torchrun_two_cpu_processes_write_exactly_one_run_directory(tmp_path):
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
    ]
    proc = run_cli(
        "experiment=digits_demo",
        "norm=bn",
        "seed=0",
        "debug=smoke",
        f"results_dir={tmp_path}",
        cwd=tmp_path,
        launcher=launcher,
    )
    assert proc.returncode == 0, proc.stdout[-8000:]
    runs = sorted(p.parent for p in (tmp_path / "runs").rglob("summary.json"))
    assert [p.relative_to(tmp_path) for p in runs] == [  # 2 devices: not the 1-process run
        Path("runs/digits_demo/digits-preact_resnet18-bn/debug=smoke,train.devices=2/seed=0")
    ]
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["world_size"] == 2
    assert sum("epoch 2/2" in line for line in proc.stdout.splitlines()) == 1  # rank 0 logs
    # scored again in one process: the images of both ranks' (cut) evaluations, as recorded
    scored = evaluate(runs[0], torch.device("cpu"))
    scores, recorded = scored.scores, scored.recorded
    assert scores["test_acc"] == recorded["test_acc"]  # it was the first shard's images alone
    assert scores["test_loss"] == pytest.approx(recorded["test_loss"], rel=1e-9)


def test_under_ddp_a_signal_to_one_rank_stops_both_within_a_step(tmp_path, monkeypatch):
    """5 batches per epoch (the DDP check used to run every 20th step: never here). SIGTERM to
    rank 1 alone: both ranks stop together, rank 0 writes the checkpoint and records the stop
    before either leaves (torchrun stops the other rank once one has ended: rank 1, with nothing
    to write, left first and rank 0 could be stopped before its record), and it resumes."""
    args = [
        *SHORT,
        "norm=bn",
        "epochs=40",
        "schedule.milestones=[20,30]",
        "train.max_train_batches=5",
        "train.max_eval_batches=1",
        f"results_dir={tmp_path}",
    ]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    proc = subprocess.Popen(
        [*torchrun, "--nproc_per_node=2", "-m", "equinorm.train", *args],
        cwd=tmp_path,
        env={**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    monkeypatch.setenv("WORLD_SIZE", "2")  # where torchrun's ranks put the run
    run_dir = run_dir_of(compose_cfg(*args))
    monkeypatch.delenv("WORLD_SIZE")
    assert wait_for(lambda: rows(run_dir) >= 1, proc), proc.communicate()[0]
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    pids = sorted(int(p) for p in workers.stdout.split())
    ranks = {}
    for pid in pids:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = next(e for e in environ if e.startswith(b"RANK="))
        ranks[int(rank[5:])] = pid
    os.kill(ranks[1], signal.SIGTERM)
    out = proc.communicate()[0]
    assert proc.returncode != 0, out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "running", out  # stopped, not trained on to the end
    assert rows(run_dir) < 40
    assert (run_dir / "checkpoint.pt").is_file()
    (attempt,) = json.loads((run_dir / "provenance.json").read_text())["attempts"]
    assert attempt["outcome"] == "stopped", out
    # the rank that ends first has said why (torchrun may stop the other before it does)
    assert out.count("stopped by SIGTERM after writing a checkpoint") >= 1, out
    resumed = run_cli(*args, cwd=tmp_path, launcher=[*torchrun, "--nproc_per_node=2", "-m"])
    assert resumed.returncode == 0, resumed.stdout[-8000:]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"
    assert rows(run_dir) == 40


ONE_JOB_ENDS = [  # (signal to one job's process, the sweep's exit code and tally)
    (signal.SIGTERM, 0, "1 complete, 1 stopped"),
    (signal.SIGKILL, 1, "1 complete, 1 failed"),  # out of memory: no checkpoint, no result
]


@pytest.mark.parametrize(("signum", "code", "tally"), ONE_JOB_ENDS, ids=["SIGTERM", "SIGKILL"])
def test_a_signal_to_one_job_of_a_submitit_local_sweep_ends_that_run_alone(
    tmp_path, signum, code, tally
):
    """submitit's local executor bypasses SIGTERM: the job stopped its run after a checkpoint,
    exited 143, and the sweep died of UncompletedJobError's traceback, its other jobs never
    launched; a job killed outright (SIGKILL: the out-of-memory killer) did the same."""
    one_at_a_time = f"hydra.launcher.cpus_per_task={len(os.sched_getaffinity(0))}"
    args = ["-m", "hydra/launcher=submitit_local", one_at_a_time, *SHORT, "norm=bn,gn"]
    args += ["epochs=40", "schedule.milestones=[20,30]", "train.max_train_batches=5"]
    args += ["train.max_eval_batches=1", f"results_dir={tmp_path}"]
    proc = start(args, tmp_path)
    histories = lambda: [p.parent for p in (tmp_path / "runs").rglob("history.csv")]  # noqa: E731
    assert wait_for(lambda: any(rows(d) >= 1 for d in histories()), proc), proc.communicate()[0]
    job = subprocess.run(["pgrep", "-f", f"submitit.core._submit {tmp_path}"], capture_output=True)
    (pid,) = job.stdout.split()
    os.kill(int(pid), signum)
    out = proc.communicate()[0]
    assert proc.returncode == code and f"sweep of 2 job(s): {tally}" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    (ended,) = [d for d in histories() if "-bn" in str(d)]
    assert rows(ended) < 40 and (ended / "checkpoint.pt").is_file()
    if signum == signal.SIGKILL:  # the tally's line, from the run's error.json
        assert "failed: norm=bn: its process ended without a result (killed" in out, out[-3000:]
    again = run_cli(*args, cwd=tmp_path)
    assert "sweep of 2 job(s): 1 complete, 1 skipped" in again.stdout, again.stdout[-3000:]
    assert rows(ended) == 40


def test_ctrl_c_in_a_submitit_local_sweep_is_one_line_and_its_runs_resume(tmp_path):
    """Ctrl-C reached our process while it waited on submitit's jobs: a KeyboardInterrupt
    traceback through Hydra and submitit, exit 1."""
    args = ["-m", "hydra/launcher=submitit_local", *SHORT, "norm=bn,gn", "epochs=40"]
    args += ["schedule.milestones=[20,30]", "train.max_train_batches=5"]
    args += ["train.max_eval_batches=1", f"results_dir={tmp_path}"]
    # its own process group, which a terminal's Ctrl-C reaches as a whole
    proc = start(args, tmp_path, start_new_session=True)
    histories = lambda: [p.parent for p in (tmp_path / "runs").rglob("history.csv")]  # noqa: E731
    assert wait_for(lambda: any(rows(d) >= 1 for d in histories()), proc), proc.communicate()[0]
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate()[0]
    assert proc.returncode == 128 + signal.SIGINT, out[-3000:]
    assert "equinorm: interrupted (Ctrl-C); each run keeps its last checkpoint" in out
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0 and "sweep of 2 job(s): 2 complete" in again.stdout
    assert all(rows(d) == 40 for d in histories())
