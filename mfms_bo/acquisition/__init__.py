"""Cost-aware acquisitions: the seed's EI per cost^alpha and target KG per cost."""

from mfms_bo.acquisition.base import CostAwareAcquisition
from mfms_bo.acquisition.bundle import BundleValue, bundle_knowledge_gradient, choose_fidelity
from mfms_bo.acquisition.ei_per_cost import EIPerCost, expected_improvement, seed_alpha
from mfms_bo.acquisition.target_kg import TargetKGPerCost, knowledge_gradient

__all__ = [
    "BundleValue",
    "CostAwareAcquisition",
    "EIPerCost",
    "TargetKGPerCost",
    "bundle_knowledge_gradient",
    "choose_fidelity",
    "expected_improvement",
    "knowledge_gradient",
    "seed_alpha",
]
