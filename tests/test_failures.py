"""A sweep that survives its users (issue 13): a failing job never stops the others, and no
damaged file ever turns a finished or resumable run into a dead end."""

from __future__ import annotations

import csv
import errno
import hashlib
import importlib.util
import json
import re
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from equinorm.run import checkpoint as ckpt
from equinorm.train import trainer as trainer_mod
from equinorm.train.run import run
from tests.conftest import SHORT, compose_cfg, fabricated, read_history, run_cli, run_dir_of


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run's history."""
    cfg = compose_cfg(*SHORT, results=tmp_path_factory.mktemp("reference"))
    assert run(cfg)["status"] == "complete"
    return read_history(run_dir_of(cfg))


def preempt_in_epoch_3(cfg, monkeypatch):
    """Run until SIGTERM (as the scheduler sends it) mid-epoch 3: checkpoint.pt holds epoch 3,
    batch 6; checkpoint.prev.pt the end of epoch 2."""
    real_poll = trainer_mod.Trainer._poll

    def poll(self, b, guard):
        if self.state.epoch == 2 and b == 5:
            guard.requested = signal.SIGTERM
        return real_poll(self, b, guard)

    with monkeypatch.context() as m:
        m.setattr(trainer_mod.Trainer, "_poll", poll)
        with pytest.raises(BaseException):  # noqa: B017 -- Preempted hands the signal on
            run(cfg)
    run_dir = run_dir_of(cfg)
    assert ckpt.load(run_dir / "checkpoint.pt")["batch"] == 6
    assert ckpt.load(run_dir / "checkpoint.prev.pt")["epoch"] == 2
    return run_dir


def test_a_corrupt_checkpoint_falls_back_to_the_previous_epochs(tmp_path, monkeypatch, reference):
    cfg = compose_cfg(*SHORT, results=tmp_path)
    run_dir = preempt_in_epoch_3(cfg, monkeypatch)
    (run_dir / "checkpoint.pt").write_bytes(b"truncated by a full disk")
    assert run(cfg)["status"] == "complete"
    assert read_history(run_dir) == reference  # resumed at epoch 3's start, bit for bit
    assert (run_dir / "checkpoint.pt.bad").read_bytes() == b"truncated by a full disk"
    assert not (run_dir / "checkpoint.prev.pt").exists()  # a finished run keeps model.pt only
    assert "previous epoch's checkpoint" in (run_dir / "train.log").read_text()


def test_an_unfinished_run_with_no_readable_checkpoint_is_quarantined_and_restarted(
    tmp_path, monkeypatch, reference
):
    cfg = compose_cfg(*SHORT, results=tmp_path)
    run_dir = preempt_in_epoch_3(cfg, monkeypatch)
    history = (run_dir / "history.csv").read_text()
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (run_dir / name).write_bytes(b"garbage")
    assert run(cfg)["status"] == "complete"
    assert read_history(run_dir) == reference
    (kept,) = run_dir.glob("quarantine-*")
    assert (kept / "history.csv").read_text() == history  # nothing thrown away
    assert {p.name for p in kept.iterdir()} >= {"checkpoint.pt.bad", "checkpoint.prev.pt.bad"}


