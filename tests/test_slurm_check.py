"""The SLURM request is checked against the partition before anything is submitted (a fake
``sinfo`` on PATH stands in for a cluster; tests/test_slurm.py runs the real one)."""

from __future__ import annotations

import os

import pytest

from equinorm.errors import ConfigError
from equinorm.experiment import slurm as slurm_check
from tests.conftest import compose_cfg, run_cli

# sinfo -h -o "%P|%c|%m|%G|%l": a CPU partition (default) and a GPU one with a 2-hour limit
SINFO = (
    "cpu*|16|64000|(null)|infinite\n"
    "gpu|32|256000|gpu:a100:4|2:00:00\n"
    "gpu|8|32000|gpu:a100:1|2:00:00\n"
)


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sinfo").write_text(f"#!/bin/sh\nprintf '{SINFO}'\n")
    (bin_dir / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    slurm_check.partitions.cache_clear()
    yield bin_dir
    slurm_check.partitions.cache_clear()


def _launcher(*overrides):
    cfg = compose_cfg("hydra/launcher=submitit_slurm_gpu", *overrides, return_hydra=True)
    return cfg.hydra.launcher


def test_partitions_are_read_from_sinfo(cluster):
    cpu, gpu = slurm_check.partitions()
    assert (cpu.name, cpu.cpus, cpu.gpus, cpu.limit_min, cpu.default) == (
        "cpu",
        16,
        False,
        None,
        True,
    )
    assert (gpu.cpus, gpu.memory_mb, gpu.gpus, gpu.limit_min) == (32, 256000, 4, 120)


GPU = ("hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=120")
REFUSED = [
    ((), "partition cpu has no GPUs but hydra.launcher.gpus_per_node=1: use hydra/launcher="),
    (
        ("hydra.launcher.partition=gpu",),
        "hydra.launcher.timeout_min=1440 exceeds partition gpu's time limit (120 min): "
        "set hydra.launcher.timeout_min<=120",
    ),
    (
        (*GPU, "hydra.launcher.cpus_per_task=40"),
        "cpus_per_task=40 x tasks_per_node=1 exceeds the 32 CPUs of partition gpu's nodes: "
        "set hydra.launcher.cpus_per_task<=32",
    ),
    (
        (*GPU, "hydra.launcher.mem_gb=300"),
        "hydra.launcher.mem_gb=300 exceeds the 250 GB of partition gpu's nodes: "
        "set hydra.launcher.mem_gb<=250",
    ),
    (("hydra.launcher.partition=a100",), "hydra.launcher.partition=a100 is not one of cpu, gpu"),
    (  # more GPUs than a node has: the array would pend forever (NPROC=8 asks 8)
        (*GPU, "hydra.launcher.gpus_per_node=8", "hydra.launcher.tasks_per_node=8"),
        "hydra.launcher.gpus_per_node=8 exceeds the 4 GPU(s) of partition gpu's nodes: "
        "set hydra.launcher.gpus_per_node<=4",
    ),
    (("hydra.launcher.timeout_min=3",), "hydra.launcher.timeout_min=3 leaves no time to train"),
]


@pytest.mark.parametrize(("overrides", "message"), REFUSED)
def test_a_request_that_cannot_run_is_one_line_naming_the_key(cluster, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        slurm_check.check_launcher(_launcher(*overrides))


def test_the_cpu_preset_and_a_fitting_gpu_request_pass(cluster):
    slurm_check.check_launcher(_launcher("hydra/launcher=submitit_slurm_cpu"))
    slurm_check.check_launcher(
        _launcher("hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=120")
    )


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [
        ("(null)", 0),
        ("gpu:4", 4),
        ("gpu:a100:4(S:0-1)", 4),
        ("gpu:a100:2(S:0,1),gpu:v100:2", 4),
        ("gpu:1g.10gb:7,shard:8", 7),
        ("mps:100", 0),
        ("gpu", None),  # a count not shown: not checked
    ],
)
def test_a_nodes_gpus_are_read_from_its_gres(gres, gpus):
    assert slurm_check._gpus(gres) == gpus


def test_the_slurm_launcher_without_slurm_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sinfo, no sbatch
    slurm_check.partitions.cache_clear()
    try:
        with pytest.raises(ConfigError, match="needs SLURM and this machine has none"):
            slurm_check.check_launcher(_launcher("hydra.launcher.timeout_min=120"))
    finally:
        slurm_check.partitions.cache_clear()


def test_a_cluster_sinfo_cannot_reach_is_one_line_with_its_reason(cluster):
    """sinfo's errors run over several lines; the message kept the first (and lost its closing
    parenthesis); its last says why."""
    errors = "sinfo: error: fetch_config: DNS SRV lookup failed\nsinfo: fatal: no config source"
    (cluster / "sinfo").write_text(f"#!/bin/sh\nprintf '{errors}\\n' >&2\nexit 1\n")
    with pytest.raises(ConfigError) as raised:
        slurm_check.check_launcher(_launcher())
    assert str(raised.value) == (
        "the SLURM launcher: sinfo cannot reach the cluster (sinfo: fatal: no config source)"
    )


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("infinite", None),
        ("30", 30),
        ("1:30:00", 90),
        ("2-00:00:00", 2880),
        ("1-12", 2160),
        ("45:30", 46),
    ],
)
def test_sinfo_time_limits(text, minutes):
    assert slurm_check._minutes(text) == minutes


def test_the_cli_refuses_before_writing_anything(cluster, tmp_path):
    proc = run_cli(
        "-m",
        "hydra/launcher=submitit_slurm_gpu",
        "experiment=digits_demo",
        "debug=smoke",
        f"results_dir={tmp_path / 'r'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert (
        proc.stdout.strip()
        .splitlines()[-1]
        .endswith(
            "partition cpu has no GPUs but hydra.launcher.gpus_per_node=1: use "
            "hydra/launcher=submitit_slurm_cpu (or hydra.launcher.gpus_per_node=0)"
        )
    )
    assert not (tmp_path / "r").exists()
