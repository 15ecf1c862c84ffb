"""The benchmarks run end to end on tiny configurations and write what the README quotes."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
import torch

from equinorm.bench.loader import loader_throughput
from equinorm.bench.output import plot, write_rows
from equinorm.bench.step import step_times

ROOT = Path(__file__).resolve().parents[1]


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


def test_rows_are_written_with_the_machine_appended_and_drawn(tmp_path):
    rows = step_times(
        "preact_resnet18",
        ["equi", "bn"],
        torch.device("cpu"),
        batch_size=2,
        width_mult=0.125,
        warmup=2,
        rounds=2,
        equi_impls=("fused", "reference"),
    )
    assert [(r["norm"], r["impl"]) for r in rows] == [
        ("equi", "fused"),
        ("equi", "reference"),
        ("bn", ""),
    ]
    assert all(r["warmup_s"] >= r["first_step_s"] > 0 for r in rows)
    path = tmp_path / "bench.csv"
    write_rows(path, torch.device("cpu"), rows[:1])
    write_rows(path, torch.device("cpu"), rows[1:], append=True)  # a later group, same file
    with open(path) as f:
        table = list(csv.DictReader(f))
    assert [(r["norm"], r["impl"]) for r in table] == [(r["norm"], r["impl"]) for r in rows]
    assert {"date", "device", "torch", "device_type", "first_step_s"} <= set(table[0])
    plot(table, "test", tmp_path / "bench.png")  # from the file, as gpu_check draws it
    assert (tmp_path / "bench.png").stat().st_size > 5000


@pytest.mark.parametrize(
    ("args", "says"),
    [  # each was a traceback (KeyError, RuntimeError) or ran on (batch 0, width -1, 5 rounds)
        (["--archs", "foo"], "argument --archs: invalid choice: 'foo'"),
        (["--norms", "xx"], "argument --norms: unknown norm 'xx'; valid norms: equi, bn"),
        (["--device", "tpu"], "--device='tpu' is not a device the suite runs on"),
        (["--batch-size", "0"], "argument --batch-size: 0 must be >= 1"),
        (["--width", "-1"], "argument --width: -1 must be > 0"),
    ],
)
def test_a_bad_bench_argument_is_one_line(args, says, capsys):
    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    with pytest.raises(SystemExit) as stop:
        bench.main(["step", *args])
    assert stop.value.code == 2
    assert says in capsys.readouterr().err.splitlines()[-1]
