"""The paper's networks (docs/spec.md section 3), each pluggable in every norm of the seam."""

from equinorm.models.base import StagedNet
from equinorm.models.registry import ARCHS, arch_options, build_model, count_parameters

__all__ = ["ARCHS", "StagedNet", "arch_options", "build_model", "count_parameters"]
