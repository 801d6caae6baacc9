"""Hyperband over fidelities (Li et al. 2018), with model size and steps as the budget.

Budget levels are the runnable ``(m, z)`` pairs ordered by predicted cost; rung ``r`` of a
bracket uses the level whose cost is closest to ``max_cost * eta^-(R - r)``. When two rungs
would land on the same fidelity (RegMix's table has two sizes and one step count, so four
rungs came out 1M, 1M, 60M, 60M) the duplicates are dropped and the brackets have fewer
rungs: a promotion to the same fidelity would pay again for the same result. Each bracket
samples random mixtures at its first rung and promotes the best ``1/eta`` to the next rung
once the rung is finished. A promoted configuration is trained again from scratch at the
larger fidelity (our trials do not resume checkpoints), as in the original Hyperband.

On a candidate pool no ``(mixture, size, steps)`` is ever bought twice: a bracket's first
rung only samples members not yet run at that level (by any bracket), and a promotion to a
run that already exists (another bracket ran it) reuses that result for free. A bracket whose
first level has no member left is skipped.

With a ``budget`` (total cost, in the unit of ``TrialResult.cost``), bracket sizes follow
it: when a bracket starts, its ``n0`` is Hyperband's, scaled down by ``budget / (predicted
cost of one sweep of all brackets)`` when that is below 1 (so the first sweep fits the
budget), then reduced further until the bracket's predicted cost fits what the budget has
left after the spent cost, the pending runs and the unfinished brackets' remaining runs.
A bracket whose smallest version (one configuration per rung) does not fit is replaced by a
bracket with fewer rungs that does (the cheapest is one run at the top level); when none
fits, no bracket is started, and the strategy stops once the open ones finish. Costs are
predicted with the cost model fitted to the history, re-fitted at every proposal. Without a
budget Hyperband cycles its brackets for ever, as in the paper.

The bracket bookkeeping lives in the specs' metadata (``bracket``, ``rung``, ``config``, and
with a budget the bracket's shape ``s`` and ``n0``), so the strategy is rebuilt from the
history alone. A bracket started before any cost was reported (the first batch) keeps its
``n0`` open until the first cost arrives, since the budget's unit is unknown until then.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mfms_bo.cost import CostModel
from mfms_bo.limits import whole_number
from mfms_bo.optimize import fidelity_grid
from mfms_bo.recommend import final_objective
from mfms_bo.space import SearchSpace
from mfms_bo.strategies.base import Strategy
from mfms_bo.strategies.screen import check_budget, costs_reported, mixture_key, run_key
from mfms_bo.trials import TrialResult, TrialSpec

__all__ = ["Hyperband", "budget_ladder"]

Level = tuple[float, int]
_MAX_BRACKETS = 10_000


class Hyperband(Strategy):
    """Hyperband with ``eta`` (default 3) and budget levels from the fidelity grid.

    Args:
        space: search space.
        seed: random seed.
        eta: promotion ratio (the best ``1/eta`` of a rung go up).
        n_steps: step counts per size in the fidelity grid the levels are picked from.
        budget: total cost budget (module docstring); None: brackets cycle for ever.
    """

    name = "hyperband"
    uses_budget = True

    def __init__(self, space: SearchSpace, seed: int = 0, eta: int = 3,
                 n_steps: int = 4, budget: float | None = None) -> None:
        super().__init__(space, seed)
        self.eta = whole_number("eta", eta, 2, 100)
        self.n_steps = whole_number("n_steps", n_steps, 1, 32)
        self.budget = check_budget(budget)
        self._pool_keys: list[tuple[float, ...]] | None = None

    def _levels(self, max_model_size: float | None) -> list[Level]:
        """Distinct rung fidelities, cheapest first."""
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
        # Nearest levels of increasing targets have non-decreasing costs, so duplicates are
        # neighbours; keeping the first of each leaves the ladder in cost order.
        return list(dict.fromkeys(levels))

    def _n0(self, s: int, R: int) -> int:
        """Hyperband's first-rung size of a bracket with ``s + 1`` rungs."""
        return int(math.ceil((R + 1) / (s + 1) * self.eta ** s))

    def _rung_sizes(self, n0: int, s: int) -> list[int]:
        return [max(1, int(math.floor(n0 * self.eta ** -rung))) for rung in range(s + 1)]

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
        ctx = _Context(self, history, pending, levels)
        out: list[TrialSpec] = []
        last = max(ctx.brackets, default=-1)
        starting = True  # False once the budget leaves no room for a new bracket
        b = empty = 0
        while len(out) < n and b <= _MAX_BRACKETS:
            mine = ctx.brackets.get(b, [])
            if not mine and (not starting or empty > R):
                if b > last:
                    break  # nothing left to start, nothing open further on
                b += 1
                continue
            shape = self._shape(b, R, mine, ctx)
            if shape is None:
                starting = False
                b += 1
                continue
            s, n0, md = shape
            added = self._advance(b, s, n0, md, R, levels, mine, ctx, g, n - len(out))
            out.extend(added)
            # Every bracket type exhausted (its first level has no pool member left): stop
            # looking instead of scanning thousands of empty brackets.
            empty = empty + 1 if not mine and not added else 0
            b += 1
        return out

    def _shape(self, b: int, R: int, mine: list[TrialSpec], ctx: _Context
               ) -> tuple[int, int, dict[str, int]] | None:
        """``(s, n0, metadata)`` of bracket ``b``; None when the budget has no room for it."""
        natural = R - (b % (R + 1))
        if self.budget is None:
            return natural, self._n0(natural, R), {}
        s = _first(mine, "s")
        n0 = _first(mine, "n0")
        if s is not None:
            s = min(int(s), R)  # a smaller R: levels seen by a worker with a lower size cap
        if s is not None and n0 is not None:
            return s, int(n0), {"s": s, "n0": int(n0)}
        if not ctx.costs_known:
            # The budget's unit is unknown until a cost is reported: Hyperband's own n0 for
            # now, decided (and recorded) at the first proposal after a cost arrives.
            s = natural if s is None else s
            return s, self._n0(s, R), {"s": s}
        costs = ctx.level_costs
        sweep = sum(self._bracket_cost(t, self._n0(t, R), [0] * (t + 1), costs, R, ctx)
                    for t in range(R + 1))
        scale = min(1.0, self.budget / sweep) if sweep > 0 else 1.0
        avail = self.budget - ctx.committed(exclude=b, hb=self, R=R)
        types = [s] if s is not None else list(range(natural, -1, -1))
        for t in types:
            counts = ctx.present(mine, t, R)
            lo = max(1, counts[0])
            top = max(lo, int(round(self._n0(t, R) * scale)))
            for size in range(top, lo - 1, -1):
                if self._bracket_cost(t, size, counts, costs, R, ctx) <= avail:
                    return t, size, {"s": t, "n0": size}
            if mine:  # started before costs were known: finish it as small as it can be
                return t, lo, {"s": t, "n0": lo}
        return None

    def _bracket_cost(self, s: int, n0: int, counts: Sequence[int], costs: Sequence[float],
                      R: int, ctx: _Context) -> float:
        """Predicted cost of what bracket ``(s, n0)`` has still to run, ``counts[r]`` of its
        configurations having a run at rung ``r``'s level already (:meth:`_Context.present`).
        On a pool the first rung is capped by the members still unrun at its level (and later
        rungs by the first)."""
        total = 0.0
        cap = math.inf
        for rung, size in enumerate(self._rung_sizes(n0, s)):
            level = R - s + rung
            if rung == 0:
                cap = counts[0] + ctx.fresh_count(ctx.levels[level])
            size = min(size, cap)
            cap = size
            total += max(0, size - counts[rung]) * costs[level]
        return total

    def _advance(self, b: int, s: int, n0: int, md: dict[str, int], R: int,
                 levels: Sequence[Level], mine: list[TrialSpec], ctx: _Context,
                 g: torch.Generator, want: int) -> list[TrialSpec]:
        """New specs for bracket ``b`` (possibly none if it waits on pending work)."""
        out: list[TrialSpec] = []
        sizes = self._rung_sizes(n0, s)
        base = R - s

        def add(w: Tensor, level: Level, rung: int, c: int) -> None:
            spec = self._spec(w, level[0], level[1],
                              {"bracket": b, "rung": rung, "config": c, **md})
            out.append(spec)
            ctx.add(spec)

        configs: dict[int, Tensor] = {}
        for sp in mine:
            if sp.metadata.get("rung") == 0:
                configs[int(sp.metadata["config"])] = ctx.mixture(sp)
        level = levels[base]
        while len(configs) < sizes[0]:
            if len(out) >= want:
                return out
            w = self._mixture(g, ctx.used_at(level))
            if w is None:
                break  # pool exhausted at this level: the bracket runs with what it has
            c = max(configs, default=-1) + 1
            configs[c] = w
            add(w, level, 0, c)
        members = sorted(configs)
        for rung in range(1, s + 1):
            prev, level = levels[base + rung - 1], levels[base + rung]
            scored = []
            for c in members:
                res = ctx.result(configs[c], prev)
                if res is None:
                    return out  # previous rung still running
                val = final_objective(res, self.space)
                scored.append((math.inf if val is None else val, c))
            scored.sort()
            members = [c for _, c in scored[:sizes[rung]]]
            for c in members:
                if ctx.has_run(configs[c], level):
                    continue  # already run or running (on a pool, maybe by another bracket)
                if len(out) >= want:
                    return out
                add(configs[c], level, rung, c)
        return out

    def _mixture(self, g: torch.Generator, used: set[tuple[float, ...]]) -> Tensor | None:
        """A random mixture; on a pool, a member not yet run at this level (None when there
        is none left: buying a table entry twice would return the same number)."""
        pool = self.space.candidates
        if pool is None:
            return self.space.mixtures.sample(1, g)[0]
        keys = self.pool_keys()
        for i in torch.randperm(pool.shape[0], generator=g).tolist():
            if keys[i] not in used:
                return pool[i]
        return None

    def pool_keys(self) -> list[tuple[float, ...]]:
        """The pool members' mixture keys (computed once)."""
        assert self.space.candidates is not None
        if self._pool_keys is None:
            self._pool_keys = [mixture_key(w) for w in self.space.candidates.tolist()]
        return self._pool_keys


