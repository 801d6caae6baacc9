"""The benchmark problem protocol (DESIGN section 5) and its bridge to a :class:`SearchSpace`.

Any object with these attributes and methods is a problem: the shipped simulated and
pool-based ones, or a user's, loaded with ``mfms bench --problem path/to/file.py:NAME``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from mfms_bo.space import SearchSpace

__all__ = ["Problem", "search_space_of", "config_of_problem"]


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


def config_of_problem(problem: Problem) -> dict[str, Any]:
    """The study config (``POST /studies`` fields, JSON-ready) that searches ``problem``:
    what the demo submits and, through :meth:`SearchSpace.from_config`, what the harness
    searches, so a study and a benchmark run of one problem see the same space."""
    config: dict[str, Any] = {
        "domains": list(problem.domains),
        "model_sizes": [float(m) for m in problem.model_sizes],
        "steps": {"min": int(problem.steps[0]), "max": int(problem.steps[1])},
        "target": {"model_size": float(problem.target_model_size),
                   "steps": int(problem.steps[1])},
        "checkpoints": int(problem.checkpoints),
    }
    if problem.objective_weights:
        config["objective_weights"] = dict(problem.objective_weights)
    if problem.candidates is not None:
        config["candidates"] = [dict(c) for c in problem.candidates]
    if getattr(problem, "loss_domains", None):
        config["loss_domains"] = list(problem.loss_domains)
    return config


def search_space_of(problem: Problem) -> SearchSpace:
    """The :class:`SearchSpace` a strategy searches for ``problem``."""
    return SearchSpace.from_config(config_of_problem(problem))
