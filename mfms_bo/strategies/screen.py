"""Screen small, then confirm large: the practitioners' recipe for choosing a data mixture.

Many cheap runs at random mixtures (the *screening* phase, at the smallest model size and
fewest steps by default), then the mixtures that screened best are trained again at the
largest runnable size for the target steps (the *confirming* phase); the recommendation is
the best confirmed run. It is what a team without a search tool does, and the reference any
tool must beat on cost.

Budget. With ``budget`` (total cost, in the unit of ``TrialResult.cost``) a
``screen_fraction`` of it goes to screening, capped by the pool size and by ``max_screen``,
and everything else to confirming screened mixtures in rank order until the budget is spent.
Without a budget (a study built by the REST server, which may never be told one) it runs
in rounds, each doubling the last (the doubling trick of anytime algorithms: whenever the
study stops, the plan it followed was made for at least half of what it spent). Round
``r = 0, 1, ...`` screens until screening has cost ``screen_fraction * B_0 * 2^r`` in
total, then confirms until ``top_k * 2^r`` mixtures are confirmed in total, with
``B_0 = top_k * cost(confirming run) / (1 - screen_fraction)``: round 0 screens for
``top_k`` confirming runs' worth of cost (at the default split) and confirms the ``top_k``
best, and the screening/confirming split stays ``screen_fraction`` at every scale. Rounds
end on confirmation *counts*, not costs, so that a cost prediction revised by the first
confirming run (small runs are often overhead-bound, which makes large ones look dearer
than they are) cannot end a round early.

The strategy is stateless: which runs are screens and which are confirmations is read off
their fidelity (so a user's own runs at those fidelities count too); ``metadata`` only
labels specs for people (``phase``, ``rank``). :class:`~mfms_bo.strategies.regmix.RegMix`
shares the screening phase and replaces the ranking with a regression model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from mfms_bo.limits import real_number, whole_number
from mfms_bo.recommend import final_objective
from mfms_bo.space import SearchSpace
from mfms_bo.strategies.base import Strategy
from mfms_bo.trials import TrialResult, TrialSpec

__all__ = ["ScreenThenConfirm", "check_budget", "costs_reported", "mixture_key", "run_key",
           "Fidelity"]

Fidelity = tuple[float, int]
RunKey = tuple[tuple[float, ...], float, int]


def check_budget(budget: float | None) -> float | None:
    """``budget`` as a float, or None; a clear error for anything that is not a positive
    finite number (it arrives from REST clients and CLI flags)."""
    if budget is None:
        return None
    try:
        b = float(budget)
    except (TypeError, ValueError):
        raise ValueError(f"budget: must be a positive number, got {budget!r}") from None
    if not (math.isfinite(b) and b > 0):
        raise ValueError(f"budget: must be a positive finite number, got {budget!r}")
    return b


def costs_reported(history: Sequence[TrialResult]) -> bool:
    """Whether the cost model has data: before the first reported cost its predictions are
    in the prior's unit (parameter-steps), which no budget is given in."""
    return any(r.completed and r.cost is not None and r.cost > 0 and r.last_step > 0
               for r in history)


def mixture_key(w: Sequence[float]) -> tuple[float, ...]:
    """A hashable mixture, rounded so that a pool member and its JSON round trip agree."""
    return tuple(round(float(v), 9) for v in w)


def run_key(spec: TrialSpec, domains: Sequence[str]) -> RunKey:
    """``(mixture, size, steps)``: two specs with the same key are the same run (on a pool,
    the same table lookup), so a strategy must never buy a key twice."""
    return (mixture_key([float(spec.mixture.get(d, 0.0)) for d in domains]),
            float(spec.model_size), int(spec.steps))


