"""Learning-rate and momentum schedules, evaluated at fractional epochs (stepped per iteration).

- ``step`` (paper 6.1): lr x gamma at each milestone; constant momentum; optional linear warm-up.
- ``superconvergence`` (paper 6.2): piecewise-linear lr and momentum through (epoch, value)
  points, the lr's values multiples of ``lr`` (the paper's "5 fold ramp ... starting at 0.1");
  momentum ``final_momentum`` after the last momentum point.
- ``cosine``: cosine annealing to ``min_lr`` after an optional linear warm-up.

With ``rescale`` a schedule written for ``length`` epochs is stretched to the run's ``epochs``
(``debug=smoke`` squeezes 300 epochs into 2 this way).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence

from equinorm.errors import ConfigError

SCHEDULES = ("step", "superconvergence", "cosine")


def _list(points) -> list:
    return [list(p) for p in points]


def _check_pairs(key: str, points) -> None:
    ok = all(
        len(p) == 2 and all(isinstance(v, int | float) and not isinstance(v, bool) for v in p)
        for p in points
    )
    if not ok:
        raise ConfigError(f"schedule.{key}={_list(points)} must be [epoch, value] number pairs")


def _interp(points: Sequence[Sequence[float]], t: float) -> float:
    xs = [p[0] for p in points]
    if t <= xs[0]:
        return float(points[0][1])
    if t >= xs[-1]:
        return float(points[-1][1])
    i = bisect.bisect_right(xs, t) - 1
    (x0, y0), (x1, y1) = points[i], points[i + 1]
    return float(y0 + (y1 - y0) * (t - x0) / (x1 - x0))


class Schedule:
    """``schedule(t) -> (lr, momentum)`` for ``t`` in epochs since the start (fractional)."""

    def __init__(self, cfg: Mapping, epochs: int) -> None:
        self.name = cfg["name"]
        if self.name not in SCHEDULES:
            raise ConfigError(f"schedule.name={self.name!r} is not one of {', '.join(SCHEDULES)}")
        self.cfg = cfg
        length = float(cfg.get("length") or epochs)
        self.scale = length / epochs if cfg.get("rescale") else 1.0
        self.epochs = epochs
        self._check(epochs)

    def _check(self, epochs: int) -> None:
        cfg, horizon = self.cfg, epochs * self.scale + 1e-9
        if self.name == "step":
            late = [m for m in cfg["milestones"] if m > horizon]
            if late:
                raise ConfigError(
                    f"schedule.milestones={list(cfg['milestones'])} exceed epochs={epochs}: "
                    "raise epochs, move the milestones, or set schedule.rescale=true"
                )
            if list(cfg["milestones"]) != sorted(cfg["milestones"]):
                raise ConfigError("schedule.milestones must be increasing")
            if not 0 < cfg["gamma"] <= 1:
                raise ConfigError(f"schedule.gamma={cfg['gamma']} must be in (0, 1]")
        if self.name == "superconvergence":
            for key in ("lr_points", "momentum_points"):
                _check_pairs(key, cfg[key])
                xs = [p[0] for p in cfg[key]]
                if xs != sorted(xs) or len(set(xs)) != len(xs) or len(xs) < 2:
                    raise ConfigError(f"schedule.{key} needs >= 2 points at increasing epochs")
            for key, values in (
                ("lr_points", [p[1] for p in cfg["lr_points"]]),
                ("momentum_points", [p[1] for p in cfg["momentum_points"]]),
            ):
                if cfg[key][0][0] < 0:
                    raise ConfigError(f"schedule.{key} start at epoch {cfg[key][0][0]} < 0")
                if key == "lr_points" and min(values) < 0:
                    raise ConfigError(f"schedule.lr_points={_list(cfg[key])}: a multiple < 0")
                if key == "momentum_points" and not all(0 <= v < 1 for v in values):
                    raise ConfigError(f"schedule.momentum_points={_list(cfg[key])}: not in [0, 1)")
            if not 0 <= cfg["final_momentum"] < 1:
                raise ConfigError(f"schedule.final_momentum={cfg['final_momentum']} not in [0, 1)")
            if cfg["lr_points"][-1][0] > horizon:
                raise ConfigError(
                    f"schedule.lr_points end at epoch {cfg['lr_points'][-1][0]} > "
                    f"epochs={epochs}: raise epochs or set schedule.rescale=true"
                )
        if cfg["lr"] <= 0:
            raise ConfigError(f"schedule.lr={cfg['lr']} must be > 0")
        if self.name in ("step", "cosine"):
            warm = cfg.get("warmup_epochs", 0)
            if warm < 0:
                raise ConfigError(f"schedule.warmup_epochs={warm} must be >= 0")
            if warm and warm >= epochs * self.scale:  # in the schedule's epochs, as milestones
                run = f"epochs={epochs}" if self.scale == 1 else f"schedule.length={cfg['length']}"
                raise ConfigError(
                    f"schedule.warmup_epochs={warm} is not shorter than the run ({run}): the lr "
                    "would never reach schedule.lr"
                )
            if not 0 <= cfg["momentum"] < 1:
                raise ConfigError(f"schedule.momentum={cfg['momentum']} must be in [0, 1)")
        if self.name == "cosine" and not 0 <= cfg["min_lr"] <= cfg["lr"]:
            raise ConfigError(
                f"schedule.min_lr={cfg['min_lr']} must be in [0, schedule.lr={cfg['lr']}]"
            )

    def __call__(self, t: float) -> tuple[float, float]:
        t = t * self.scale
        cfg = self.cfg
        if self.name == "superconvergence":
            lr = cfg["lr"] * _interp(cfg["lr_points"], t)
            last = cfg["momentum_points"][-1][0]
            mom = cfg["final_momentum"] if t >= last else _interp(cfg["momentum_points"], t)
            return lr, float(mom)
        warm = float(cfg.get("warmup_epochs", 0))
        if self.name == "step":
            lr = cfg["lr"] * cfg["gamma"] ** bisect.bisect_right(list(cfg["milestones"]), t)
        else:
            total = self.epochs * self.scale
            p = min(max((t - warm) / max(total - warm, 1e-12), 0.0), 1.0)
            lr = cfg["min_lr"] + (cfg["lr"] - cfg["min_lr"]) * 0.5 * (1 + math.cos(math.pi * p))
        if warm > 0 and t < warm:
            lr *= t / warm
        return float(lr), float(cfg["momentum"])
