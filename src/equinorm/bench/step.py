"""Training-step time per architecture x norm: forward, backward and SGD step, norms interleaved.

Every norm's model is built once; then each timed round runs one step of every norm in turn, so
slow drifts of the machine (thermal, other load) hit all norms alike. Reported per norm: the
median step time and its 25%/75% percentiles over the rounds after warm-up, images per second,
peak device memory (CUDA), and the ratio to BatchNorm -- the median over rounds of the *paired*
ratio (this norm's step over BatchNorm's step of the same round), with its quartiles, which is
robust to the bursts of a shared machine. Inputs are random tensors already on the
device: this measures the model, not the input pipeline (see :mod:`equinorm.bench.loader`).
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch
from torch.nn import functional as F

from equinorm.models import build_model

INPUT_SIZE = {"resnet50": 224}  # CIFAR-style nets see 32x32


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model, optimizer, x, y, precision: str, device: torch.device):
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )

    def step():
        with autocast:
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def step_times(
    arch: str,
    norms: list[str],
    device: torch.device,
    *,
    batch_size: int = 32,
    width_mult: float = 1.0,
    input_size: int | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    warmup: int = 5,
    rounds: int = 25,
) -> list[dict]:
    size = input_size or INPUT_SIZE.get(arch, 32)
    classes = 1000 if arch == "resnet50" else 10
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 3, size, size, generator=g).to(device, memory_format=fmt)
    y = torch.randint(0, classes, (batch_size,), generator=g).to(device)
    steps, models = {}, {}
    for norm in norms:
        torch.manual_seed(0)
        options = {"width_mult": width_mult}
        if arch == "resnet50" and size < 64:
            options["small_input"] = True
        model = build_model(arch, norm, classes, **options).to(device, memory_format=fmt)
        run = torch.compile(model) if compile else model
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        models[norm] = model
        steps[norm] = make_step(run, opt, x, y, precision, device)
    peak = {}
    for norm in norms:  # warm-up (and compilation), and the peak memory of one step alone
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(warmup):
            steps[norm]()
        _sync(device)
        peak[norm] = (
            torch.cuda.max_memory_allocated(device) / 2**20
            if device.type == "cuda"
            else float("nan")
        )
    times = {norm: [] for norm in norms}
    for _ in range(rounds):
        for norm in norms:
            _sync(device)
            t0 = time.perf_counter()
            steps[norm]()
            _sync(device)
            times[norm].append(time.perf_counter() - t0)
    rows = []
    base = np.array(times["bn"]) if "bn" in times else None
    for norm in norms:
        q25, med, q75 = np.percentile(np.array(times[norm]) * 1e3, [25, 50, 75])
        paired = np.array(times[norm]) / base if base is not None else None
        r25, r50, r75 = np.percentile(paired, [25, 50, 75]) if paired is not None else [None] * 3
        rows.append(
            {
                "arch": arch,
                "norm": norm,
                "width_mult": width_mult,
                "batch_size": batch_size,
                "input_size": size,
                "precision": precision,
                "channels_last": channels_last,
                "compile": compile,
                "rounds": rounds,
                "step_ms": round(float(med), 3),
                "step_ms_q25": round(float(q25), 3),
                "step_ms_q75": round(float(q75), 3),
                "images_per_s": round(batch_size / (med / 1e3), 1),
                "peak_mem_mb": round(peak[norm], 1),
                "ratio_to_bn": None if r50 is None else round(float(r50), 3),
                "ratio_q25": None if r25 is None else round(float(r25), 3),
                "ratio_q75": None if r75 is None else round(float(r75), 3),
            }
        )
    return rows
