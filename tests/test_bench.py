"""The benchmarks run end to end on tiny configurations and write what the README quotes."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import torch

from equinorm.bench.loader import loader_throughput
from equinorm.bench.step import step_times

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


def test_step_times_interleave_norms_and_pair_ratios_to_bn():
    rows = step_times(
        "wrn",
        ["equi", "bn", "gn"],
        torch.device("cpu"),
        batch_size=4,
        width_mult=0.125,
        warmup=1,
        rounds=3,
    )
    by = {r["norm"]: r for r in rows}
    assert by["bn"]["ratio_to_bn"] == 1.0  # each round's bn step over itself
    assert all(r["step_ms"] > 0 and r["images_per_s"] > 0 for r in rows)
    assert by["equi"]["ratio_q25"] <= by["equi"]["ratio_to_bn"] <= by["equi"]["ratio_q75"]


def test_loader_throughput_compares_the_device_loader_with_the_dataloader():
    rows = loader_throughput(
        torch.device("cpu"), n_images=256, batch_size=64, epochs=1, workers=(0,)
    )
    assert [(r["loader"], r["workers"]) for r in rows] == [("device", 0), ("torch", 0)]
    assert all(r["images_per_s"] > 0 for r in rows)


def test_bench_script_writes_csv_with_the_machine_and_a_plot(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_script", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = step_times(
        "preact_resnet18",
        ["equi", "bn"],
        torch.device("cpu"),
        batch_size=2,
        width_mult=0.125,
        warmup=1,
        rounds=2,
    )
    path = bench.write_rows("cpu-test", torch.device("cpu"), rows, tmp_path)
    bench.plot(rows, "test", tmp_path / "cpu-test.png")
    with open(path) as f:
        table = list(csv.DictReader(f))
    assert {"date", "device", "torch", "device_type", "arch", "norm", "step_ms"} <= set(table[0])
    assert (tmp_path / "cpu-test.png").stat().st_size > 5000
