"""A run's network: built from its config, and loaded trained from its record (paper section 6).

:func:`network` is the untrained network a config describes (the trainer builds its model with
it); :func:`load` rebuilds a run's network from its directory -- ``config.yaml`` and the weights of
``model.pt``, or of the newest checkpoint of an unfinished run -- in eval mode, with the input
standardization it trained with (EquiNorm nets take pixels in [0, 1], the other norms pixels
standardized per channel: paper section 5.2)::

    trained = load("results/runs/digits_demo/digits-preact_resnet18-equi/seed=0")
    logits = trained.model(trained.standardize(images))   # images: N x C x H x W in [0, 1]

Reading never writes: an unreadable checkpoint is passed over, not renamed (the trainer's resume
does that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from equinorm.data import loaders
from equinorm.data.registry import dataset_info
from equinorm.errors import EquinormError
from equinorm.experiment.checks import options
from equinorm.layers import get_norm
from equinorm.models import build_model
from equinorm.run import checkpoint as ckpt
from equinorm.run.record import RunDir


def network(cfg: DictConfig) -> nn.Module:
    """The untrained network of ``cfg``: its arch and norm, its dataset's classes and channels."""
    info = dataset_info(cfg.dataset.name)
    norm = get_norm(cfg.norm.name, **options(cfg, "norm"))
    arch = options(cfg, "arch")
    return build_model(cfg.arch.name, norm, info.num_classes, in_channels=info.channels, **arch)


def standardization(cfg: DictConfig) -> tuple[tuple, tuple] | None:
    """(mean, std) of the run's per-channel input standardization; None: pixels in [0, 1]."""
    default = get_norm(cfg.norm.name).standardize_input
    return loaders.standardization(cfg.dataset, dataset_info(cfg.dataset.name), default)


@dataclass(frozen=True)
class Trained:
    model: nn.Module  # in eval mode, on the device it was loaded to
    config: DictConfig  # the run's config.yaml
    weights: Path  # model.pt, or the checkpoint the weights come from
    epoch: int  # epochs trained
    batch: int  # batches of the next epoch trained too (a mid-epoch checkpoint); else 0
    mean: tuple | None  # the input standardization it trained with; None: pixels in [0, 1]
    std: tuple | None

    def standardize(self, images: Tensor) -> Tensor:
        """``images`` (N x C x H x W, pixels in [0, 1]) as the network saw its inputs."""
        if self.mean is None:
            return images
        mean, std = (images.new_tensor(v).view(1, -1, 1, 1) for v in (self.mean, self.std))
        return (images - mean) / std


def _weights(rundir: RunDir, cfg: DictConfig) -> tuple[dict, Path, int, int]:
    """(state dict, file, epoch, batch): model.pt, else the newest readable checkpoint."""
    if rundir.model_path.is_file():
        try:
            state = torch.load(rundir.model_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise EquinormError(f"cannot read {rundir.model_path} ({type(exc).__name__})") from exc
        return state, rundir.model_path, int((rundir.summary() or {}).get("epoch") or 0), 0
    for path in (rundir.checkpoint_path, ckpt.previous(rundir.checkpoint_path)):
        if path.is_file():
            try:
                state = ckpt.load(path)
            except ckpt.CheckpointError:
                continue
            return state["model"], path, int(state["epoch"]), int(state["batch"])
    if OmegaConf.select(cfg, "train.checkpoint") is False:
        raise EquinormError(
            f"{rundir.path} was trained with train.checkpoint=false: it kept no weights"
        )
    summary, error = rundir.summary() or {}, rundir.error()
    if summary.get("status") == "diverged":  # before its first checkpoint: none will come
        raise EquinormError(
            f"{rundir.path} diverged in epoch {summary.get('diverged_epoch')}, before any "
            "checkpoint: it has no weights"
        )
    if error is not None:  # its last attempt failed before a checkpoint
        raise EquinormError(
            f"{rundir.path} failed before any checkpoint ({error.get('error')}): it has no weights"
        )
    raise EquinormError(f"{rundir.path} has no weights yet (no model.pt, no readable checkpoint)")


def load(run: str | Path, device: str | torch.device = "cpu") -> Trained:
    """The trained network of the run directory ``run``, in eval mode on ``device``."""
    rundir = RunDir(Path(run).expanduser())
    if not rundir.config_path.is_file():
        error = rundir.error()  # a run that failed before its config was written (no dataset)
        if error is not None:
            raise EquinormError(f"{rundir.path} failed before training ({error.get('error')})")
        raise EquinormError(f"{rundir.path} is not a run directory (it has no config.yaml)")
    cfg = OmegaConf.load(rundir.config_path)
    state, path, epoch, batch = _weights(rundir, cfg)
    model = network(cfg)
    model.load_state_dict(state)
    mean, std = standardization(cfg) or (None, None)
    return Trained(model.to(device).eval(), cfg, path, epoch, batch, mean, std)


__all__ = ["Trained", "load", "network", "standardization"]
