"""The benchmarks run end to end on tiny configurations and write what the README quotes."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
import torch

from equinorm.bench.loader import loader_throughput
from equinorm.bench.output import plot, write_rows
from equinorm.bench.profile import _busy_us, kind, markdown, profiles
from equinorm.bench.step import build_steps, step_times

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


def test_busy_time_is_the_union_of_the_device_events_intervals():
    # overlapping kernels (two streams) count once; a gap is idle time
    assert _busy_us([(20.0, 30.0), (0.0, 10.0), (5.0, 15.0), (12.0, 14.0)]) == 25.0


@pytest.mark.parametrize(
    ("name", "expected"),
    [  # names as the H200's profiler writes them: cuDNN's norm kernels are not convolutions
        ("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc", "convolution"),
        ("void at::native::batch_norm_collect_statistics_channels_last_kernel<>", "normalization"),
        ("cudnn::bn_fw_tr_1C11_kernel_NCHW<float, float, int, 512, true, 1>", "normalization"),
        ("triton_red_fused__to_copy_mean_0", "triton (inductor)"),
        ("triton_poi_fused_convolution_relu_3", "triton (inductor)"),  # a conv's epilogue
        ("triton_red_fused__native_batch_norm_legit_functional_1", "normalization"),
        ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float>>", "reduction"),
        ("void at::native::vectorized_elementwise_kernel<4, FillFunctor>", "elementwise"),
    ],
)
def test_kernels_are_sorted_into_kinds(name, expected):
    assert kind(name) == expected


def test_a_profile_says_how_busy_the_device_was_and_what_filled_it():
    logged = []
    variants = [("bn", "", False), ("equi", "reference", False), ("equi", "fused", "no-such-mode")]
    found = profiles(
        "wrn",
        variants,
        torch.device("cpu"),
        rounds=2,
        steps=2,
        top=5,
        log=logged.append,
        batch_size=2,
        width_mult=0.125,
        input_size=8,
    )
    assert [p.label for p in found] == ["wrn bn, eager", "wrn equi/reference, eager"]
    assert "wrn equi/fused, no-such-mode: failed" in logged[-1]  # the others kept
    for p in found:
        assert 0 < p.busy_ms <= sum(p.by_kind.values()) + 1e-9  # the union, at most the sum
        assert p.wall_ms > 0 and p.events > 0
        times = [ms for _, _, ms in p.top]
        assert len(times) == 5 and times == sorted(times, reverse=True)
    assert found[0].by_kind.get("normalization", 0) > 0  # bn's own operators
    assert found[1].by_kind.get("reduction", 0) > found[0].by_kind.get("reduction", 0)  # m_c
    text = markdown(found, "t")
    assert text.count("| wrn ") == 2 and text.count("## wrn ") == 2


def test_each_panel_of_the_bench_figure_shows_only_what_it_measured(tmp_path, monkeypatch):
    import matplotlib.figure

    eager = [("wrn", "bn", "1.0"), ("wrn", "equi", "1.4"), ("preact_resnet152", "bn", "1.0")]
    rows = [
        {"arch": a, "norm": n, "impl": "", "compile": c, "ratio_to_bn": r, "width_mult": "1.0"}
        for c, group in (("False", eager), ("True", eager[:2]))
        for a, n, r in group
    ]
    figures = []
    keep = lambda fig, *a, **k: figures.append(fig)  # noqa: E731
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    plot(rows, "t", tmp_path / "b.png")
    eager_ax, compiled_ax = figures[0].axes
    ticks = [t.get_text().split("\n")[0] for t in compiled_ax.get_xticklabels()]
    assert ticks == ["wrn"]  # no empty preact_resnet152 slot
    assert compiled_ax.get_xlim() == eager_ax.get_xlim()  # bars as wide in both panels
    assert len(eager_ax.get_xticklabels()) == 2


def test_a_bf16_step_autocasts_on_the_batchs_device():
    # the GPU rows are bf16; a step that lost its device name failed only there (a NameError)
    steps, size = build_steps(
        "wrn",
        [("equi", "reference")],
        torch.device("cpu"),
        batch_size=2,
        width_mult=0.125,
        input_size=8,
        precision="bf16",
    )
    steps["equi", "reference"]()
    assert size == 8
