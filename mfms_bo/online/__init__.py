"""In-run (online) data mixing: controllers that set each batch's mixture from per-domain
validation losses. See :mod:`mfms_bo.online.controller` for the training-loop contract."""

from mfms_bo.online.aioli import Aioli, egd_step, normalize_interaction, smoothed_one_hot, unsmooth
from mfms_bo.online.controller import MixingController, Static, Stratified, check_mixture
from mfms_bo.online.spec import METHODS, controller_from_spec

__all__ = ["Aioli", "MixingController", "Static", "Stratified", "check_mixture",
           "controller_from_spec", "METHODS", "egd_step", "normalize_interaction",
           "smoothed_one_hot", "unsmooth"]
