"""Types of the config keys: Hydra structured configs (dataclasses in Hydra's ConfigStore).

Each group's YAML file (conf/<group>/<option>.yaml) starts from its schema here
(``defaults: [/schema/<group>/<kind>@_here_, ...]``), and conf/train.yaml's own keys from
:class:`Root` (``name=1`` is the folder "1", ``seed=true`` is refused), so a value of the wrong
type or an unknown choice fails while the config is composed -- ``schedule.lr=abc`` is "Value
'abc' of type 'str' could not be converted to Float", ``train.precision=fp8`` lists the valid
values -- before any file is written, and an unknown key is refused. Each option has the keys it
uses and no others (mixup ``none`` has no ``alpha``), so a key that would change nothing cannot be
set. The keys are explained where their values are set, in the YAML files; ranges and relations
between keys are checked by :mod:`equinorm.experiment.checks` and by the constructors that own
them. Choices are ``str`` Enums: ``cfg.train.precision == "bf16"`` reads as the YAML writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Loader(str, Enum):
    auto = "auto"
    device = "device"
    torch = "torch"


class CompileMode(str, Enum):  # torch.compile's modes, "-" written "_" (Hydra takes names)
    default = "default"
    reduce_overhead = "reduce_overhead"
    max_autotune = "max_autotune"
    max_autotune_no_cudagraphs = "max_autotune_no_cudagraphs"


class Impl(str, Enum):
    fused = "fused"
    reference = "reference"


class Loss(str, Enum):
    bce = "bce"
    ce = "ce"


class Optimizer(str, Enum):
    sgd = "sgd"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class WandbMode(str, Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"
    dryrun = "offline"  # wandb's own older names (a WANDB_MODE=dryrun of other projects'), aliases
    run = "online"


# -- dataset ------------------------------------------------------------------------------------


@dataclass
class Augment:
    crop_padding: int = 4
    flip: bool = True
    random_resized_crop: bool = False
    eval_resize: int | None = None


@dataclass
class Dataset:
    name: str = MISSING
    root: str = "data"
    download: bool = True
    verify: bool = True
    standardize: bool | None = None
    loader: Loader = Loader.auto
    workers: int = 8
    drop_last: bool = False
    val_size: int = 0
    augment: Augment = field(default_factory=Augment)


@dataclass
class Digits(Dataset):
    split_seed: int = 0
    test_fraction: float = 0.2


@dataclass
class SVHN(Dataset):
    extra: bool = True


# -- architecture and normalization -------------------------------------------------------------


@dataclass
class Arch:
    name: str = MISSING
    width_mult: float = 1.0
    zero_init_residual: bool = False


@dataclass
class ResNet(Arch):
    small_input: bool = False


@dataclass
class PreActResNet(Arch):
    final_norm: bool = False


@dataclass
class Norm:
    name: str = MISSING


@dataclass
class EquiNorm(Norm):
    single_pass: bool = True
    stat_fraction: float = 1.0
    momentum: float = 0.1
    detach_stats: bool = False
    eps: float = 0.0
    impl: Impl = Impl.fused


@dataclass
class BatchNorm(Norm):  # bn, and wn's mean-only BatchNorm
    momentum: float = 0.1


@dataclass
class GroupNorm(Norm):
    groups: int = 32


@dataclass
class WSGroupNorm(GroupNorm):
    eps: float = 1e-6


# -- schedule, optimizer, mixup -----------------------------------------------------------------


@dataclass
class Schedule:
    name: str = MISSING
    rescale: bool = False
    length: int = MISSING


@dataclass
class Step(Schedule):
    lr: float = 0.1
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    momentum: float = 0.9
    warmup_epochs: float = 0.0


@dataclass
class Cosine(Schedule):
    lr: float = 0.1
    min_lr: float = 0.0
    momentum: float = 0.9
    warmup_epochs: float = 0.0


@dataclass
class SuperConvergence(Schedule):
    # (epoch, value) pairs; OmegaConf cannot convert ints inside nested float lists, so the
    # pairs' numbers are checked in train/schedules.py
    lr: float = 0.1
    lr_points: list[Any] = field(default_factory=list)
    momentum_points: list[Any] = field(default_factory=list)
    final_momentum: float = 0.85


@dataclass
class SGD:
    name: Optimizer = Optimizer.sgd
    weight_decay: float = 1e-4
    nesterov: bool = False
    no_decay_max_rank: int = -1


@dataclass
class NoMixup:  # mixup=none: nothing to set
    name: str = "none"


@dataclass
class Mixup:
    name: str = MISSING
    alpha: float = 6.0
    loss: Loss = Loss.bce
    points: list[int] = field(default_factory=list)


# -- conf/train.yaml: its top-level keys, its train and wandb nodes ----------------------------


@dataclass
class Root:  # the primary config's own keys (Hydra: a structured config as its schema)
    name: str = "default"
    seed: int = 0
    epochs: int = 300
    results_dir: str = "results"
    run_dir: str | None = None
    variant: Any = None
    dataset: Any = MISSING  # the groups, typed by their own schemas
    arch: Any = MISSING
    norm: Any = MISSING
    schedule: Any = MISSING
    optim: Any = MISSING
    mixup: Any = MISSING
    train: Any = MISSING
    wandb: Any = MISSING


@dataclass
class Train:
    batch_size: int = 128
    devices: int | None = None
    eval_batch_size: int = 512
    device: str = "auto"
    precision: Precision = Precision.auto
    channels_last: Any = "auto"  # auto | true | false
    compile: bool = False
    compile_mode: CompileMode = CompileMode.default
    threads: int | None = None
    max_train_batches: int | None = None
    max_eval_batches: int | None = None
    checkpoint: bool = True
    resume: bool = True
    progress: Any = "auto"  # auto | true | false
    equilibrium_stats: bool = False
    fail_on_divergence: bool = False


@dataclass
class Wandb:
    mode: WandbMode = WandbMode.offline
    project: str = "equinorm"
    entity: str | None = None
    dir: str = "results"


SCHEMAS = {
    "dataset": {"base": Dataset, "digits": Digits, "svhn": SVHN},
    "arch": {"base": Arch, "resnet": ResNet, "preact_resnet": PreActResNet},
    "norm": {
        "base": Norm,
        "equi": EquiNorm,
        "bn": BatchNorm,
        "gn": GroupNorm,
        "ws_gn": WSGroupNorm,
    },
    "schedule": {"step": Step, "cosine": Cosine, "superconvergence": SuperConvergence},
    "optim": {"sgd": SGD},
    "mixup": {"base": Mixup, "none": NoMixup},
    "train": {"train": Train},
    "wandb": {"wandb": Wandb},
    "root": {"root": Root},
}


def register() -> None:
    """Put every schema into Hydra's ConfigStore as ``schema/<group>/<kind>`` (idempotent)."""
    store = ConfigStore.instance()
    for group, kinds in SCHEMAS.items():
        for kind, node in kinds.items():
            store.store(group=f"schema/{group}", name=kind, node=node)
