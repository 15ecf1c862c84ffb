"""Which runs an experiment expects: its sweep (``hydra.sweeper.params`` of
conf/experiment/<name>.yaml, e.g. norms equi,bn,gn x seeds 0-9 -- paper section 6.5), so that a
report counts what is missing, not only what is there."""

from __future__ import annotations

import functools
from collections import defaultdict

from equinorm import experiment as experiments


@functools.cache
def expected_seeds(experiment: str) -> dict[str, tuple[int, ...]] | None:
    """norm (its ``name``: ``equi_quarter`` is ``equi``) -> the seeds the experiment's sweep runs;
    None when ``experiment`` is not one of conf/experiment (a run named with ``name=...``) or its
    sweep names no norm and seed."""
    if experiment not in experiments.options("experiment"):
        return None
    try:
        jobs = experiments.jobs([f"experiment={experiment}"])
    except experiments.COMPOSE_ERRORS:
        return None
    out: dict[str, set[int]] = defaultdict(set)
    names: dict[str, str] = {}
    for job in jobs:
        values = dict(line.split("=", 1) for line in job)
        if "norm" not in values or "seed" not in values:
            return None
        choice = values["norm"]
        if choice not in names:
            names[choice] = experiments.compose(
                [f"experiment={experiment}", f"norm={choice}"]
            ).norm.name
        out[names[choice]].add(int(values["seed"]))
    return {norm: tuple(sorted(seeds)) for norm, seeds in out.items()} or None


__all__ = ["expected_seeds"]
