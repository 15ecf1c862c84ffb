"""What the paper reports per experiment (docs/spec.md section 5): final test accuracy, median of
10 seeds with the 25%/75% percentiles where the paper gives them (ImageNet: 3 seeds, medians
only)."""

from __future__ import annotations

from dataclasses import dataclass

#: display names and colours of the norms, used by every figure and table
NORM_NAMES = {
    "equi": "EquiNorm",
    "bn": "BatchNorm",
    "gn": "GroupNorm",
    "ws_gn": "WS+GroupNorm",
    "wn": "WeightNorm",
    "none": "No norm",
}
# Okabe & Ito's colour-blind safe palette, with a line style each (distinct in grey print too)
NORM_COLORS = {
    "equi": "#D55E00",  # vermillion
    "bn": "#0072B2",  # blue
    "gn": "#009E73",  # bluish green
    "ws_gn": "#CC79A7",  # reddish purple
    "wn": "#E69F00",  # orange
    "none": "#000000",  # black
}
NORM_STYLES = {"equi": "-", "bn": "--", "gn": "-.", "ws_gn": ":", "wn": (0, (5, 1)), "none": ":"}
NORM_MARKERS = {"equi": "o", "bn": "s", "gn": "^", "ws_gn": "D", "wn": "v", "none": "x"}
NORM_ORDER = list(NORM_NAMES)
# a norm of another package (docs/runs.md): the next of these colours and markers, in the order
# the report first draws such norms (sorted by name), the same in every figure of the report
OTHER_COLORS = ["#882255", "#44AA99", "#332288", "#999933", "#56B4E9", "#999999"]
OTHER_MARKERS = ["P", "*", "h", "X", "p", "d"]
_others: list[str] = []


def _other(norm: str, choices: list):
    if norm not in _others:
        _others.append(norm)
    return choices[_others.index(norm) % len(choices)]


def norm_color(norm: str) -> str:
    return NORM_COLORS.get(norm) or _other(norm, OTHER_COLORS)


def norm_line(norm: str):
    return NORM_STYLES.get(norm, "-")


def norm_marker(norm: str) -> str:
    return NORM_MARKERS.get(norm) or _other(norm, OTHER_MARKERS)


@dataclass(frozen=True)
class PaperResult:
    median: float
    q25: float | None = None
    q75: float | None = None
    seeds: int = 10

    def text(self) -> str:
        if self.q25 is None:
            return f"{self.median:.2f}"
        return f"{self.median:.2f} ({self.q25:.2f}-{self.q75:.2f})"


@dataclass(frozen=True)
class PaperExperiment:
    where: str  # figure or section of the paper
    results: dict[str, PaperResult]
    note: str = ""


PAPER: dict[str, PaperExperiment] = {
    "cifar10_wrn_overfit": PaperExperiment(
        "Fig. 2", {}, "no final numbers; EquiNorm's test loss rises after the first decay"
    ),
    "cifar10_wrn_quarter": PaperExperiment(
        "Sec. 6.1",
        {"bn": PaperResult(94.7), "equi": PaperResult(95.8)},
        "EquiNorm statistics from the first quarter of each batch",
    ),
    "cifar10_preresnet152_mixup": PaperExperiment(
        "Fig. 4a",
        {
            "bn": PaperResult(96.93, 96.77, 96.99),
            "equi": PaperResult(96.87, 96.84, 97.04),
            "gn": PaperResult(97.04, 96.99, 97.13),
        },
    ),
    "cifar100_preresnet152_mixup": PaperExperiment(
        "Fig. 4b",
        {
            "bn": PaperResult(81.42, 81.21, 81.81),
            "equi": PaperResult(81.49, 81.30, 81.80),
            "gn": PaperResult(82.10, 81.92, 82.33),
        },
    ),
    "svhn_wrn_mixup": PaperExperiment(
        "Fig. 4c", {}, "no numbers; EquiNorm ~ BatchNorm, GroupNorm lower"
    ),
    "imagenet_resnet50": PaperExperiment(
        "Fig. 4d",
        {
            "bn": PaperResult(76.53, seeds=3),
            "equi": PaperResult(74.88, seeds=3),
            "gn": PaperResult(76.90, seeds=3),
        },
    ),
    "cifar10_wrn_short": PaperExperiment(
        "Fig. 3",
        {"bn": PaperResult(93.3), "equi": PaperResult(94.0)},
        "IQR widths: BatchNorm 0.77, EquiNorm 0.22",
    ),
}


def norm_label(norm: str) -> str:
    return NORM_NAMES.get(norm, norm)


def norm_sort_key(norm: str) -> tuple[int, str]:
    return (NORM_ORDER.index(norm) if norm in NORM_ORDER else len(NORM_ORDER), norm)
