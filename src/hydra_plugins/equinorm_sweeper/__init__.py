"""Hydra finds sweepers only in the ``hydra_plugins`` package (and only classes defined here):
equinorm's is :class:`equinorm.launch.sweeper.Sweeper` -- finished runs are not launched again
and the sweep ends with its tally."""

from equinorm.launch.sweeper import Sweeper


class SkipFinishedSweeper(Sweeper):
    """``hydra/sweeper=equinorm`` (conf/hydra/sweeper/equinorm.yaml)."""
