"""Training-step time per architecture x norm: forward, backward and SGD step, norms interleaved.

Every norm's model is built once; then each timed round runs one step of every norm in turn, so
slow drifts of the machine (thermal, other load) hit all norms alike. Reported per norm: the
median step time and its 25%/75% percentiles over the rounds after warm-up, images per second,
peak device memory (CUDA), and the ratio to BatchNorm -- the median over rounds of the *paired*
ratio (this norm's step over BatchNorm's step of the same round), with its quartiles, which is
robust to the bursts of a shared machine. Inputs are random tensors already on the
device: this measures the model, not the input pipeline (see :mod:`equinorm.bench.loader`).

The first step of each model is timed on its own (``first_step_s``): with ``torch.compile`` it
holds the compilation, which is reported, not hidden in a warm-up. EquiNorm can be measured in
several implementations (``equi_impls``: ``fused``, ``reference``; rows carry ``impl``). On CUDA
``cudnn.benchmark`` is on, as in training: shapes are fixed.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch
from torch.nn import functional as F

from equinorm.models import build_model
from equinorm.models.compiling import compiled

INPUT_SIZE = {"resnet50": 224}  # CIFAR-style nets see 32x32


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, device: torch.device) -> float:
    """Seconds of one ``step()``, the device's queue drained before and after."""
    _sync(device)
    t0 = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - t0


def make_step(model, optimizer, x, y, precision: str):
    autocast = (
        torch.autocast(x.device.type, dtype=torch.bfloat16)
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


def variants(norms: list[str], equi_impls: tuple[str, ...] = ("fused",)) -> list[tuple[str, str]]:
    """(norm, impl) of each model to time: EquiNorm once per implementation, the others once."""
    out = []
    for norm in norms:
        out += [(norm, impl) for impl in equi_impls] if norm == "equi" else [(norm, "")]
    return out


def build_steps(
    arch: str,
    keys: list[tuple[str, str]],
    device: torch.device,
    *,
    batch_size: int = 32,
    width_mult: float = 1.0,
    input_size: int | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool | str = False,
) -> tuple[dict, int]:
    """One training step (a closure) per (norm, impl) of :func:`variants`, and the image size.

    ``compile``: False (eager), True (``torch.compile``'s default mode) or a mode's name
    (``reduce-overhead``: CUDA graphs, each step marked as a new one)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    size = input_size or INPUT_SIZE.get(arch, 32)
    classes = 1000 if arch == "resnet50" else 10
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 3, size, size, generator=g).to(device, memory_format=fmt)
    y = torch.randint(0, classes, (batch_size,), generator=g).to(device)
    steps = {}
    for norm, impl in keys:
        torch.manual_seed(0)
        options = {"width_mult": width_mult}
        if arch == "resnet50" and size < 64:
            options["small_input"] = True
        norm_options = {"impl": impl} if impl else None
        model = build_model(arch, norm, classes, norm_options=norm_options, **options)
        model = model.to(device, memory_format=fmt)
        mode = compile if isinstance(compile, str) else "default"
        run = compiled(model, mode) if compile else model
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        steps[norm, impl] = make_step(run, opt, x, y, precision)
    return steps, size


def step_times(
    arch: str,
    norms: list[str],
    device: torch.device,
    *,
    warmup: int = 5,
    rounds: int = 25,
    equi_impls: tuple[str, ...] = ("fused",),
    log=None,
    **setting,
) -> list[dict]:
    """One row per (norm, impl); ``setting``: :func:`build_steps`'s batch_size, width_mult,
    input_size, precision, channels_last, compile; ``log(text)`` hears each model's first step as
    it is taken."""
    keys = variants(norms, equi_impls)
    setting = build_steps.__kwdefaults__ | setting  # every row records the whole setting
    steps, size = build_steps(arch, keys, device, **setting)
    peak, first, warm = {}, {}, {}
    for key in keys:  # the first step (compilation), warm-up, the peak memory of one step alone
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        steps[key]()
        _sync(device)
        first[key] = time.perf_counter() - t0
        if log is not None:
            log(f"  {'/'.join(filter(None, key))}: first step {first[key]:.1f} s")
        for _ in range(warmup - 1):
            steps[key]()
        _sync(device)
        warm[key] = time.perf_counter() - t0
        peak[key] = (
            torch.cuda.max_memory_allocated(device) / 2**20
            if device.type == "cuda"
            else float("nan")
        )
    times = {key: [] for key in keys}
    for _ in range(rounds):
        for key in keys:
            times[key].append(timed(steps[key], device))
    rows = []
    base = np.array(times["bn", ""]) if ("bn", "") in times else None
    for key in keys:
        norm, impl = key
        q25, med, q75 = np.percentile(np.array(times[key]) * 1e3, [25, 50, 75])
        paired = np.array(times[key]) / base if base is not None else None
        r25, r50, r75 = np.percentile(paired, [25, 50, 75]) if paired is not None else [None] * 3
        rows.append(
            {
                "arch": arch,
                "norm": norm,
                "impl": impl,
                "width_mult": setting["width_mult"],
                "batch_size": setting["batch_size"],
                "input_size": size,
                **{k: setting[k] for k in ("precision", "channels_last", "compile")},
                "rounds": rounds,
                "step_ms": round(float(med), 3),
                "step_ms_q25": round(float(q25), 3),
                "step_ms_q75": round(float(q75), 3),
                "images_per_s": round(setting["batch_size"] / (med / 1e3), 1),
                "peak_mem_mb": round(peak[key], 1),
                "first_step_s": round(first[key], 3),  # with torch.compile: the compilation
                "warmup_s": round(warm[key], 3),
                "ratio_to_bn": None if r50 is None else round(float(r50), 3),
                "ratio_q25": None if r25 is None else round(float(r25), 3),
                "ratio_q75": None if r75 is None else round(float(r75), 3),
            }
        )
    return rows
