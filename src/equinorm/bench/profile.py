"""What bounds a training step: wall time against device busy time, and the kernels that fill it.

For each (norm, impl, compile mode) of one architecture, the step of :mod:`equinorm.bench.step`
is timed without a profiler (median of ``rounds`` synchronized steps), then ``torch.profiler``
records ``steps`` more. From the device's events (CUDA kernels, copies, sets; on a CPU the
top-level operators) come, per step: the busy time (the union of their intervals), how many
there are, the time per kind (convolution, fused elementwise/reduction, normalization, ...)
and the top kernels. A busy time well under the wall time says the step waits on the host
(Python, launches) and CUDA graphs or fewer, larger kernels pay; a busy time near it says the
kernels themselves bound the step (docs/performance.md reads the H200's table).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from equinorm.bench.step import build_steps, timed

#: kernel kinds by name, first match wins: normalization (cuDNN's, ATen's or inductor's kernels
#: named after batch/group norm), inductor's other Triton kernels (a convolution's fused bias or
#: ReLU is named after it, but is elementwise work), cuDNN/CUTLASS convolutions and GEMMs, ATen's
#: reduction, copy and elementwise kernels
KINDS = (
    ("normalization", r"batch_?norm|bn_|group_?norm|layer_?norm|welford"),
    ("triton (inductor)", r"^triton_"),
    ("convolution", r"conv|xmma|cudnn|cutlass|gemm|wgrad|dgrad|implicit|nhwckrsc|sm90_"),
    ("reduction", r"reduce|sum|mean"),
    ("copy/layout", r"copy|memcpy|memset|transpose|nchw|nhwc|cat"),
    ("elementwise", r"elementwise|vectorized|unrolled|foreach|multi_tensor"),
)


def kind(name: str) -> str:
    low = name.lower()
    return next((k for k, pattern in KINDS if re.search(pattern, low)), "other")


@dataclass
class Profile:
    label: str
    wall_ms: float  # median step, no profiler
    busy_ms: float  # device busy per step (union of its events' intervals)
    events: float  # device events per step
    first_step_s: float  # with torch.compile: the compilation
    by_kind: dict[str, float] = field(default_factory=dict)  # ms per step
    top: list[tuple[str, float, float]] = field(default_factory=list)  # (name, calls, ms)/step


def _busy_us(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, -np.inf
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def device_events(prof, device: torch.device) -> list:
    """The device's own events (CUDA kernels, copies), or a CPU's top-level operators."""
    if device.type == "cuda":
        return [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    return [e for e in prof.events() if e.device_type == DeviceType.CPU and e.cpu_parent is None]


def profile_step(step, device: torch.device, steps: int) -> tuple[float, float, dict, dict]:
    """(busy µs, events, {kind: µs}, {name: (calls, µs)}) per step, over ``steps`` steps."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = device_events(prof, device)
    intervals = [(e.time_range.start, e.time_range.end) for e in events]
    names: dict[str, list[float]] = {}
    kinds: dict[str, float] = {}
    for e in events:
        us = e.time_range.elapsed_us()
        calls_us = names.setdefault(e.name, [0.0, 0.0])
        calls_us[0] += 1
        calls_us[1] += us
        k = kind(e.name)
        kinds[k] = kinds.get(k, 0.0) + us
    per = 1.0 / steps
    return (
        _busy_us(intervals) * per,
        len(events) * per,
        {k: v * per for k, v in kinds.items()},
        {n: (c * per, us * per) for n, (c, us) in names.items()},
    )


def profiles(
    arch: str,
    variants: list[tuple[str, str, bool | str]],
    device: torch.device,
    *,
    rounds: int = 20,
    steps: int = 5,
    top: int = 8,
    log=print,
    **size,
) -> list[Profile]:
    """One :class:`Profile` per (norm, impl, compile) of ``arch``; ``size``: build_steps's
    batch_size, width_mult, input_size, precision, channels_last. A variant that fails is
    logged and left out (one compile mode must not cost the others)."""
    out = []
    for norm, impl, compiled in variants:
        name = "/".join(filter(None, [norm, impl]))
        mode = {False: "eager", True: "compiled"}.get(compiled, compiled)
        label = f"{arch} {name}, {mode}"
        try:
            steps_, _ = build_steps(arch, [(norm, impl)], device, compile=compiled, **size)
            step = steps_[norm, impl]
            first = timed(step, device)
            for _ in range(5):
                step()
            times = [timed(step, device) for _ in range(rounds)]
            busy, count, kinds, names = profile_step(step, device, steps)
        except Exception as exc:
            log(f"{label}: failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        ranked = sorted(names.items(), key=lambda item: -item[1][1])[:top]
        p = Profile(
            label,
            wall_ms=float(np.median(times)) * 1e3,
            busy_ms=busy / 1e3,
            events=count,
            first_step_s=first,
            by_kind={k: v / 1e3 for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            top=[(n, c, us / 1e3) for n, (c, us) in ranked],
        )
        log(
            f"{label}: wall {p.wall_ms:.2f} ms, device busy {p.busy_ms:.2f} ms "
            f"({p.events:.0f} events) per step, first step {first:.1f} s"
        )
        out.append(p)
        del steps_, step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def markdown(results: list[Profile], title: str) -> str:
    """A summary table (wall, busy, events, time per kind) and each variant's top kernels."""
    kinds = [k for k, _ in KINDS] + ["other"]
    lines = [
        f"# {title}",
        "",
        "Per training step (forward, backward, SGD). Wall: median step without the profiler; "
        "busy: the device's events' union; kinds in ms of device time, by kernel name "
        "(equinorm/bench/profile.py's KINDS, first match).",
        "",
        "| variant | wall ms | busy ms | busy/wall | events | "
        + " | ".join(kinds)
        + " | first step s |",
        "|---|" + "---:|" * (len(kinds) + 5),
    ]
    for p in results:
        cells = [f"{p.by_kind.get(k, 0.0):.2f}" for k in kinds]
        lines.append(
            f"| {p.label} | {p.wall_ms:.2f} | {p.busy_ms:.2f} | {p.busy_ms / p.wall_ms:.2f} | "
            f"{p.events:.0f} | " + " | ".join(cells) + f" | {p.first_step_s:.1f} |"
        )
    for p in results:
        lines += ["", f"## {p.label}", "", "| kernel | kind | calls | ms |", "|---|---|---:|---:|"]
        for name, calls, ms in p.top:
            short = name if len(name) <= 90 else name[:87] + "..."
            short = short.replace("|", "\\|")
            lines.append(f"| `{short}` | {kind(name)} | {calls:.0f} | {ms:.3f} |")
    return "\n".join(lines) + "\n"
