"""``python -m equinorm.train --help``: this suite's own help -- the experiments, the groups and
their real options, examples and where the manual is -- printed before torch or a config is
loaded (Hydra's generic page, ``--hydra-help``, lists its internals too).
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

from equinorm.experiment import CONF_DIR, GROUPS, options

EXAMPLES = """\
  python -m equinorm.train                                        # the demo's run (digits, CPU)
  python -m equinorm.train experiment=cifar10_wrn_short norm=bn seed=3
  python -m equinorm.train -m experiment=digits_demo schedule.lr=0.05,0.1   # any key sweeps
  python -m equinorm.train -m experiment=cifar10_wrn_short hydra/launcher=submitit_slurm_gpu
  python -m equinorm.train -m experiment=digits_demo hparams_search=optuna_lr dataset.val_size=300
  torchrun --nproc_per_node=2 -m equinorm.train experiment=svhn_wrn_mixup norm=bn seed=0"""


# Hydra's and the submitit plugin's launchers, listed before our SLURM presets (conf/hydra/launcher)
LAUNCHERS = ("basic (here)", "submitit_local (jobs side by side, here)")


def usage() -> str:
    groups = [("experiment", options("experiment")), *((g, options(g)) for g in GROUPS)]
    groups += [
        ("hparams_search", options("hparams_search")),
        ("debug", options("debug")),
        ("hydra/launcher", [*LAUNCHERS, *options("hydra/launcher")]),
    ]
    width = max(len(g) for g, _ in groups)
    # the configs' folder as the user can open it: conf/ in a checkout, inside site-packages in a
    # wheel's install
    conf = os.path.relpath(CONF_DIR) if CONF_DIR.is_relative_to(Path.cwd()) else str(CONF_DIR)
    listed = "\n".join(
        textwrap.fill(
            ", ".join(opts),
            100,
            initial_indent=f"  {g:<{width}}  ",
            subsequent_indent=" " * (width + 4),
            break_on_hyphens=False,
        )
        for g, opts in groups
    )
    return f"""\
usage: python -m equinorm.train [-m] [GROUP=OPTION ...] [KEY=VALUE ...]

Trains one run, or with -m every job of a sweep (the experiment's own sweep, and any key given
as a,b,c); finished runs are skipped, interrupted ones resume. Without arguments: the embedded
demo's run (EquiNorm on scikit-learn's digits, under a minute on a CPU).

groups (GROUP=OPTION):
{listed}

keys (KEY=VALUE): every key of the composed config, e.g. seed=3 epochs=30 schedule.lr=0.05
  train.device=cuda arch.width_mult=0.5; each is explained where it is defined, in train.yaml
  and <group>/<option>.yaml under {conf}; --cfg job prints a run's.

examples:
{EXAMPLES}

then: equinorm-report --results results (figures, tables); equinorm-evaluate results (each
trained run scored again from its model.pt); equinorm-tune experiment=X (each norm at its own lr)

more: README.md; docs/runs.md (runs, resume, sweeps, identity), docs/cluster.md (SLURM);
Hydra's own flags: --hydra-help; --version: this code's commit and its libraries"""


def maybe_help(argv: list[str]) -> bool:
    """Print :func:`usage` and return True when ``argv`` asks for help."""
    if "-h" in argv or "--help" in argv:
        try:
            print(usage(), flush=True)
        except BrokenPipeError:  # `--help | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return True
    return False


__all__ = ["maybe_help", "usage"]