def test_a_run_stopped_before_its_first_epoch_ended_starts_again_without_quarantine(
    tmp_path, monkeypatch, reference
):
    # Ctrl-C twice (or a crash) during epoch 1: no checkpoint, nothing trained to keep
    cfg = compose_cfg(*SHORT, results=tmp_path)

    def poll(self, b, guard):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(trainer_mod.Trainer, "_poll", poll)
        with pytest.raises(KeyboardInterrupt):
            run(cfg)
    assert run(cfg)["status"] == "complete"
    run_dir = run_dir_of(cfg)
    assert read_history(run_dir) == reference
    assert not list(run_dir.glob("quarantine-*"))  # it was moved there, with a warning
    attempts = json.loads((run_dir / "provenance.json").read_text())["attempts"]
    assert [a["outcome"] for a in attempts] == ["stopped", "complete"]
    assert "stopped before its first epoch ended" in (run_dir / "train.log").read_text()


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_a_complete_run_with_a_damaged_summary_is_rebuilt_and_the_sweep_goes_on(tmp_path):
    """The issue's case: seed 0's summary.json truncated; `-m seed=0,1` used to run nothing. The
    rebuilt summary keeps the setup (the report's captions, equinorm-evaluate's shares read it):
    here two devices that one process runs in turn."""
    args = ["experiment=digits_demo", "debug=smoke", "norm=bn", "train.devices=2"]
    args.append(f"results_dir={tmp_path}")
    assert run_cli(*args, "seed=0", cwd=tmp_path).returncode == 0
    seed0 = run_dir_of(compose_cfg(*args, "seed=0"))
    before = json.loads((seed0 / "summary.json").read_text())
    model = _md5(seed0 / "model.pt")
    (seed0 / "summary.json").write_text('{"status": "comp')
    proc = run_cli("-m", *args, "seed=0,1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "sweep of 2 job(s): 1 complete, 1 skipped" in proc.stdout
    rebuilt = json.loads((seed0 / "summary.json").read_text())
    assert rebuilt["status"] == "complete" and "rebuilt" in rebuilt
    for key in ("epoch", "epochs", "test_acc", "test_loss", "best_test_acc", "norm", "seed"):
        assert rebuilt[key] == pytest.approx(before[key]), key
    setup = ("world_size", "virtual_devices", "batch_size", "global_batch", "width_mult")
    for key in (*setup, "precision", "host"):
        assert rebuilt.get(key) == before[key], key
    assert before["virtual_devices"] == 2 and before["global_batch"] == 2 * before["batch_size"]
    assert _md5(seed0 / "model.pt") == model
    assert (seed0 / "summary.json.bad").read_text() == '{"status": "comp'
    seed1 = run_dir_of(compose_cfg(*args, "seed=1"))
    assert json.loads((seed1 / "summary.json").read_text())["status"] == "complete"


def test_a_failing_job_is_recorded_and_the_next_one_runs(tmp_path):
    args = ["experiment=digits_demo", "debug=smoke", "norm=bn", f"results_dir={tmp_path}"]
    assert run_cli(*args, "seed=0", cwd=tmp_path).returncode == 0
    seed0 = run_dir_of(compose_cfg(*args, "seed=0"))
    # seed 0 finished under lr 0.3 (the experiment's file said so then): under 0.1 it is refused
    stored = seed0 / "config.yaml"
    stored.write_text(stored.read_text().replace("lr: 0.1\n", "lr: 0.3\n"))
    finished = {p.name: _md5(p) for p in seed0.iterdir() if p.is_file()}
    proc = run_cli("-m", *args, "seed=0,1,2", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:]
    tail = proc.stdout.splitlines()[-2:]
    assert tail[0] == "sweep of 3 job(s): 2 complete, 1 failed"
    assert tail[1].startswith("  failed: seed=0: ") and "schedule.lr: 0.3 -> 0.1" in tail[1]
    error = json.loads((seed0 / "error.json").read_text())
    assert error["type"] == "ConfigError" and "different config" in error["error"]
    assert {p.name: _md5(p) for p in seed0.iterdir() if p.is_file() and p.name != "error.json"} == (
        finished
    )  # the finished run is untouched
    for seed in (1, 2):
        cfg = compose_cfg(*args, f"seed={seed}")
        assert json.loads((run_dir_of(cfg) / "summary.json").read_text())["status"] == "complete"
    (sweep,) = (tmp_path / "sweeps").iterdir()  # the sweep's record, beside its multirun.yaml
    assert (sweep / "tally.txt").read_text().splitlines() == tail
    assert (sweep / "multirun.yaml").is_file()
    assert not (tmp_path / "runs" / "multirun.yaml").exists()


def test_an_error_in_a_dataloader_worker_keeps_its_message_and_file(tmp_path):
    from equinorm.data.fabricate import write_imagenet

    write_imagenet(tmp_path / "data", classes=3, per_class=6, size=40)
    broken = sorted((tmp_path / "data").rglob("*.JPEG"))[0]
    broken.write_bytes(broken.read_bytes()[:100])  # truncated, as by an interrupted copy
    proc = run_cli(
        "experiment=imagenet_resnet50",
        "norm=bn",
        "debug=smoke",
        "train.max_train_batches=null",  # every image, the broken one included
        "dataset.workers=2",
        *fabricated(tmp_path / "data"),
        f"results_dir={tmp_path / 'results'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stdout[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith(f"equinorm: error: imagenet: cannot read {broken} ("), last


# the module named by its first argument, with DataLoader workers that the machine kills as it
# fetches their first image: SIGKILL (the out-of-memory killer) in seed 0, SIGBUS (a full
# /dev/shm) otherwise
KILLED_WORKERS = (
    "import os, runpy, signal, sys, torch.utils.data as d; from equinorm.data import torch_loader"
    " as t; kill = lambda s: os.kill(os.getpid(), signal.SIGKILL if s.seed == 0 else "
    "signal.SIGBUS); t.SeededDataset.__getitem__ = lambda s, key: kill(s) if d.get_worker_info()"
    " else None; sys.argv = sys.argv[1:]; runpy.run_module(sys.argv[0], run_name='__main__', "
    "alter_sys=True)"
)


def test_a_dataloader_worker_killed_by_the_machine_is_one_line(tmp_path, data_root):
    """A worker killed by the out-of-memory killer or by a full /dev/shm -- ImageNet's usual
    failures on a shared node -- was "job failed with an unexpected error (a bug? please report
    it)" and torch's traceback."""
    args = ["experiment=imagenet_resnet50", "norm=bn", "debug=smoke", "dataset.workers=1"]
    proc = run_cli(
        "-m",
        *args,
        "seed=0,1",
        *fabricated(data_root),
        f"results_dir={tmp_path}",
        cwd=tmp_path,
        launcher=[sys.executable, "-c", KILLED_WORKERS],
    )
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout and "a bug?" not in proc.stdout, proc.stdout[-3000:]
    tail = proc.stdout.splitlines()[-3:]
    assert tail[0] == "sweep of 2 job(s): 2 failed", tail
    assert re.fullmatch(
        r"  failed: seed=0: a DataLoader worker \(pid \d+\) was killed "
        r"\(SIGKILL: most often the kernel's out-of-memory killer; .*\)",
        tail[1],
    )
    assert re.fullmatch(r"  failed: seed=1: .* \(SIGBUS: .*/dev/shm.*\)", tail[2]), tail[2]


def test_a_resumed_epoch_counts_the_time_before_its_preemption(tmp_path, monkeypatch):
    """The epoch a run was preempted in recorded only its resumed part's time: 0.039 s and 613
    images/s where its neighbours took 0.2 s at 117-150 (time-to-target seconds too). The clock
    here advances one second per step and nothing else, so an epoch takes its steps' seconds."""
    from types import SimpleNamespace

    clock = [0.0]
    real_step = trainer_mod.Trainer.step

    def step(self, *args, **kwargs):
        clock[0] += 1.0
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(trainer_mod, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(trainer_mod.Trainer, "step", step)
    cfg = compose_cfg(*SHORT, results=tmp_path)
    run_dir = preempt_in_epoch_3(cfg, monkeypatch)
    assert run(cfg)["status"] == "complete"
    times = [float(r["epoch_time_s"]) for r in read_history(run_dir, drop=())]
    assert len(set(times)) == 1 and times[0] > 6, times  # every epoch: all of its steps


def test_a_device_out_of_memory_is_one_line(tmp_path, monkeypatch):
    """CUDA's out of memory (simulated: there is no GPU here) was a bug's traceback."""
    from equinorm.errors import EquinormError, machine_error

    said = (
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139.72 GiB "
        "of which 1.06 GiB is free. Including non-PyTorch memory, this process has 138.64 GiB "
        "memory in use. Of the allocated memory 137.1 GiB is allocated by PyTorch"
    )

    def step(*args, **kwargs):
        raise torch.OutOfMemoryError(said)

    monkeypatch.setattr(trainer_mod.Trainer, "step", step)
    cfg = compose_cfg(*SHORT, results=tmp_path)
    with pytest.raises(torch.OutOfMemoryError) as raised:
        run(cfg)
    line = machine_error(raised.value)
    assert isinstance(line, EquinormError)
    assert str(line) == (
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139.72 "
        "GiB of which 1.06 GiB is free: the run needs less memory: a smaller train.batch_size "
        "(in evaluation: train.eval_batch_size), or a device with more memory"
    )
    # the CPU's allocator says it in a RuntimeError (it was "a bug? please report it")
    refused = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 10000000000000 bytes. Error code 12 (Cannot allocate memory)"
    )
    assert str(machine_error(refused)) == (
        "the CPU's memory ran out (DefaultCPUAllocator: can't allocate memory: you tried to "
        "allocate 10000000000000 bytes): the run needs less memory: a smaller train.batch_size "
        "(in evaluation: train.eval_batch_size), or more memory for the job"
    )
    # the run's own log ends with it (it ended at its last epoch line, without a word)
    last = (Path(cfg.run_dir) / "train.log").read_text().splitlines()[-1]
    assert last.endswith(f"[ERROR] failed: {line}"), last


def test_a_failed_runs_log_ends_with_a_bugs_traceback(tmp_path, monkeypatch):
    def step(*args, **kwargs):
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr(trainer_mod.Trainer, "step", step)
    cfg = compose_cfg(*SHORT, results=tmp_path)
    with pytest.raises(ZeroDivisionError):
        run(cfg)
    text = (Path(cfg.run_dir) / "train.log").read_text()
    said = text[text.index("[ERROR] failed with an unexpected error (a bug? please report it)") :]
    assert "Traceback" in said and said.rstrip().endswith("ZeroDivisionError: a bug of ours")


def test_torch_compile_without_a_compiler_is_one_line(tmp_path):
    """train.compile=true on a node without g++ (CXX names none here) was torch's 100-line
    traceback ending in "InvalidCxxCompiler"."""
    env = {"CXX": str(tmp_path / "no-g++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    args = ["experiment=digits_demo", "debug=smoke", "train.compile=true", "train.device=cpu"]
    proc = run_cli(*args, f"results_dir={tmp_path / 'r'}", cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stdout[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("equinorm: error: train.compile=true needs a compiler"), last
    assert "No working C++ compiler found" in last and "Traceback" not in proc.stdout, last


def test_the_finiteness_study_runs_and_locates_a_zero_denominator(tmp_path):
    """scripts/finiteness.py (results/finiteness/) raised AttributeError on its first run (its
    argument `experiment` shadowed the module it composed with). The committed study's second
    step of PreActResNet-152 at x1/8, seed 2, is its fastest divergence: D = 0 in a shortcut."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "finiteness.py"
    spec = importlib.util.spec_from_file_location("finiteness_script", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    out, threads = tmp_path / "rows.csv", torch.get_num_threads()
    args = ["--experiments", "cifar10_preresnet152_mixup", "--widths", "0.125", "--seeds", "2"]
    try:
        args += ["--steps", "2", "--batches", "2", "--threads", "1", "--out", str(out)]
        assert study.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    (row,) = list(csv.DictReader(out.open()))
    assert (row["arch"], row["steps"]) == ("preact_resnet152", "2")
    assert row["status"] in ("complete", "diverged") and int(row["steps_finite"]) <= 2
    if row["status"] == "diverged":  # as the committed study found it (machine-dependent)
        assert row["nonfinite_layer"].endswith("(EquiConv2d)") and float(row["min_abs_D"]) == 0


def test_a_batch_of_one_image_for_batchnorm_on_1x1_maps_is_one_line(tmp_path):
    """train.batch_size=1 norm=bn on the digits (1x1 maps at the last stage) was PyTorch's
    ValueError with its traceback ("Expected more than 1 value per channel"), and in a sweep
    'job failed with an unexpected error (a bug? please report it)'."""
    from equinorm.errors import ConfigError

    args = [*SHORT, "norm=bn", "train.batch_size=1", "train.max_train_batches=2"]
    with pytest.raises(ConfigError, match=r"a training batch of 1 image\(s\) gives a batch norm"):
        run(compose_cfg(*args, results=tmp_path))
    args = [*SHORT, "norm=gn", "train.batch_size=1", "train.max_train_batches=2", "epochs=1"]
    assert run(compose_cfg(*args, "schedule.milestones=[]", results=tmp_path))["epoch"] == 1


# runs the module named by its first argument with files limited to 1 MiB (as `ulimit -f 1024`)
SMALL_FILES = (
    "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20)); "
    "sys.argv = sys.argv[1:]; runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
)


def test_a_sweep_whose_checkpoints_cannot_be_written_fails_each_job_in_one_line(tmp_path):
    """A full disk or quota: each job fails in one line naming the cause and its run directory
    (it was torch's "unexpected pos 1007936 vs 1007824" and a traceback asking for a bug
    report), the sweep exits 1, and no half-written checkpoint is left on the full disk."""
    results = tmp_path / "results"
    args = ["experiment=digits_demo", "debug=smoke", "seed=0", f"results_dir={results}"]
    proc = run_cli(
        "-m", *args, "norm=equi,bn", cwd=tmp_path, launcher=[sys.executable, "-c", SMALL_FILES]
    )
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout and "a bug?" not in proc.stdout, proc.stdout[-3000:]
    tail = proc.stdout.splitlines()[-3:]
    assert tail[0] == "sweep of 2 job(s): 2 failed", tail
    for norm, line in zip(("equi", "bn"), tail[1:], strict=True):
        run_dir = run_dir_of(compose_cfg(*args, f"norm={norm}"))
        assert line == f"  failed: norm={norm}: File too large (writing under {run_dir})", line
        assert json.loads((run_dir / "error.json").read_text())["type"] == "EquinormError"
    assert not list(results.rglob(".*.tmp-*")), "a partial write was left behind"


def test_a_checkpoint_that_cannot_be_written_leaves_the_one_before_and_nothing_else(
    tmp_path, monkeypatch
):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_atomic({"epoch": 1}, path, keep_previous=True)

    def full_disk(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(torch, "save", full_disk)
        with pytest.raises(OSError, match="No space"):
            ckpt.save_atomic({"epoch": 2}, path, keep_previous=True)
    assert torch.load(path) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_the_partial_write_of_a_killed_owner_is_removed_by_the_next(tmp_path):
    from equinorm.run.record import RunDir

    ckpt.save_atomic({"epoch": 1}, tmp_path / "checkpoint.pt")
    (tmp_path / ".checkpoint.pt.tmp-99999").write_bytes(b"x" * 1000)  # SIGKILL mid-save
    rundir = RunDir(tmp_path)
    rundir.lock()
    try:
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "checkpoint.pt"]
    finally:
        rundir.unlock()


def test_only_the_machines_errors_become_one_line():
    from equinorm.errors import machine_error

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as full:
            raise RuntimeError("[enforce fail] unexpected pos 2817344 vs 2817232") from full
    except RuntimeError as exc:  # as torch.save reports a full disk
        assert str(machine_error(exc, "/r")) == "No space left on device (writing under /r)"
    try:
        try:
            Path("/nonexistent/file").read_text()
        except FileNotFoundError:
            {}["key"]
    except KeyError as exc:  # a bug while handling a missing file keeps its traceback
        assert machine_error(exc) is None


def test_a_file_system_without_flock_is_one_line(tmp_path, monkeypatch):
    """Lustre mounted without flock (ENOSYS): every job said "a bug? please report it"."""
    from equinorm.errors import EquinormError
    from equinorm.run import record

    def no_flock(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(record.fcntl, "flock", no_flock)
    cfg = compose_cfg(*SHORT, results=tmp_path)
    with pytest.raises(EquinormError, match=r"\.lock \(Function not implemented\): .* -o flock"):
        run(cfg)
    assert not record.RunDir(cfg.run_dir).in_use()


def test_a_checkpoint_of_a_process_that_saw_more_gpus_resumes_where_fewer_are_visible(
    monkeypatch,
):
    """A run checkpointed where 4 GPUs were visible, resumed with CUDA_VISIBLE_DEVICES=2 (its GPU
    busy now): every saved CUDA generator state was set, device 1's ended in an IndexError
    traceback. A GPU that is not here has no generator to restore (faked: no GPU here)."""
    saved = {**ckpt.rng_state(), "cuda": [torch.full((4,), i, dtype=torch.uint8) for i in range(4)]}
    restored = []
    generators = (SimpleNamespace(set_state=lambda s: restored.append((0, s))),)  # one GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(generators))
    monkeypatch.setattr(torch.cuda, "default_generators", generators)
    ckpt.set_rng_state(saved)
    assert [(i, s.tolist()) for i, s in restored] == [(0, [0, 0, 0, 0])]


@pytest.mark.parametrize("slurm", [True, False])
def test_a_job_out_of_requeues_at_its_time_limit_fails_in_one_line_not_as_a_bug(
    tmp_path, monkeypatch, slurm
):
    """submitit refuses a job a requeue at its time limit once it has had max_num_timeout (local:
    3): its UncompletedJobError, raised from its signal handler after the run's checkpoint, was
    "failed with an unexpected error (a bug? please report it)" and a traceback in train.log, and
    in the sweep's log."""
    from submitit.core.utils import UncompletedJobError

    from equinorm.errors import EquinormError
    from tests.test_resume import signalled_mid_run

    if slurm:
        monkeypatch.setenv("SLURM_JOB_ID", "42")

    def submitit_like(signum, frame):  # its checkpoint_and_try_requeue, the countdown spent
        raise UncompletedJobError("Job not requeued because: timed-out too many times.")

    cfg = compose_cfg(*SHORT, "epochs=2", "schedule.milestones=[1]", results=tmp_path)
    line = str(signalled_mid_run(cfg, submitit_like, EquinormError, monkeypatch))
    assert line.startswith("the job reached its time limit once more than submitit requeues it")
    assert ("hydra.launcher.max_num_timeout" in line) == slurm
    assert line.endswith("the run keeps its checkpoint, and running the sweep again resumes it")
    run_dir = run_dir_of(cfg)
    assert ckpt.load(run_dir / "checkpoint.pt")["batch"] == 4
    last = (run_dir / "train.log").read_text().splitlines()[-1]
    assert last.endswith(f"[ERROR] failed: {line}")  # one line, no traceback