class ScreenThenConfirm(Strategy):
    """Random screening runs at a cheap fidelity, then the best re-run at the largest one.

    Args:
        space: search space.
        seed: random seed (the screening mixtures).
        budget: total cost budget in the unit of ``TrialResult.cost``; None for the anytime
            schedule of doubling rounds (module docstring).
        screen_fraction: share of the budget spent on screening (default 0.5).
        top_k: confirmations in the first round of the anytime schedule (default 3); with a
            budget, confirmations go on, in rank order, until the budget is spent.
        max_screen: most screening runs (default 256, RegMix's order of magnitude: it
            screened 512 mixtures of 17 domains). Without a cap, half of sim-k3's default
            budget would buy ~940 screens at 1/125 of a large run's cost each; the share a
            cap leaves unused goes to confirming.
        screen_size: model size of the screening runs (default: the smallest on the ladder).
        screen_steps: steps of the screening runs (default: ``steps_min``).
    """

    name = "screen"
    uses_budget = True

    def __init__(self, space: SearchSpace, seed: int = 0, budget: float | None = None,
                 screen_fraction: float = 0.5, top_k: int = 3, max_screen: int = 256,
                 screen_size: float | None = None, screen_steps: int | None = None) -> None:
        super().__init__(space, seed)
        self.budget = check_budget(budget)
        self.screen_fraction = real_number("screen_fraction", screen_fraction, 0.0, 1.0,
                                           low_open=True, high_open=True)
        self.top_k = whole_number("top_k", top_k, 1, 1000)
        self.max_screen = whole_number("max_screen", max_screen, 1, 100_000)
        fid = space.fidelities
        if screen_size is not None and float(screen_size) not in fid.model_sizes:
            raise ValueError(f"screen_size: {screen_size!r} is not on the ladder "
                             f"{list(fid.model_sizes)}")
        self.screen_size = None if screen_size is None else float(screen_size)
        if screen_steps is not None and not (
                isinstance(screen_steps, int) and fid.steps_min <= screen_steps <= fid.steps_max):
            raise ValueError(f"screen_steps: must be a whole number in [{fid.steps_min}, "
                             f"{fid.steps_max}], got {screen_steps!r}")
        self.screen_steps = screen_steps

    # -- fidelities ---------------------------------------------------------------------
    def screen_fidelity(self, max_model_size: float | None = None) -> Fidelity:
        """Where mixtures are screened: the cheapest fidelity unless the options say."""
        fid = self.space.fidelities
        top = self._runnable_max(max_model_size)
        size = fid.model_sizes[0] if self.screen_size is None else min(self.screen_size, top)
        steps = fid.steps_min if self.screen_steps is None else self.screen_steps
        return float(size), int(steps)

    def confirm_fidelity(self, max_model_size: float | None = None) -> Fidelity:
        """Where the best are confirmed: the largest runnable size, the target steps (clipped
        to what a trial may request)."""
        fid = self.space.fidelities
        return self._runnable_max(max_model_size), int(min(fid.target_steps, fid.steps_max))

    def screened(self, history: Sequence[TrialResult], fidelity: Fidelity
                 ) -> list[tuple[float, Tensor]]:
        """``(screening objective, mixture)`` of the completed runs at the screening
        fidelity, best first (ties by position in the history). Failed runs are left out:
        their last value is from an earlier step and would not compare."""
        doms = self.space.mixtures.domains
        rows = []
        for i, r in enumerate(history):
            if not r.completed or (r.spec.model_size, r.spec.steps) != fidelity:
                continue
            val = final_objective(r, self.space)
            if val is None:
                continue
            w = torch.tensor([float(r.spec.mixture.get(d, 0.0)) for d in doms],
                             dtype=torch.float64)
            rows.append((val, i, w))
        rows.sort(key=lambda t: (t[0], t[1]))
        return [(v, w) for v, _, w in rows]

    # -- the plan -----------------------------------------------------------------------
    def propose(
        self,
        history: Sequence[TrialResult],
        pending: Sequence[TrialSpec],
        n: int = 1,
        max_model_size: float | None = None,
    ) -> list[TrialSpec]:
        fs, fc = self.screen_fidelity(max_model_size), self.confirm_fidelity(max_model_size)
        doms = self.space.mixtures.domains
        cm = self._cost_model(history)
        cost_s, cost_c = float(cm.predict(*fs)), float(cm.predict(*fc))
        if self.budget is not None and not costs_reported(history):
            # No cost reported yet: predictions are in the prior's unit (parameter-steps),
            # not the budget's. Plan without them (the first batch is screening anyway).
            cost_s = cost_c = 0.0
        specs = [*(r.spec for r in history), *pending]
        known = {run_key(s, doms) for s in specs}
        pend_cost = [float(cm.predict(s.model_size, s.steps)) if cost_c else 0.0
                     for s in pending]
        spent = self._spent(history) + sum(pend_cost)
        # What screening has used: observed costs (predicted where none was reported).
        screen_spent = sum(
            (r.cost if r.cost is not None else cost_s) for r in history
            if (r.spec.model_size, r.spec.steps) == fs)
        screen_spent += sum(c for s, c in zip(pending, pend_cost, strict=True)
                            if (s.model_size, s.steps) == fs)
        n_screened = len({k[0] for k in known if (k[1], k[2]) == fs})
        n_confirmed = len({k[0] for k in known if (k[1], k[2]) == fc})
        g = self._generator(history, pending)
        fresh = self._fresh_screens(specs, fs, g)
        order = self._confirm_order(history, pending, fs, fc, known)
        out: list[TrialSpec] = []
        while len(out) < n:
            can_screen = n_screened < self.max_screen and fresh.has_next()
            phase = self._phase(spent, screen_spent, n_confirmed, cost_c, can_screen)
            if phase is None:
                break
            spec = fresh.spec(fs) if phase == "screen" else self._next_confirm(order, known, fc)
            if spec is None and can_screen:
                # Nothing rankable left to confirm (all confirmed, or the screens are still
                # running): screening more beats leaving a worker idle.
                spec = fresh.spec(fs)
            if spec is None:
                break
            known.add(run_key(spec, doms))
            out.append(spec)
            if (spec.model_size, spec.steps) == fs:
                spent += cost_s
                screen_spent += cost_s
                n_screened += 1
            else:
                spent += cost_c
                n_confirmed += 1
        return out

    def _phase(self, spent: float, screen_spent: float, n_confirmed: int, cost_confirm: float,
               can_screen: bool) -> str | None:
        """``"screen"``, ``"confirm"``, or None once the budget is spent (module docstring)."""
        f = self.screen_fraction
        if self.budget is not None:
            if spent >= self.budget:
                return None
            return "screen" if can_screen and screen_spent < f * self.budget else "confirm"
        b0 = self.top_k * cost_confirm / (1.0 - f)
        r = 0
        while True:  # ends: n_confirmed is finite
            if can_screen and screen_spent < f * b0 * 2.0 ** r:
                return "screen"
            if n_confirmed < self.top_k * 2 ** r:
                return "confirm"
            r += 1

    def _next_confirm(self, order: Iterator[tuple[Tensor, dict[str, Any]]],
                      known: set[RunKey], fc: Fidelity) -> TrialSpec | None:
        for w, md in order:
            if (mixture_key(w.tolist()), fc[0], fc[1]) in known:
                continue
            return self._spec(w, fc[0], fc[1], {"phase": "confirm", **md})
        return None

    def _confirm_order(self, history: Sequence[TrialResult], pending: Sequence[TrialSpec],
                       fs: Fidelity, fc: Fidelity, known: set[RunKey]
                       ) -> Iterator[tuple[Tensor, dict[str, Any]]]:
        """Mixtures to confirm, best first (already-run ones are skipped by the caller).

        Screen-then-confirm ranks by the observed screening objective. ``known`` is the live
        set of run keys (it grows while a batch is built), for rankings that depend on it."""
        for rank, (val, w) in enumerate(self.screened(history, fs)):
            yield w, {"rank": rank, "screen_objective": val}

    def _fresh_screens(self, specs: Sequence[TrialSpec], fs: Fidelity, g: torch.Generator
                       ) -> _Screens:
        return _Screens(self, specs, fs, g)


class _Screens:
    """Screening mixtures in draw order: Dirichlet(1) draws, or on a pool the members not yet
    screened, in one random order (sampling without replacement)."""

    def __init__(self, strategy: Strategy, specs: Sequence[TrialSpec], fs: Fidelity,
                 g: torch.Generator) -> None:
        self.strategy = strategy
        self.g = g
        self.order: list[int] | None = None
        if strategy.space.candidates is not None:
            used = [s for s in specs if (s.model_size, s.steps) == fs]
            self.order, _ = strategy._shuffled_pool(used, g)

    def has_next(self) -> bool:
        return self.order is None or bool(self.order)

    def spec(self, fs: Fidelity) -> TrialSpec | None:
        space = self.strategy.space
        if self.order is None:
            w = space.mixtures.sample(1, self.g)[0]
        elif self.order:
            assert space.candidates is not None
            w = space.candidates[self.order.pop(0)]
        else:
            return None
        return self.strategy._spec(w, fs[0], fs[1], {"phase": "screen"})
