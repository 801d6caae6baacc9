"""Cost-aware acquisitions: the seed's EI per cost^alpha, target KG per cost and target
max-value entropy per cost."""

from mfms_bo.acquisition.base import CostAwareAcquisition, ModelAveragedAcquisition
from mfms_bo.acquisition.ei_per_cost import EIPerCost, expected_improvement, seed_alpha
from mfms_bo.acquisition.target_kg import TargetKGPerCost, knowledge_gradient
from mfms_bo.acquisition.target_mes import TargetMESPerCost, entropy_reduction, sample_minima

__all__ = [
    "CostAwareAcquisition",
    "EIPerCost",
    "ModelAveragedAcquisition",
    "TargetKGPerCost",
    "TargetMESPerCost",
    "entropy_reduction",
    "expected_improvement",
    "knowledge_gradient",
    "sample_minima",
    "seed_alpha",
]
