"""The training setup behind a cell of runs, as a reader of a figure or table needs it: the global
batch (devices x per-device batch -- paper 6.3 trains SVHN on 2 GPUs with 128 images each) and the
width multiplier (1 = the paper's networks, docs/spec.md section 3), and the precision where runs
differ in it (``train.precision=auto`` is bf16 on a GPU, fp32 on a CPU). Read from each run's
``summary.json``; a cell whose runs disagree says so rather than printing one of them.
"""

from __future__ import annotations

import pandas as pd

SETUP = ["global_batch", "batch_size", "devices", "width_mult", "precision"]


def _values(runs: pd.DataFrame, col: str) -> list:
    if col not in runs:
        return []
    return sorted({v for v in runs[col] if v is not None and not pd.isna(v)})


def _num(v) -> str:
    return f"{int(v)}" if float(v).is_integer() else f"{v:g}"


def describe(runs: pd.DataFrame) -> str:
    """E.g. ``global batch 256 (2 devices x 128), width x1`` ; '' when no run recorded it.

    Runs that disagree (a sweep resumed with another ``train.devices``, old and new runs mixed)
    give every value: ``global batch 128 / 256 (runs differ)``.
    """
    parts = []
    batches = _values(runs, "global_batch")
    if len(batches) == 1:
        text = f"global batch {_num(batches[0])}"
        devices, per_device = _values(runs, "devices"), _values(runs, "batch_size")
        if len(devices) == 1 and len(per_device) == 1 and devices[0] > 1:
            text += f" ({_num(devices[0])} devices x {_num(per_device[0])})"
        parts.append(text)
    elif batches:
        parts.append("global batch " + " / ".join(_num(b) for b in batches) + " (runs differ)")
    widths = _values(runs, "width_mult")
    if widths:
        differ = " (runs differ)" if len(widths) > 1 else ""
        parts.append("width x" + " / x".join(_num(w) for w in widths) + differ)
    precisions = _values(runs, "precision")  # auto: bf16 on a GPU, fp32 on a CPU
    if len(precisions) > 1:
        parts.append("precision " + " / ".join(precisions) + " (runs differ)")
    return ", ".join(parts)


__all__ = ["SETUP", "describe"]
