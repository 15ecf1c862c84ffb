"""equinorm: Equilibrium Normalization of weights (EquiNorm, ICLR 2019 submission), reproduced.

Subpackages: ``layers`` (EquiConv2d and the normalization seam), ``models`` (the paper's
networks), ``data`` (datasets and the device-resident loader), ``train`` (the Hydra trainer) and
``report`` (the paper's median/IQR figures and tables).
"""

__version__ = "0.1.0"
