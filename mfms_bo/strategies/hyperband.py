"""Hyperband over fidelities (Li et al. 2018), with model size and steps as the budget.

Budget levels are the runnable ``(m, z)`` pairs ordered by predicted cost; rung ``r`` of a
bracket uses the level whose cost is closest to ``max_cost * eta^-(R - r)``. Each bracket
samples random mixtures at its first rung and promotes the best ``1/eta`` to the next rung
once the rung is finished. A promoted configuration is trained again from scratch at the
larger fidelity (our trials do not resume checkpoints), as in the original Hyperband.

The bracket bookkeeping lives in the specs' metadata (``bracket``, ``rung``, ``config``), so
the strategy is rebuilt from the history alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mfms_bo.cost import CostModel
from mfms_bo.optimize import fidelity_grid
from mfms_bo.recommend import final_objective
from mfms_bo.space import SearchSpace
from mfms_bo.strategies.base import Strategy
from mfms_bo.trials import TrialResult, TrialSpec

__all__ = ["Hyperband", "budget_ladder"]


class Hyperband(Strategy):
    """Hyperband with ``eta`` (default 3) and budget levels from the fidelity grid."""

    name = "hyperband"

    def __init__(self, space: SearchSpace, seed: int = 0, eta: int = 3,
                 n_steps: int = 4) -> None:
        super().__init__(space, seed)
        if eta < 2:
            raise ValueError("hyperband: eta must be >= 2")
        self.eta = int(eta)
        self.n_steps = int(n_steps)

    def _levels(self, max_model_size: float | None) -> list[tuple[float, int]]:
        self._runnable_max(max_model_size)  # the ladder message when nothing fits
        fids = fidelity_grid(self.space, self.n_steps, max_model_size)
        # The params x steps prior, not the refitted cost model: levels must stay fixed for
        # the life of a bracket, or one rung would mix fidelities.
        cost = CostModel()
        costs = [float(cost.predict(m, z)) for m, z in fids]
        levels = []
        for want in budget_ladder(costs, self.eta):
            # Closest level in log-cost; ties go to the larger model (it transfers better).
            best = min(range(len(fids)), key=lambda i: (abs(math.log(costs[i] / want)),
                                                         -fids[i][0]))
            levels.append(fids[best])
        return levels

    def propose(
        self,
        history: Sequence[TrialResult],
        pending: Sequence[TrialSpec],
        n: int = 1,
        max_model_size: float | None = None,
    ) -> list[TrialSpec]:
        levels = self._levels(max_model_size)
        R = len(levels) - 1
        g = self._generator(history, pending)
        out: list[TrialSpec] = []
        results = {_key(r.spec): r for r in history}
        specs = [r.spec for r in history] + list(pending)
        b = 0
        while len(out) < n:
            s = R - (b % (R + 1))  # bracket type: s + 1 rungs
            n0 = int(math.ceil((R + 1) / (s + 1) * self.eta ** s))
            mine = [sp for sp in [*specs, *out] if sp.metadata.get("bracket") == b]
            added = self._advance(b, s, n0, R, levels, mine, results, g, n - len(out))
            out.extend(added)
            b += 1
            if b > 10_000:
                break
        return out

    def _advance(self, b: int, s: int, n0: int, R: int, levels, mine, results, g, want
                 ) -> list[TrialSpec]:
        """New specs for bracket ``b`` (possibly none if it waits on pending work)."""
        out: list[TrialSpec] = []
        for rung in range(s + 1):
            n_r = max(1, int(math.floor(n0 * self.eta ** -rung)))
            level = levels[R - s + rung]
            at = [sp for sp in mine if sp.metadata.get("rung") == rung]
            if rung == 0:
                for c in range(len(at), n_r):
                    if len(out) >= want:
                        return out
                    out.append(self._spec(self._mixture(g, [*mine, *out]), level[0], level[1],
                                          {"bracket": b, "rung": 0, "config": c}))
                if len(at) < n_r:
                    return out
            if len(at) >= n_r:
                continue
            prev = [sp for sp in mine if sp.metadata.get("rung") == rung - 1]
            done = [results.get(_key(sp)) for sp in prev]
            if any(r is None for r in done):
                return out  # previous rung still running
            scored = sorted(
                ((final_objective(r, self.space) or math.inf, r.spec) for r in done),
                key=lambda t: t[0])
            promoted = {sp.metadata.get("config") for sp in at}
            for _, sp in scored[:n_r]:
                c = sp.metadata.get("config")
                if c in promoted:
                    continue
                if len(out) >= want:
                    return out
                w = torch.tensor([sp.mixture[d] for d in self.space.mixtures.domains],
                                 dtype=torch.float64)
                out.append(self._spec(w, level[0], level[1],
                                      {"bracket": b, "rung": rung, "config": c}))
            return out
        return out

    def _mixture(self, g: torch.Generator, used: Sequence[TrialSpec]) -> torch.Tensor:
        """A random mixture; on a pool, one this bracket has not sampled yet while any is
        left (a bracket's configurations must differ, or a rung repeats a table entry)."""
        pool = self.space.candidates
        if pool is None:
            return self.space.mixtures.sample(1, g)[0]
        fresh, order = self._shuffled_pool(used, g)
        return pool[fresh[0] if fresh else order[0]]


def budget_ladder(costs: Sequence[float], eta: int = 3) -> list[float]:
    """Hyperband's rung budgets, cheapest first: ``top * eta^-r`` for ``r = R..0``, with
    ``R`` the most rungs that stay above the cheapest of ``costs`` (the runnable
    fidelities' costs)."""
    top, lowest = max(costs), min(costs)
    R = max(0, int(math.floor(math.log(top / lowest, eta) + 1e-9)))
    return [top * float(eta) ** (r - R) for r in range(R + 1)]


def _key(spec: TrialSpec) -> tuple:
    md = spec.metadata
    return (md.get("bracket"), md.get("rung"), md.get("config"))
