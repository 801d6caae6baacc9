"""The benchmark problem protocol (DESIGN section 5) and its bridge to a :class:`SearchSpace`.

Any object with these attributes and methods is a problem: the shipped simulated and
pool-based ones, or a user's, loaded with ``mfms bench --problem path/to/file.py:NAME``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from mfms_bo.space import FidelitySpace, MixtureSpace, SearchSpace

__all__ = ["Problem", "search_space_of"]


@runtime_checkable
class Problem(Protocol):
    name: str
    domains: list[str]  # mixture coordinates, in order
    model_sizes: list[float]  # runnable sizes (parameter counts)
    steps: tuple[int, int]  # (min, max); max is the target steps
    target_model_size: float  # may exceed max(model_sizes)
    checkpoints: int  # evaluations per trial
    objective_weights: dict[str, float] | None  # None = uniform over domains
    candidates: list[dict[str, float]] | None  # a finite pool of mixtures, or None

    def evaluate(
        self, mixture: dict[str, float], model_size: float, steps: int, seed: int
    ) -> list[tuple[int, dict[str, float]]]:
        """(step, {domain: validation loss}) at each checkpoint up to ``steps``, noisy."""
        ...

    def cost(self, model_size: float, steps: int) -> float: ...

    def true_objective(self, mixture: dict[str, float]) -> float:
        """Noise-free objective at the target fidelity: scores recommendations."""
        ...

    def optimum(self) -> float | None: ...


def search_space_of(problem: Problem) -> SearchSpace:
    """The :class:`SearchSpace` a strategy searches for ``problem``."""
    mixtures = MixtureSpace(tuple(problem.domains))
    fid = FidelitySpace(
        model_sizes=tuple(problem.model_sizes),
        steps_min=int(problem.steps[0]),
        steps_max=int(problem.steps[1]),
        target_model_size=float(problem.target_model_size),
        target_steps=int(problem.steps[1]),
        checkpoints=int(problem.checkpoints),
    )
    cands = None
    if problem.candidates is not None:
        cands = torch.tensor(
            [[float(c.get(d, 0.0)) for d in problem.domains] for c in problem.candidates],
            dtype=torch.float64,
        )
    loss_domains = getattr(problem, "loss_domains", None)
    return SearchSpace(mixtures, fid, problem.objective_weights, cands,
                       tuple(loss_domains) if loss_domains else None)
