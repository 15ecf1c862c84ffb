"""Every way a run ends is clean (issue 22): a scheduler's SIGTERM to the trainer alone or to every
process of the job (wandb's service included, as SLURM does), Ctrl-C, a failed run and the normal
end, with wandb offline and online without a network. The trainer's own line is the last thing
printed (no wandb traceback after it), the exit code is the documented one (128 + signal, 2, 0),
and nothing is lost: the stopped run resumes to the uninterrupted run's history, bit for bit."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from equinorm.launch.reproduce import INTERRUPTED
from equinorm.run import checkpoint as ckpt
from equinorm.train.run import run
from tests.conftest import SHORT, compose_cfg, read_history, run_dir_of
from tests.test_resume import rows, start, wait_for

# 90 batches per epoch: a signal lands mid-epoch 2, after epoch 1's row is written
ARGS = [*SHORT, "train.batch_size=16", "epochs=2", "schedule.milestones=[1]"]
# online, but wandb's server is a closed local port (a compute node without internet); wandb gives
# up after WANDB_INIT_TIMEOUT seconds (90 by default) and the run goes on without it. A proxy
# setting keeps the trainer's own probe of the server out of it, so wandb's client fails itself
UNREACHABLE = {
    "WANDB_BASE_URL": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "WANDB_API_KEY": "0" * 40,
    "WANDB_INIT_TIMEOUT": "5",
}
STOPPED = "equinorm: stopped by {} after writing a checkpoint; run the same command again to resume"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cfg = compose_cfg(*ARGS, results=tmp_path_factory.mktemp("reference"))
    assert run(cfg)["status"] == "complete"
    return read_history(run_dir_of(cfg))


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (wandb starts its service in a session of its own, so a
    process group would miss it; SLURM's proctrack/linuxproc follows parentage the same way)."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def trainer(args, cwd, mode):
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_SILENT")}
    env |= {"PYTHONUNBUFFERED": "1", **(UNREACHABLE if mode == "online" else {})}
    return subprocess.Popen(
        [sys.executable, "-m", "equinorm.train", *args, f"wandb.mode={mode}"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


ENDS = [  # (wandb mode, signal, sent to every process of the job, resumed by the CLI)
    ("offline", signal.SIGTERM, True, True),
    ("offline", signal.SIGTERM, False, False),
    ("offline", signal.SIGINT, False, False),  # Ctrl-C reaches the trainer, not wandb's session
    ("online", signal.SIGTERM, True, True),
]


@pytest.mark.parametrize(
    ("mode", "signum", "everyone", "cli_resume"),
    ENDS,
    ids=[f"{m}-{signal.Signals(s).name}-{'all' if a else 'trainer'}" for m, s, a, _ in ENDS],
)
def test_a_stopped_run_ends_with_its_own_line_and_resumes_to_the_same_history(
    tmp_path, reference, mode, signum, everyone, cli_resume
):
    args = [*ARGS, f"results_dir={tmp_path}"]
    run_dir = run_dir_of(compose_cfg(*args))
    proc = trainer(args, tmp_path, mode)
    assert wait_for(lambda: rows(run_dir) >= 1, proc), proc.communicate()[0]
    assert proc.poll() is None, "the run ended before the signal"
    for pid in [proc.pid, *(descendants(proc.pid) if everyone else [])]:
        with contextlib.suppress(ProcessLookupError):  # a helper process that has just exited
            os.kill(pid, signum)
    out = proc.communicate()[0]
    assert proc.returncode == 128 + signum, out[-3000:]
    assert out.splitlines()[-1] == STOPPED.format(signal.Signals(signum).name), out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    state = ckpt.load(run_dir / "checkpoint.pt")
    assert state["epoch"] == 1 and 0 < state["batch"] < 90
    if cli_resume:  # the same command again: the normal end, its own last line
        proc = trainer(args, tmp_path, mode)
        out = proc.communicate()[0]
        assert proc.returncode == 0, out[-3000:]
        assert f"batch {state['batch']}" in out
        last = out.splitlines()[-1]
        assert "[INFO] complete: test acc " in last and last.endswith(str(run_dir)), out[-4000:]
        assert "Traceback" not in out, out[-4000:]
    else:
        assert run(compose_cfg(*args, "wandb.mode=disabled"))["status"] == "complete"
    assert read_history(run_dir) == reference


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_a_failed_run_ends_with_its_one_line_and_exit_2(tmp_path, mode):
    args = [*SHORT, "schedule.lr=1e9", "train.fail_on_divergence=true", f"results_dir={tmp_path}"]
    proc = trainer(args, tmp_path, mode)
    out = proc.communicate()[0]
    assert proc.returncode == 2, out[-3000:]
    last = out.splitlines()[-1]
    assert last.startswith("equinorm: error: ") and "diverged in epoch 1" in last, out[-4000:]
    assert "Traceback" not in out, out[-4000:]


# make reproduce-*'s launcher with one target of the demo's experiment (the paper's need data)
REPRODUCE_DIGITS = (
    "import sys; from equinorm.launch import reproduce as r; "
    "r.TARGETS['digits'] = ['digits_demo']; sys.exit(r.main(sys.argv[1:]))"
)


@pytest.mark.parametrize("launcher", ["tune", "reproduce"])
def test_ctrl_c_to_a_launcher_leaves_its_trainer_the_checkpoint_and_says_one_line(
    tmp_path, launcher
):
    """The terminal's Ctrl-C reaches a launcher (equinorm-tune, make reproduce-*) and its trainer
    alike: the launcher ended in a KeyboardInterrupt traceback, and reproduce's subprocess.call
    SIGKILLed the trainer 0.25 s after it, whether its checkpoint was written or not."""
    args = ["norm=bn", "seed=0", "epochs=40", "schedule.milestones=[20,30]"]
    args += ["arch.width_mult=0.125", "train.max_train_batches=5", "train.max_eval_batches=1"]
    args += [f"results_dir={tmp_path}"]
    if launcher == "tune":
        module = "equinorm.launch.tune"
        cmd = ["experiment=digits_demo", "--grid", "0.1,0.05", "--seeds", "0", "--val-size", "100"]
    else:
        module, cmd = None, ["-c", REPRODUCE_DIGITS, "digits", "--"]
    # a session of its own: the process group a terminal's Ctrl-C reaches
    proc = start([*cmd, *args], tmp_path, module=module, start_new_session=True)
    histories = lambda: list((tmp_path / "runs").rglob("history.csv"))  # noqa: E731
    assert wait_for(lambda: any(rows(p.parent) for p in histories()), proc), proc.communicate()[0]
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate()[0]
    assert proc.returncode == 130 and "Traceback" not in out, out[-3000:]
    assert out.splitlines()[-1] == INTERRUPTED, out[-3000:]
    assert STOPPED.format("SIGINT") in out  # the trainer's own line, before it
    (stopped,) = [p.parent for p in histories()]
    assert rows(stopped) < 40 and ckpt.load(stopped / "checkpoint.pt")["epoch"] >= 1


LEAVER = """
import atexit, glob, sys, torch
from equinorm.train import distributed

