"""The MFMS-GP surrogate over (mixture, log model size, log steps)."""

from mfms_bo.surrogate.kernels import KERNEL_DESIGNS, build_kernel, build_mean
from mfms_bo.surrogate.mfms_gp import MFMSGP, PosteriorPoints, SurrogateConfig, thin_observations

__all__ = [
    "KERNEL_DESIGNS",
    "MFMSGP",
    "PosteriorPoints",
    "SurrogateConfig",
    "build_kernel",
    "build_mean",
    "thin_observations",
]
