"""Layers: the EquiNorm convolution, its weight-space peers and the normalization seam."""

from equinorm.layers.affine import ChannelAffine, GroupNorm, MeanOnlyBatchNorm2d
from equinorm.layers.equiconv import (
    EquiConv2d,
    balance_signs_,
    cached_eval_kernels,
    conv_output_size,
    equi_scale_factor,
    equi_weight,
    equi_weight_reference,
    fuse_equinorm,
    input_channel_means,
)
from equinorm.layers.interop import TimmEquiConv2d, calibrate, convert_to_equinorm
from equinorm.layers.norms import NORMS, NormSpec, get_norm
from equinorm.layers.peers import StdConv2d, WNConv2d

__all__ = [
    "NORMS",
    "ChannelAffine",
    "EquiConv2d",
    "GroupNorm",
    "MeanOnlyBatchNorm2d",
    "NormSpec",
    "StdConv2d",
    "TimmEquiConv2d",
    "WNConv2d",
    "balance_signs_",
    "cached_eval_kernels",
    "calibrate",
    "conv_output_size",
    "convert_to_equinorm",
    "equi_scale_factor",
    "equi_weight",
    "equi_weight_reference",
    "fuse_equinorm",
    "get_norm",
    "input_channel_means",
]
