"""The MFMS-GP surrogate over (mixture, log model size, log steps)."""

from mfms_bo.surrogate.ensemble import SurrogateEnsemble, size_lengthscale_ensemble
from mfms_bo.surrogate.kernels import KERNEL_DESIGNS, build_kernel, build_mean
from mfms_bo.surrogate.mfms_gp import MFMSGP, SurrogateConfig, thin_observations

__all__ = [
    "KERNEL_DESIGNS",
    "MFMSGP",
    "SurrogateConfig",
    "SurrogateEnsemble",
    "build_kernel",
    "build_mean",
    "size_lengthscale_ensemble",
    "thin_observations",
]
