"""The strategy interface: frozen history in, trial specs out.

Shaped like Optuna's ``BaseSampler``: a strategy never sees storage, only immutable
:class:`TrialResult` s (finished or partial) and the specs of pending trials, so any server
process can rebuild it after a restart and get the same behaviour. Strategy state that must
survive (Hyperband's brackets) is written into each spec's ``metadata``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import Tensor

from mfms_bo.cost import CostModel
from mfms_bo.recommend import Recommendation, recommend_best_observed
from mfms_bo.space import FidelitySpace, SearchSpace
from mfms_bo.trials import TrialResult, TrialSpec, objective_of

__all__ = ["Proposal", "Strategy", "training_data", "restrict_fidelities"]


@dataclass(frozen=True)
class Proposal:
    """What one ``proposal`` call produced: the specs, and the surrogate builds it made
    (model-based strategies; the server's metrics report their timings).

    Attributes:
        specs: the new trials.
        fits: one record per surrogate build (:class:`mfms_bo.strategies.bo.SurrogateFit`).
    """

    specs: list[TrialSpec]
    fits: tuple[Any, ...] = field(default=())


class Strategy(ABC):
    """Proposes trials and recommends a mixture.

    Args:
        space: the study's search space.
        seed: seeds every random choice, so a run is reproducible.
    """

    name: str = "strategy"
    #: True for strategies that plan around the total cost budget (screen-then-confirm,
    #: Hyperband's brackets): they take a ``budget`` option in the unit of
    #: ``TrialResult.cost``, which the benchmark harness fills in. Practitioners' recipes
    #: are written for a known budget; the model-based strategies are anytime and ignore it.
    uses_budget: ClassVar[bool] = False

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.seed = int(seed)

    @abstractmethod
    def propose(
        self,
        history: Sequence[TrialResult],
        pending: Sequence[TrialSpec],
        n: int = 1,
        max_model_size: float | None = None,
    ) -> list[TrialSpec]:
        """``n`` new trials, different from each other and from ``pending``.

        ``max_model_size`` is the asking worker's capability; proposals never exceed it.
        """

    def proposal(
        self,
        history: Sequence[TrialResult],
        pending: Sequence[TrialSpec],
        n: int = 1,
        max_model_size: float | None = None,
    ) -> Proposal:
        """:meth:`propose` with a report of the work done (see :class:`Proposal`)."""
        return Proposal(self.propose(history, pending, n, max_model_size))

    def recommend(self, history: Sequence[TrialResult]) -> Recommendation | None:
        """Best mixture for the target; model-free default: best run at the top fidelity."""
        return recommend_best_observed(history, self.space)

    # -- shared helpers ---------------------------------------------------------------------
    def _generator(self, history: Sequence[TrialResult], pending: Sequence[TrialSpec]
                   ) -> torch.Generator:
        # Seeded by position in the study: reproducible, and different for every proposal.
        return torch.Generator().manual_seed(self.seed * 100_003 + len(history) + 7919
                                             * len(pending))

    def _spec(self, w: Tensor, model_size: float, steps: int,
              metadata: dict | None = None) -> TrialSpec:
        steps = int(min(max(steps, self.space.fidelities.steps_min),
                        self.space.fidelities.steps_max))
        return TrialSpec(
            mixture=self.space.mixtures.to_dict(w),
            model_size=float(model_size),
            steps=steps,
            checkpoints=self.space.fidelities.checkpoint_steps(steps),
            metadata=dict(metadata or {}),
        )

    def _shuffled_pool(self, used: Sequence[TrialSpec], g: torch.Generator
                       ) -> tuple[list[int], list[int]]:
        """``(fresh, order)``: a random order of the pool's indices (one ``randperm`` drawn
        from ``g``) and, in that order, those whose mixture no spec in ``used`` has.
        Requires a candidate pool."""
        pool = self.space.candidates
        assert pool is not None
        doms = self.space.mixtures.domains
        seen = {tuple(round(float(s.mixture.get(d, 0.0)), 9) for d in doms) for s in used}
        order = torch.randperm(pool.shape[0], generator=g).tolist()
        fresh = [i for i in order if tuple(round(v, 9) for v in pool[i].tolist()) not in seen]
        return fresh, order

    @staticmethod
    def _spent(history: Sequence[TrialResult]) -> float:
        """What the history has cost so far (runs without a reported cost count as 0)."""
        return float(sum(r.cost for r in history if r.cost is not None))

    def _cost_model(self, history: Sequence[TrialResult]) -> CostModel:
        cm = CostModel()
        for r in history:
            if r.completed and r.cost is not None and r.cost > 0 and r.last_step > 0:
                cm.observe(r.spec.model_size, r.last_step, r.cost)
        return cm

    def _runnable_max(self, max_model_size: float | None) -> float:
        ladder = [m for m in self.space.fidelities.model_sizes
                  if max_model_size is None or m <= max_model_size]
        if not ladder:
            raise ValueError(
                f"no runnable model size <= {max_model_size:g}; ladder is "
                f"{list(self.space.fidelities.model_sizes)}"
            )
        return ladder[-1]


def training_data(
    history: Sequence[TrialResult],
    space: SearchSpace,
    final_only: bool = False,
    model_size: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """GP training set from a history: every checkpoint is an observation.

    Checkpoints before the study's ``steps_min`` are left out: the user declared shorter
    runs uninformative (warm-up dominated), and on the benchmark their steep losses broke
    the GP's fit (a stationary kernel cannot follow the first hundred steps' drop).

    Args:
        final_only: keep each trial's last checkpoint only (single-fidelity baselines).
        model_size: keep trials of this size only.
    Returns:
        ``(X, y, groups)``: ``n x d`` inputs, ``n`` objectives, ``n`` trial indices.
    """
    xs: list[list[float]] = []
    ys: list[float] = []
    gs: list[int] = []
    weights = space.objective_weights
    domains = space.mixtures.domains
    for i, r in enumerate(history):
        if model_size is not None and r.spec.model_size != model_size:
            continue
        meas = sorted(r.measurements, key=lambda m: m.step)
        if final_only:
            meas = meas[-1:]
        w = [float(r.spec.mixture.get(d, 0.0)) for d in domains]
        for m in meas:
            val = objective_of(m.losses, weights)  # type: ignore[arg-type]
            if val is None or m.step < space.fidelities.steps_min:
                continue
            xs.append([*w, float(r.spec.model_size), float(m.step)])
            ys.append(val)
            gs.append(i)
    if not xs:
        k = space.k
        return torch.zeros(0, k + 2, dtype=torch.float64), torch.zeros(0, dtype=torch.float64), \
            torch.zeros(0, dtype=torch.long)
    raw = torch.tensor(xs, dtype=torch.float64)
    X = space.encode(raw[:, :-2], raw[:, -2], raw[:, -1])
    return X, torch.tensor(ys, dtype=torch.float64), torch.tensor(gs, dtype=torch.long)


def restrict_fidelities(space: SearchSpace, model_size: float, steps_min: int | None = None,
                        steps_max: int | None = None, target_steps: int | None = None
                        ) -> SearchSpace:
    """The same study seen by a baseline that only runs (and targets) one model size."""
    fid = space.fidelities
    smin = fid.steps_min if steps_min is None else steps_min
    smax = fid.steps_max if steps_max is None else steps_max
    new_fid = FidelitySpace(
        model_sizes=(model_size,),
        steps_min=smin,
        steps_max=smax,
        target_model_size=model_size,
        target_steps=smax if target_steps is None else target_steps,
        checkpoints=fid.checkpoints,
    )
    return replace(space, fidelities=new_fid)
