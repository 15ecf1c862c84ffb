"""Every run directory says which code, libraries and machine made it (provenance.json)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys

import torch

from equinorm.run import provenance
from equinorm.train.run import run
from tests.conftest import SHORT, compose_cfg, run_cli, run_dir_of


def _attempts(run_dir):
    return json.loads((run_dir / "provenance.json").read_text())["attempts"]


def test_a_run_records_commit_overrides_versions_device_and_times(tmp_path):
    args = [*SHORT, "epochs=2", "schedule.milestones=[1,2]", f"results_dir={tmp_path}"]
    proc = run_cli(*args, "schedule.lr=0.05", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    run_dir = run_dir_of(compose_cfg(*args, "schedule.lr=0.05"))
    (a,) = _attempts(run_dir)
    head = subprocess.run(
        ["git", "-C", str(provenance.SOURCE), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert a["commit"] == (head or None) and isinstance(a["dirty"], bool | None)
    assert a["overrides"][-1] == "schedule.lr=0.05"  # as typed, in order
    assert a["torch"] == torch.__version__ and "torchvision" in a and "cudnn" in a
    assert a["cuda"] == torch.version.cuda
    assert a["device"] == provenance.device_name(torch.device("cpu"))
    assert a["world_size"] == 1 and a["host"] and a["outcome"] == "complete"
    assert a["threads"] == 1  # OMP_NUM_THREADS=1 in the tests
    kernels = a["cpu_kernels"].split(", ")  # AVX2, AVX512, ...; then the caps the shell set
    assert kernels[0] == torch.backends.cpu.get_cpu_capability()
    assert a["compile"] is False and a["impl"] == "fused"  # what changes the last digits
    assert a["compile_mode"] is None  # only a compiled run has one
    assert a["channels_last"] is False  # train.channels_last=auto, on a CPU
    start, end = dt.datetime.fromisoformat(a["start"]), dt.datetime.fromisoformat(a["end"])
    assert start <= end


def test_a_resumed_run_has_one_attempt_per_start(tmp_path, monkeypatch):
    from tests.test_failures import preempt_in_epoch_3

    cfg = compose_cfg(*SHORT, "epochs=3", "schedule.milestones=[1,2]", results=tmp_path)
    preempt_in_epoch_3(cfg, monkeypatch)
    run(cfg)  # resumed: a second attempt
    attempts = _attempts(run_dir_of(cfg))
    assert [a["outcome"] for a in attempts] == ["stopped", "complete"]
    assert attempts[0]["overrides"] is None  # in-process, outside a Hydra job
    run(cfg)  # finished: skipped, nothing recorded
    assert len(_attempts(run_dir_of(cfg))) == 2


def test_changed_files_are_named_exactly_and_new_files_count_as_changes(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / ".gitignore").write_text("results/\n")
    (tmp_path / "README.md").write_text("a\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    monkeypatch.setattr(provenance, "SOURCE", tmp_path)
    provenance.code.cache_clear()
    try:
        assert provenance.code()["dirty"] is False
        (tmp_path / "results").mkdir()
        (tmp_path / "results" / "run.csv").write_text("ignored\n")  # ignored: not a change
        assert provenance.code()["dirty"] is False
        provenance.code.cache_clear()
        (tmp_path / "README.md").write_text("b\n")
        (tmp_path / "new_experiment.yaml").write_text("name: x\n")  # untracked: code too
        info = provenance.code()
        assert info["dirty"] is True
        assert sorted(info["changed"]) == ["README.md", "new_experiment.yaml"]
    finally:
        provenance.code.cache_clear()
        provenance.changes.cache_clear()  # this repository's, not the suite's


def test_an_attempt_with_uncommitted_changes_keeps_a_diff_that_gives_back_its_code(
    tmp_path, monkeypatch
):
    """provenance.json said only "dirty" and the first changed files: the code a result came
    from was lost with the next edit."""
    repo, run_dir = tmp_path / "repo", tmp_path / "run"
    run_dir.mkdir()

    def git(*args, cwd=repo):
        subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)

    git("init", "-q", str(repo), cwd=tmp_path)
    (repo / "layer.py").write_text("eps = 0\n")
    (repo / "logo.png").write_bytes(b"\x89PNG\0a")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    monkeypatch.setattr(provenance, "SOURCE", repo)
    provenance.code.cache_clear()
    provenance.changes.cache_clear()
    outputs = repo / "ablation"  # a results_dir inside the checkout that git does not ignore
    (outputs / "runs").mkdir(parents=True)
    (outputs / "runs" / "history.csv").write_text("epoch\n1\n")  # runs are not code
    try:
        provenance.start_attempt(run_dir, torch.device("cpu"), 1, outputs=outputs)  # clean
        (repo / "layer.py").write_text("eps = 1e-6\n")
        (repo / "mine.yaml").write_text("name: x\n")  # untracked code
        (repo / "logo.png").write_bytes(b"\x89PNG\0b")  # binary: named only
        provenance.code.cache_clear()
        provenance.start_attempt(run_dir, torch.device("cpu"), 1, outputs=outputs)
        label = provenance.commit_label(_attempts(run_dir)[-1])
        shutil.rmtree(outputs)  # --version (which knows no results_dir) says what runs record
        assert f"(commit {label});" in provenance.version_line()
    finally:
        provenance.code.cache_clear()
        provenance.changes.cache_clear()
    clean, dirty = _attempts(run_dir)
    assert clean["dirty"] is False and "diff" not in clean and dirty["diff"] == "code-2.diff"
    assert sorted(dirty["changed"]) == ["layer.py", "logo.png", "mine.yaml"]
    digest = hashlib.sha256((run_dir / "code-2.diff").read_bytes()).hexdigest()
    assert provenance.commit_label(dirty).endswith(f"+dirty.{digest[:7]}")  # what the report shows
    assert sorted(p.name for p in run_dir.glob("*.diff")) == ["code-2.diff"]
    patch = (run_dir / "code-2.diff").read_text()
    assert "# not copied: logo.png (binary)" in patch
    copy = tmp_path / "copy"
    git("clone", "-q", str(repo), str(copy), cwd=tmp_path)
    git("apply", str(run_dir / "code-2.diff"), cwd=copy)  # the commit + the diff: the code run
    assert (copy / "layer.py").read_text() == "eps = 1e-6\n"
    assert (copy / "mine.yaml").read_text() == "name: x\n"
    # a damaged record was replaced without a word, and the next dirty attempt's diff
    # overwrote code-1.diff/code-2.diff, the code of an earlier attempt: both are kept now
    (run_dir / "provenance.json").write_text("{ damaged")
    kept = (run_dir / "code-2.diff").read_bytes()
    try:
        provenance.start_attempt(run_dir, torch.device("cpu"), 1, outputs=outputs)
    finally:
        provenance.code.cache_clear()
        provenance.changes.cache_clear()
    assert (run_dir / "provenance.json.bad").read_text() == "{ damaged"
    (again,) = _attempts(run_dir)
    assert again["diff"] == "code-3.diff" and (run_dir / "code-2.diff").read_bytes() == kept


def test_an_install_from_a_git_url_records_its_commit(tmp_path, monkeypatch):
    """`pip install git+https://...@rev` (a cluster's usual install) ran as "commit unknown":
    pip's PEP 610 record of the commit is read outside a checkout."""

    class Installed:
        def __init__(self, record):
            self.record = record

        def read_text(self, name):
            return json.dumps(self.record) if name == "direct_url.json" else None

    sha = "3ba6a51211626e8d3c875432b86f48cef2b9ed7b"
    url = {"url": "https://github.com/x/equinorm", "vcs_info": {"vcs": "git", "commit_id": sha}}
    real = provenance.metadata.distribution
    monkeypatch.setattr(provenance, "SOURCE", tmp_path)  # site-packages: no .git
    for record, commit in ((url, sha), ({"url": "file:///w", "dir_info": {}}, None)):
        monkeypatch.setattr(
            provenance.metadata,
            "distribution",
            lambda name, r=record: Installed(r) if name == "equinorm" else real(name),
        )
        provenance.code.cache_clear()
        try:
            info = provenance.code()
            assert info["commit"] == commit and info["dirty"] is (False if commit else None)
            label = sha[:7] if commit else "unknown"
            assert f"(commit {label});" in provenance.version_line()
        finally:
            provenance.code.cache_clear()


def test_the_cpu_kernels_pinned_by_the_environment_are_recorded(tmp_path):
    """A Zen 3 and a Zen 4 EPYC both say "AMD EPYC (2 cores)", yet run torch's AVX2 and AVX512
    kernels (different last digits); the pins that make them agree are recorded as well."""
    probe = "import torch; from equinorm.run import provenance as p; "
    probe += "print(p.attempt(torch.device('cpu'), 1)['cpu_kernels'])"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    env["MKL_ENABLE_INSTRUCTIONS"] = "AVX2"
    proc = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.stdout.strip() == "DEFAULT, oneDNN AVX2, MKL AVX2", proc.stderr[-2000:]
    moved = [{"device": "AMD EPYC (2 cores)", "cpu_kernels": k} for k in ("AVX2", "AVX512")]
    assert provenance.execution_changes(moved) == "cpu_kernels AVX2 -> AVX512"  # the report's flag


def test_execution_changes_between_attempts_are_named():
    same = [{"threads": 2, "compile": False}, {"threads": 2, "compile": False}]
    assert provenance.execution_changes(same) == ""
    moved = [{"threads": 4, "device": "cpu"}, {"threads": 2, "device": "cpu", "compile": True}]
    assert provenance.execution_changes(moved) == "threads 4 -> 2"  # compile: one attempt knew it
    moved[0]["compile"] = False
    assert provenance.execution_changes(moved) == "threads 4 -> 2, compile False -> True"
    moved[0] |= {"compile": True, "compile_mode": "default"}
    moved[1] |= {"compile_mode": "reduce_overhead"}  # CUDA graphs: another kernel schedule
    assert provenance.execution_changes(moved) == (
        "threads 4 -> 2, compile_mode default -> reduce_overhead"
    )
    layouts = [{"channels_last": False}, {"channels_last": True}]  # resumed on a GPU's default
    assert provenance.execution_changes(layouts) == "channels_last False -> True"


def test_commit_label():
    assert provenance.commit_label({"commit": "0123456789", "dirty": True}) == "0123456+dirty"
    assert provenance.commit_label({"commit": None}) == "unknown"
