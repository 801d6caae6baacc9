"""mfms-bo: multi-fidelity, multi-scale Bayesian optimisation of pretraining data mixtures.

The library is usable from a notebook: build a :class:`SearchSpace`, pick a strategy with
:func:`make_strategy`, then alternate ``propose`` / run / ``recommend``.
"""

from mfms_bo.errors import MFMSError, UnknownStrategyError, ValidationError
from mfms_bo.recommend import Recommendation
from mfms_bo.space import FidelitySpace, MixtureSpace, SearchSpace
from mfms_bo.strategies import STRATEGIES, Strategy, make_strategy
from mfms_bo.trials import Measurement, TrialResult, TrialSpec

__all__ = [
    "STRATEGIES",
    "FidelitySpace",
    "MFMSError",
    "Measurement",
    "MixtureSpace",
    "Recommendation",
    "SearchSpace",
    "Strategy",
    "TrialResult",
    "TrialSpec",
    "UnknownStrategyError",
    "ValidationError",
    "make_strategy",
]
__version__ = "0.1.0"