class Teardown:  # a module global: only the interpreter's teardown frees it
    def __del__(self):
        print("interpreter teardown", flush=True)

kept = Teardown()
atexit.register(lambda: print("atexit ran", flush=True))
if sys.argv[1] == "ddp":
    distributed.init_distributed(torch.device("cpu"))
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 3))
    model(torch.ones(2, 3)).sum().backward()
    del model
    distributed.shutdown()
    threads = [open(p).read() for p in glob.glob("/proc/self/task/*/comm")]
    print(f"gloo threads after shutdown: {any(t.startswith('pt_gloo') for t in threads)}")
else:
    distributed.leave(0)  # no process group here: it returns
    print("returned")
    distributed._held = True
print("unflushed", end="")
distributed.leave(eval(sys.argv[2]))
"""


def test_a_ddp_process_ends_past_the_teardown_its_gloo_threads_abort(tmp_path):
    """DDP's reducer keeps the process group alive past destroy_process_group, and its gloo
    threads, still running, aborted 2 of 80 complete 2-process runs as the interpreter tore down
    ("terminate called without an active exception"): torchrun called them failed. A rank now
    ends with the atexit callbacks run and its output flushed, but no teardown."""
    script = tmp_path / "leaver.py"
    script.write_text(LEAVER)

    def leave(*command: str, how: str):
        cmd = [sys.executable, *command, str(script), *how.split()]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.run(cmd, env=env, capture_output=True, text=True)

    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    ranks = leave(*torchrun, how="ddp 0")
    out = ranks.stdout
    assert ranks.returncode == 0, ranks.stdout[-3000:] + ranks.stderr[-3000:]
    assert out.count("gloo threads after shutdown: True") == 2, out  # why it is needed
    assert out.count("atexit ran") == out.count("unflushed") == 2, out
    assert "interpreter teardown" not in out, out
    for code, status in [("3", 3), ("None", 0), ("'why'", 1)]:  # as sys.exit(code) ends
        one = leave(how=f"one {code}")
        assert one.returncode == status, one.stderr[-3000:]
        assert one.stdout == "returned\nunflushedatexit ran\n", one.stdout
        assert one.stderr == ("why\n" if status == 1 else ""), one.stderr


# Ctrl-C while a command loads its module: SIGINT comes when that module is looked up (the
# seconds a user waits on torch, pandas and matplotlib), through a finder a sitecustomize installs.
# (python -m equinorm.report loads them with the package, which exports the report's API, before
# its __main__ runs.)
INTERRUPT_ON_IMPORT = """
import os, signal, sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["INTERRUPT_ON"]:
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupt())
"""
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("command", "module"),
    [
        (["equinorm-report"], "equinorm.report.cli"),
        (["equinorm-tune", "experiment=digits_demo"], "equinorm.launch.tune"),
        (["equinorm-evaluate", "results"], "equinorm.train.evaluate"),
        (["equinorm-train"], "equinorm.train.app"),
        (["-m", "equinorm.train"], "equinorm.train.app"),
        ([str(ROOT / "scripts" / "report.py")], "equinorm.report.cli"),
        ([str(ROOT / "scripts" / "reproduce.py"), "short"], "equinorm.launch.reproduce"),
    ],
)
def test_ctrl_c_while_a_command_loads_is_one_line_and_exit_130(command, module, tmp_path):
    """A Ctrl-C in a command's first seconds was a KeyboardInterrupt traceback through
    importlib: the commands caught it only once their module had loaded."""
    (tmp_path / "sitecustomize.py").write_text(INTERRUPT_ON_IMPORT)
    if not command[0].startswith(("-", "/")):  # a console script, beside this Python
        command = [str(Path(sys.executable).parent / command[0]), *command[1:]]
    else:
        command = [sys.executable, *command]
    path = os.pathsep.join([str(tmp_path), *os.environ.get("PYTHONPATH", "").split(os.pathsep)])
    env = {**os.environ, "PYTHONPATH": path.rstrip(os.pathsep), "INTERRUPT_ON": module}
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    said = "equinorm: interrupted (Ctrl-C) while loading; nothing was written\n"
    assert (proc.returncode, proc.stderr) == (130, said), proc.stderr[-2000:]
    assert list(tmp_path.iterdir()) == [tmp_path / "sitecustomize.py"]