class _Context:
    """One proposal's view of the study: runs by ``(mixture, size, steps)``, specs by
    bracket, and with a budget the predicted costs."""

    def __init__(self, hb: Hyperband, history: Sequence[TrialResult],
                 pending: Sequence[TrialSpec], levels: Sequence[Level]) -> None:
        self.hb = hb
        self.levels = list(levels)
        self.domains = hb.space.mixtures.domains
        self.results: dict[tuple, TrialResult] = {}
        for r in history:
            self.results.setdefault(run_key(r.spec, self.domains), r)
        self.running: set[tuple] = {run_key(s, self.domains) for s in pending}
        self.brackets: dict[int, list[TrialSpec]] = {}
        self._used: dict[Level, set[tuple[float, ...]]] = {}
        self.new: list[TrialSpec] = []
        for sp in [*(r.spec for r in history), *pending]:
            self._index(sp)
        self.costs_known = costs_reported(history)
        self.cost_model = hb._cost_model(history)
        self.level_costs = [float(self.cost_model.predict(m, z)) for m, z in self.levels]
        self.spent = hb._spent(history) + sum(self.predict(s) for s in pending)

    def _index(self, sp: TrialSpec) -> None:
        key = run_key(sp, self.domains)
        self._used.setdefault((key[1], key[2]), set()).add(key[0])
        b = sp.metadata.get("bracket")
        if isinstance(b, int) and not isinstance(b, bool):
            self.brackets.setdefault(b, []).append(sp)

    def add(self, sp: TrialSpec) -> None:
        """A spec proposed in this call: it is running from now on."""
        self.running.add(run_key(sp, self.domains))
        self.new.append(sp)
        self._index(sp)

    def predict(self, sp: TrialSpec) -> float:
        return float(self.cost_model.predict(sp.model_size, sp.steps))

    def mixture(self, sp: TrialSpec) -> Tensor:
        return torch.tensor([float(sp.mixture.get(d, 0.0)) for d in self.domains],
                            dtype=torch.float64)

    def _key(self, w: Tensor, level: Level) -> tuple:
        return (mixture_key(w.tolist()), float(level[0]), int(level[1]))

    def result(self, w: Tensor, level: Level) -> TrialResult | None:
        return self.results.get(self._key(w, level))

    def has_run(self, w: Tensor, level: Level) -> bool:
        key = self._key(w, level)
        return key in self.results or key in self.running

    def used_at(self, level: Level) -> set[tuple[float, ...]]:
        return self._used.get((float(level[0]), int(level[1])), set())

    def fresh_count(self, level: Level) -> float:
        """Pool members not yet run at ``level`` (infinite without a pool)."""
        if self.hb.space.candidates is None:
            return math.inf
        keys = self.hb.pool_keys()
        used = self.used_at(level)
        return float(sum(1 for k in keys if k not in used))

    def present(self, specs: Sequence[TrialSpec], s: int, R: int) -> list[int]:
        """Per rung of a bracket with ``s + 1`` rungs: how many of its configurations have a
        run (finished or running) at that rung's level, promoted by it or reused from
        another bracket. Counting reused runs keeps a finished bracket from holding budget
        for promotions it never had to buy."""
        configs = [self.mixture(sp) for sp in specs if sp.metadata.get("rung") == 0]
        out = [len(configs)]
        for rung in range(1, s + 1):
            level = self.levels[R - s + rung]
            out.append(sum(1 for w in configs if self.has_run(w, level)))
        return out

    def committed(self, exclude: int, hb: Hyperband, R: int) -> float:
        """Cost spent, running, or still to run in the open brackets other than
        ``exclude``."""
        total = self.spent + sum(self.predict(s) for s in self.new)
        for b, specs in self.brackets.items():
            if b == exclude:
                continue
            s = _first(specs, "s")
            s = R - (b % (R + 1)) if s is None else min(int(s), R)
            n0 = _first(specs, "n0")
            n0 = hb._n0(s, R) if n0 is None else int(n0)
            total += hb._bracket_cost(s, n0, self.present(specs, s, R), self.level_costs, R,
                                      self)
        return total


def _first(specs: Sequence[TrialSpec], key: str) -> Any:
    return next((sp.metadata[key] for sp in specs if key in sp.metadata), None)


def budget_ladder(costs: Sequence[float], eta: int = 3) -> list[float]:
    """Hyperband's rung budgets, cheapest first: ``top * eta^-r`` for ``r = R..0``, with
    ``R`` the most rungs that stay above the cheapest of ``costs`` (the runnable
    fidelities' costs)."""
    top, lowest = max(costs), min(costs)
    R = max(0, int(math.floor(math.log(top / lowest, eta) + 1e-9)))
    return [top * float(eta) ** (r - R) for r in range(R + 1)]
