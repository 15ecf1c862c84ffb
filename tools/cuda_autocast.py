"""CUDA's autocast policy on the CPU: what makes GPU-only dtype bugs reproducible in CPU tests.

CPU and CUDA autocast cast different op lists: CUDA runs ``mv``, ``addmv``, ``addr``,
``linalg_vecdot``, ``prelu`` ... in the low-precision dtype and refuses ``binary_cross_entropy``,
CPU leaves them alone. :func:`cuda_policy_on_cpu` registers, for the ``AutocastCPU`` dispatch key,
a kernel for every op that CUDA's policy treats and CPU's does not, doing what CUDA's does: cast
floating inputs to the autocast dtype (low-precision list), to float32 (float32 list), or raise
(banned list). The lists come from torch's own autocast tables
(``torch.testing._internal.autocast_test_lists``, the tables torch's autocast tests check the CUDA
kernels against), and each op is kept only where the dispatcher confirms an ``AutocastCUDA``
kernel. Leaving the context deregisters the kernels.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_map

_AUTOCAST_CPU = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)


@dataclass(frozen=True)
class CudaPolicy:
    """aten overload names ("mv", "pow.Tensor_Scalar") per CUDA autocast policy."""

    lower: tuple[str, ...]
    fp32: tuple[str, ...]
    banned: tuple[str, ...]


def _names(entries) -> set[str]:
    return {e[0].strip("_") if e[0].startswith("__") else e[0] for e in entries}


def _overloads(name: str) -> list[str]:
    """``name``'s aten overloads that have a CUDA autocast kernel, as dispatcher names."""
    packet = getattr(torch.ops.aten, name, None)
    if packet is None:
        return []
    out = []
    for overload in packet.overloads():
        qualified = name if overload == "default" else f"{name}.{overload}"
        with contextlib.suppress(RuntimeError):  # overloads the dispatcher does not hold
            if torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{qualified}", "AutocastCUDA"):
                out.append(qualified)
    return out


def cuda_policy() -> CudaPolicy:
    """CUDA's autocast lists, from torch's tables, restricted to ops with an AutocastCUDA kernel."""
    from torch.testing._internal.autocast_test_lists import AutocastTestLists

    tables = AutocastTestLists(torch.device("cpu"))
    lower = _names(tables.torch_fp16 + tables.nn_fp16 + tables.linalg_fp16 + tables.methods_fp16)
    fp32 = _names(tables.torch_fp32 + tables.nn_fp32 + tables.methods_fp32)
    banned = _names(tables.banned)
    expand = lambda names: tuple(q for n in sorted(names) for q in _overloads(n))  # noqa: E731
    return CudaPolicy(expand(lower), expand(fp32), expand(banned))


def _op(qualified: str):
    name, _, overload = qualified.partition(".")
    return getattr(getattr(torch.ops.aten, name), overload or "default")


def _cast_kernel(op, target):
    """Cast eligible inputs (floating, not float64) and call ``op`` below autocast."""

    def cast(t):
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64:
            dtype = torch.get_autocast_dtype("cpu") if target is None else target
            return t.to(dtype)
        return t

    def kernel(*args, **kwargs):
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_CPU):
            args, kwargs = tree_map(cast, (args, kwargs))
            return op(*args, **kwargs)

    return kernel


def _banned_kernel(qualified: str):
    def kernel(*args, **kwargs):
        raise RuntimeError(f"{qualified} is unsafe to autocast (refused by CUDA's autocast)")

    return kernel


@contextlib.contextmanager
def cuda_policy_on_cpu():
    """Within the block, CPU autocast follows CUDA's policy; yields the :class:`CudaPolicy`."""
    policy = cuda_policy()
    lib = torch.library.Library("aten", "IMPL")
    try:
        for qualified in policy.lower + policy.fp32:
            if torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{qualified}", "AutocastCPU"):
                continue  # CPU's own kernel already casts it (the shared part of the policies)
            target = None if qualified in policy.lower else torch.float32
            lib.impl(qualified, _cast_kernel(_op(qualified), target), "AutocastCPU")
        for qualified in policy.banned:
            lib.impl(qualified, _banned_kernel(qualified), "AutocastCPU")
        yield policy
    finally:
        lib._destroy()
