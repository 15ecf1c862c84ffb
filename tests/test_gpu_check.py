"""``make gpu-check`` (scripts/gpu_check.py) before any GPU sees it: it keeps to its budget, a stop
at any point keeps every row measured so far, its steps run (shrunk, on the CPU), it refuses a
machine without CUDA in one line, and training needs no wandb when ``wandb.mode=disabled``."""

from __future__ import annotations

import csv
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_step_is_stopped_at_its_limit_and_what_no_longer_fits_is_skipped(
    gpu_check, tmp_path, monkeypatch
):
    sleep = [sys.executable, "-c", "import time; print('working', flush=True); time.sleep(60)"]
    steps = [
        gpu_check.Step("quick", 30, lambda a: [[sys.executable, "-c", "print(1)"]], minimum_s=1),
        gpu_check.Step("endless", 6, lambda a: [sleep]),  # killed at its cap, scaled to 3 s
        gpu_check.Step("long", 60, lambda a: [sleep], minimum_s=5),  # killed at the budget
        gpu_check.Step("late", 30, lambda a: [sleep], minimum_s=5),  # no budget left: skipped
    ]
    monkeypatch.setattr(gpu_check, "START", time.monotonic())
    monkeypatch.setattr(gpu_check, "MARGIN_S", 1.0)
    args = type("Args", (), {"budget": 12.0, "out": tmp_path, "cap_scale": 0.5})()
    runner = gpu_check.Runner(tmp_path / "log.txt")
    outcomes = gpu_check.run_all(steps, args, runner)
    elapsed = time.monotonic() - gpu_check.START
    assert [(o.step, o.status) for o in outcomes] == [
        ("quick", "ok"),
        ("endless", "timeout"),
        ("long", "timeout"),
        ("late", "skipped"),
    ]
    assert 2.5 < outcomes[1].seconds < 8  # its cap, then the kill
    assert elapsed < args.budget, elapsed
    assert [r["status"] for r in rows(tmp_path / "steps.csv")] == [
        "ok",
        "timeout",
        "timeout",
        "skipped",
    ]
    log = (tmp_path / "log.txt").read_text().splitlines()
    assert log.count("working") == 2  # both ran
    assert "== endless (at most 3 s)" in log  # --cap-scale 0.5 of its 6 s


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_check_stopped_mid_benchmark_keeps_every_row_and_log_line(tmp_path, signum):
    """SIGTERM: the lease ends (to the check alone); SIGINT: Ctrl-C, to the check and the
    benchmark it runs (a terminal's process group), which was a traceback from each."""
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--cap-scale", "1"]
    cmd += ["--out", str(out)]  # full caps: a loaded machine is not a failed step
    cmd += ["--work", str(tmp_path / "work"), "--only", "env", "bench-eager"]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    bench = out / "bench.csv"
    while proc.poll() is None and not bench.is_file():  # the first architecture's rows
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    log = proc.communicate()[0]
    assert proc.returncode == 128 + signum, log[-3000:]
    assert "Traceback" not in log + (out / "log.txt").read_text()
    measured = rows(bench)
    assert {(r["arch"], r["norm"], r["impl"]) for r in measured} == {
        ("wrn", "equi", "fused"),
        ("wrn", "equi", "reference"),
        ("wrn", "bn", ""),
        ("wrn", "gn", ""),
    }
    assert all(float(r["images_per_s"]) > 0 and r["device_type"] == "cpu" for r in measured)
    assert [r["step"] for r in rows(out / "steps.csv")] == ["env"]  # finished before the stop
    assert "torch" in (out / "env.json").read_text()
    assert f"stopped by {signum.name}" in (out / "log.txt").read_text()
    busy = subprocess.run(["pgrep", "-f", "scripts/bench.py step"], capture_output=True, text=True)
    assert str(tmp_path) not in busy.stdout  # the benchmark it ran was stopped with it


def test_the_smoke_step_runs_each_experiment_with_equinorm_and_tabulates_them(tmp_path):
    out = tmp_path / "out"
    args = ["--device", "cpu", "--quick", "--out", str(out), "--work", str(tmp_path / "work")]
    args += ["--cap-scale", "1"]  # its full 180 s: CI's parallel tests once held it past 45 s
    proc = run_cli(
        *args, "--only", "smoke", cwd=tmp_path, module="", launcher=[sys.executable, str(SCRIPT)]
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    smoke = rows(out / "smoke.csv")
    assert sorted(r["run"].split("/")[0] for r in smoke) == ["cifar10_wrn_short", "digits_demo"]
    assert all(r["status"] == "complete" and "-equi/" in r["run"] for r in smoke)
    scored = [x for x in (out / "log.txt").read_text().splitlines() if "model.pt (epoch 2)" in x]
    assert len(scored) == 2 and all("(recorded " in x for x in scored)  # equinorm-evaluate's
    (step,) = rows(out / "steps.csv")
    assert step["status"] == "ok" and step["detail"] == "2 of 2 runs complete"


def test_gpu_check_without_cuda_says_so_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        return  # a CUDA machine: nothing to refuse
    proc = run_cli(
        "--out", str(tmp_path), cwd=tmp_path, module="", launcher=[sys.executable, str(SCRIPT)]
    )
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout
    assert lines[0].startswith("gpu-check: no CUDA device visible to torch")


def test_training_runs_without_wandb_installed_when_disabled(tmp_path):
    """A GPU image without wandb: ``import wandb`` fails, a disabled-wandb run still completes."""
    blocker = tmp_path / "no_wandb"
    blocker.mkdir()
    (blocker / "wandb.py").write_text("raise ImportError('wandb is not installed here')\n")
    proc = run_cli(
        "experiment=digits_demo",
        "debug=smoke",
        "wandb.mode=disabled",
        f"results_dir={tmp_path / 'results'}",
        cwd=tmp_path,
        env={"PYTHONPATH": str(blocker)},
    )
    assert proc.returncode == 0, proc.stdout[-2000:]


@pytest.mark.parametrize(
    ("args", "says"),
    [  # --device tpu ran the whole plan as skipped steps; --budget 0 too
        (["--device", "tpu"], "argument --device: 'tpu' is not cuda, cuda:<n> or cpu"),
        (["--budget", "0"], "argument --budget: 0 must be > 0"),
        (["--cap-scale", "-1"], "argument --cap-scale: -1 must be > 0"),
    ],
)
def test_a_bad_argument_is_one_line_and_checks_nothing(gpu_check, args, says, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        gpu_check.main([*args, "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(says)
    assert not (tmp_path / "out").exists()


def test_only_runs_its_steps_in_the_order_given(gpu_check):
    # a lease's call puts what it must know first (the smoke runs before the long compiles)
    chosen = gpu_check.choose(["smoke", "profile", "env", "smoke"], skip=["env"])
    assert [s.name for s in chosen] == ["smoke", "profile"]
    default = [s.name for s in gpu_check.choose(None, skip=[])]
    assert default[:2] == ["env", "gpu-tests"] and "profile" in default
