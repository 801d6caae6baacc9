"""GP-based strategies: MFMS-BO and the seed's BO baselines.

* :class:`MFMSBO` - the product: the MFMS-GP over (w, log m, log z) on every checkpoint and
  a cost-aware acquisition over the size ladder x steps grid.
* :class:`MultiFidelityBO` (``mf-bo``) - the same machinery with the size fixed at the
  largest runnable one: multi-fidelity in steps only, as the seed's MF baseline.
* :class:`SingleFidelityBO` (``sf-bo``) - GP-EI on final values at the largest runnable
  fidelity only (the target when it is runnable).

Pending trials are fantasised at their posterior mean (kriging believer) before each
proposal, and a batch of ``n`` is built greedily the same way, so parallel workers get
different, still useful, trials.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from mfms_bo.acquisition import (
    CostAwareAcquisition,
    EIPerCost,
    TargetKGPerCost,
    choose_fidelity,
    seed_alpha,
)
from mfms_bo.cost import CostModel
from mfms_bo.errors import ValidationError
from mfms_bo.limits import real_number, whole_number
from mfms_bo.optimize import fidelity_grid, maximize_acquisition
from mfms_bo.recommend import (
    ObjectivePrediction,
    Recommendation,
    objective_prediction,
    recommend_from_surrogate,
)
from mfms_bo.space import SearchSpace
from mfms_bo.strategies.base import Proposal, Strategy, restrict_fidelities, training_data
from mfms_bo.strategies.hyperband import budget_ladder
from mfms_bo.strategies.screen import costs_reported
from mfms_bo.surrogate.mfms_gp import MFMSGP, SurrogateConfig
from mfms_bo.trials import TrialResult, TrialSpec

__all__ = ["MFMSBO", "MultiFidelityBO", "SingleFidelityBO", "ACQUISITIONS", "SurrogateFit",
           "FIT_METADATA_KEY"]

ACQUISITIONS = ("kg", "ei")
#: Spec metadata key under which a proposal records the surrogate fit it came from.
FIT_METADATA_KEY = "surrogate_fit"
#: Spec metadata key under which a proposal records the recommendation at its time, the
#: incumbent that ``recommend="incumbent"`` keeps until a mixture is surely better.
INCUMBENT_METADATA_KEY = "incumbent"
#: Recommendation rules (``MFMSBO``'s ``recommend``).
RECOMMEND_RULES = ("incumbent", "pessimistic")
#: ``recommend_risk`` when it is not given, per rule: the values the suite was measured with
#: (docs/decisions.md, "The incumbent rule for the recommendation").
DEFAULT_RECOMMEND_RISK = {"incumbent": 0.5, "pessimistic": 1.0}


@dataclass(frozen=True)
class SurrogateFit:
    """One surrogate build for a history.

    Attributes:
        model: the GP, conditioned on the whole history.
        trials: how many trials the hyperparameters were optimised on (the refit point).
        hyperparameters: those hyperparameters; proposals store them in their metadata so
            any process can continue the schedule from the history alone.
        optimized: the hyperparameters were optimised in this build (else only conditioned
            on the new data with the stored ones).
        seconds: wall time of the build; 0 when it came from the memo.
        cached: it came from the memo (an identical build earlier in this process).
    """

    model: MFMSGP
    trials: int
    hyperparameters: dict[str, Tensor]
    optimized: bool
    seconds: float
    cached: bool = False


class MFMSBO(Strategy):
    """Multi-fidelity, multi-scale BO.

    Stateless in the sense of :class:`Strategy`: a proposal depends on the history, the
    pending specs and the options only. The hyperparameter refit schedule is derived from
    the history, and the hyperparameters a proposal was made with travel in its spec's
    metadata (``FIT_METADATA_KEY``), so a freshly built strategy in another process
    continues exactly where a long-lived one would. The instance keeps a small memo of
    surrogate builds keyed on their exact inputs, which saves a refit when ``recommend`` and
    ``propose`` see the same data and never changes a result.

    Args:
        space: search space.
        seed: random seed.
        acquisition: ``"kg"`` (target knowledge gradient per cost, default) or ``"ei"``
            (the seed paper's EI / cost^alpha with alpha decaying by 0.99 per iteration).
        kernel: surrogate design, ``"additive"`` (default), ``"transfer"`` or ``"seed"``
            (the paper's); see :mod:`mfms_bo.surrogate.kernels`.
        n_init: initial random trials at the smallest size (default ``max(4, k+1)``),
            plus one short anchor run at the largest runnable size so the GP sees scale
            early. The initial runs stop at Hyperband's lowest budget: every checkpoint is
            an observation, so partial curves already rank mixtures for a fraction of the
            cost of full runs, and the acquisition buys longer runs where they teach most
            (docs/decisions.md has the measurements behind both choices).
        n_steps: step levels on the acquisition grid.
        n_mixtures: random mixtures scored per fidelity.
        surrogate: further :class:`SurrogateConfig` fields.
        screen_first: before a run of a mixture at a larger size, run it at the smallest
            size (same steps) while the surrogate is still unsure what that cheap run would
            show (posterior sd above ``screen_threshold`` x the noise sd). One-step KG per
            cost undervalues cheap runs, each of which alone moves the target little, and so
            spends target-size runs on exploring (traced on RegMix: 16 of the first 17
            proposals after the screen were 60M runs at untried mixtures, half the budget);
            this is the practitioners' screen-then-confirm, decided per mixture by the
            surrogate (the fidelity choice of Kandasamy et al.'s BOCA, 2017).
        screen_threshold: see ``screen_first``.
        bundle: choose each proposal's fidelity by the KG per cost of an equal-cost bundle
            of runs there (up to ``max_bundle`` runs, as many as the dearest run on the grid
            pays for) instead of a single run, then the mixture by KG per cost at that
            fidelity (:mod:`mfms_bo.acquisition.bundle`): one-step KG undervalues cheap runs,
            which teach about the target only in numbers. With ``acquisition="kg"`` only.
        max_bundle: see ``bundle``.
        trial_price: what one trial costs on top of its compute, in the unit of the reported
            costs, for a study whose trial budget runs out too: the acquisition divides by
            ``cost + trial_price`` (``C / T`` for a cost budget ``C`` and ``T`` trials), so a
            screening run is priced by the trial it uses up, not by its compute alone.
            Ignored until a cost has been reported (before that, predicted costs are in the
            prior's unit). Off by default: it did not help the default design under the
            demo's 40-trial cap (docs/decisions.md).
        recommend: how the recommendation is chosen at the target. ``"incumbent"``
            (default): the recommendation a proposal last recorded stays until a mixture
            beats its mean by ``recommend_risk`` sd of their difference (hysteresis). Why:
            the posterior mean at the target moves whenever a run at a new size or length
            arrives, and the plain rule follows it away from a mixture it had right
            (:func:`~mfms_bo.recommend.recommend_from_surrogate`, ``reference``).
            ``"pessimistic"``: the minimiser of ``mean + recommend_risk * sd`` at every call.
        recommend_risk: see ``recommend``; ``None`` takes the rule's default
            (``DEFAULT_RECOMMEND_RISK``: 0.5 for ``"incumbent"``, 1.0 for ``"pessimistic"``).
    """

    name = "mfms-bo"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        acquisition: str = "kg",
        kernel: str = "additive",
        n_init: int | None = None,
        n_steps: int = 4,
        n_mixtures: int = 256,
        surrogate: dict | None = None,
        screen_first: bool = False,
        screen_threshold: float = 1.0,
        bundle: bool = False,
        max_bundle: int = 32,
        trial_price: float = 0.0,
        recommend: str = "incumbent",
        recommend_risk: float | None = None,
    ) -> None:
        super().__init__(space, seed)
        if acquisition not in ACQUISITIONS:
            raise ValueError(f"acquisition must be one of {ACQUISITIONS}, got {acquisition!r}")
        self.acquisition = acquisition
        self.config = SurrogateConfig(kernel=kernel, **(surrogate or {}))  # checks kernel
        self.n_init = (max(4, space.k + 1) if n_init is None
                       else whole_number("n_init", n_init, 1, 1000))
        self.n_steps = whole_number("n_steps", n_steps, 1, 32)
        self.n_mixtures = whole_number("n_mixtures", n_mixtures, 1, 8192)
        if not isinstance(screen_first, bool):
            raise ValueError(f"screen_first must be true or false, got {screen_first!r}")
        self.screen_first = screen_first
        self.screen_threshold = real_number("screen_threshold", screen_threshold, 0.0, 100.0)
        if not isinstance(bundle, bool):
            raise ValueError(f"bundle must be true or false, got {bundle!r}")
        self.bundle = bundle
        self.max_bundle = whole_number("max_bundle", max_bundle, 1, 256)
        self.trial_price = real_number("trial_price", trial_price, 0.0, 1e300)
        if recommend not in RECOMMEND_RULES:
            raise ValueError(f"recommend must be one of {RECOMMEND_RULES}, got {recommend!r}")
        self.recommend_rule = recommend
        self.recommend_risk = real_number(
            "recommend_risk",
            DEFAULT_RECOMMEND_RISK[recommend] if recommend_risk is None else recommend_risk,
            0.0, 100.0)
        self._memo: OrderedDict[str, SurrogateFit] = OrderedDict()

    # -- what this strategy models (overridden by the baselines) ----------------------------
    @property
    def model_space(self) -> SearchSpace:
        """The space the surrogate and the recommendation live in."""
        return self.space

    def _fidelities(self, max_model_size: float | None) -> list[tuple[float, int]]:
        return fidelity_grid(self.model_space, self.n_steps, max_model_size)

    def _training_data(self, history: Sequence[TrialResult]) -> tuple[Tensor, Tensor, Tensor]:
        """The observations this strategy models, on the objective's own scale."""
        return training_data(history, self.model_space)

    def _data(self, history: Sequence[TrialResult]) -> tuple[Tensor, Tensor, Tensor]:
        """GP training set: the log of the objective. Losses of bad corner mixtures and short
        runs are many times the optimum's; on the log scale they no longer dominate the fit
        (a stationary GP then describes the region that matters). Monotone, so EI, KG and the
        recommendation rank the same way; the recommendation maps back with ``exp``."""
        X, y, g = self._training_data(history)
        return X, torch.log(y.clamp(min=1e-12)), g

    # -- surrogate --------------------------------------------------------------------------
    def fit_surrogate(self, history: Sequence[TrialResult],
                      pending: Sequence[TrialSpec] = ()) -> SurrogateFit | None:
        """The GP for ``history``; None with fewer than two observations.

        The hyperparameters are re-optimised once the number of trials with data has
        grown by ``refit_growth`` since the newest fit recorded in the specs of
        ``history`` and ``pending`` (always at least one new trial), warm-started from it;
        in between the GP conditions on the new data with the recorded hyperparameters.
        """
        X, y, groups = self._data(history)
        if X.shape[0] < 2:
            return None
        n_trials = int(torch.unique(groups).numel())
        stored = self._stored_fit([r.spec for r in history] + list(pending))
        fit_trials, warm = stored if stored is not None else (0, None)
        optimize = (warm is None
                    or n_trials >= max(fit_trials + 1,
                                       fit_trials * (1.0 + self.config.refit_growth))
                    or n_trials < fit_trials)  # a different history: start over
        seed = self.seed + len(history)
        key = _fit_key(X, y, groups, warm, optimize, seed)
        hit = self._memo.get(key)
        if hit is not None:
            self._memo.move_to_end(key)
            return replace(hit, seconds=0.0, cached=True)
        t0 = time.perf_counter()
        gp = MFMSGP.fit(X, y, groups, self.config, warm_start=warm, seed=seed,
                        optimize=optimize)
        fit = SurrogateFit(
            model=gp,
            trials=n_trials if optimize else fit_trials,
            hyperparameters=gp.hyperparameters() if optimize or warm is None else warm,
            optimized=optimize,
            seconds=time.perf_counter() - t0,
        )
        self._memo[key] = fit
        while len(self._memo) > 4:
            self._memo.popitem(last=False)
        return fit

    def _stored_fit(self, specs: Sequence[TrialSpec]
                    ) -> tuple[int, dict[str, Tensor]] | None:
        """The newest ``(trials, hyperparameters)`` this strategy recorded in ``specs``
        (most trials; the later spec on a tie)."""
        best: tuple[int, Mapping[str, Any]] | None = None
        for spec in specs:
            rec = spec.metadata.get(FIT_METADATA_KEY)
            if (not isinstance(rec, Mapping) or rec.get("strategy") != self.name
                    or rec.get("kernel") != self.config.kernel):
                continue
            if best is None or int(rec["trials"]) >= best[0]:
                best = (int(rec["trials"]), rec["hyperparameters"])
        if best is None:
            return None
        return best[0], {k: torch.tensor(v, dtype=torch.float64) for k, v in best[1].items()}

    def fit_metadata(self, fit: SurrogateFit) -> dict[str, Any]:
        """What a proposal's spec records of ``fit``, so that the next fit of any process
        warm-starts from its hyperparameters (the database holds them, not this object)."""
        return {FIT_METADATA_KEY: {
            "strategy": self.name, "kernel": self.config.kernel, "trials": fit.trials,
            "hyperparameters": {k: v.tolist() for k, v in fit.hyperparameters.items()}}}

    def recommend(self, history: Sequence[TrialResult]) -> Recommendation | None:
        fit = self.fit_surrogate(history)
        if fit is None:
            return super().recommend(history)
        return self._recommend_with(fit, self._incumbent([r.spec for r in history]))

    def _recommend_with(self, fit: SurrogateFit, incumbent: Tensor | None) -> Recommendation:
        g = torch.Generator().manual_seed(self.seed + 17)
        return recommend_from_surrogate(fit.model, self.model_space, generator=g,
                                        transform=torch.exp, risk=self.recommend_risk,
                                        reference=incumbent)

    def _incumbent(self, specs: Sequence[TrialSpec]) -> Tensor | None:
        """The newest recommendation a proposal recorded (``recommend="incumbent"``)."""
        if self.recommend_rule != "incumbent":
            return None
        for spec in reversed(specs):
            rec = spec.metadata.get(INCUMBENT_METADATA_KEY)
            if isinstance(rec, Mapping):
                doms = self.model_space.mixtures.domains
                return torch.tensor([[float(rec.get(d, 0.0)) for d in doms]],
                                    dtype=torch.float64)
        return None

    def predict(self, history: Sequence[TrialResult], W: Tensor, model_size: float,
                steps: int) -> ObjectivePrediction | None:
        """What the surrogate believes the ``n x k`` mixtures ``W`` score at
        ``(model_size, steps)``, in the objective's units; None before it can be fitted."""
        fit = self.fit_surrogate(history)
        if fit is None:
            return None
        n = W.shape[0]
        X = self.model_space.encode(
            W, torch.full((n,), float(model_size), dtype=torch.float64),
            torch.full((n,), float(steps), dtype=torch.float64))
        return objective_prediction(fit.model, X, transform=torch.exp)

    # -- proposals --------------------------------------------------------------------------
    def _initial(self, index: int, g: torch.Generator, max_model_size: float | None
                 ) -> TrialSpec:
        space = self.space
        fid = self.model_space.fidelities
        small = fid.model_sizes[0]
        if max_model_size is not None and small > max_model_size:
            small = self._runnable_max(max_model_size)
        big = self._runnable_max(max_model_size) if len(fid.model_sizes) > 1 else small
        if big > fid.model_sizes[-1]:
            big = fid.model_sizes[-1]
        if space.candidates is not None:
            w = space.candidates[int(torch.randint(space.candidates.shape[0], (1,),
                                                   generator=g))]
        elif index == self.n_init:
            # The anchor: the centre of the feasible region.
            w = space.mixtures.project(torch.full((1, space.k), 1.0 / space.k))[0]
        else:
            w = space.mixtures.sample(1, g)[0]
        if index == self.n_init:
            return self._spec(w, big, fid.steps_min, {"phase": "init"})
        return self._spec(w, small, self._init_steps(small, max_model_size), {"phase": "init"})

    def _init_steps(self, size: float, max_model_size: float | None) -> int:
        """Hyperband's lowest budget at the smallest size (BOHB screens there too): the
        steps level whose prior cost is closest to the top fidelity's cost / 3^R, R the
        most rungs that stay above the cheapest run (:func:`budget_ladder`)."""
        fids = self._fidelities(max_model_size)
        cost = CostModel()
        want = budget_ladder([float(cost.predict(m, z)) for m, z in fids])[0]
        steps = sorted({z for m, z in fids if m == size}) or [
            self.model_space.fidelities.steps_min]
        return min(steps, key=lambda z: (abs(math.log(float(cost.predict(size, z)) / want)),
                                         z))

    def _n_initial(self) -> int:
        anchor = 1 if len(self.model_space.fidelities.model_sizes) > 1 else 0
        return self.n_init + anchor

    def propose(
        self,
        history: Sequence[TrialResult],
        pending: Sequence[TrialSpec],
        n: int = 1,
        max_model_size: float | None = None,
    ) -> list[TrialSpec]:
        return self.proposal(history, pending, n, max_model_size).specs

    def proposal(
        self,
        history: Sequence[TrialResult],
        pending: Sequence[TrialSpec],
        n: int = 1,
        max_model_size: float | None = None,
    ) -> Proposal:
        self._check_capability(max_model_size)
        g = self._generator(history, pending)
        out: list[TrialSpec] = []
        started = len(history) + len(pending)
        while len(out) < n and started + len(out) < self._n_initial():
            spec = self._initial(started + len(out), g, max_model_size)
            if self._fresh(spec, history, [*pending, *out]):
                out.append(spec)
            elif self.space.candidates is None:
                continue
            else:
                started += 1  # a duplicate draw from a small pool: skip that init slot
        if len(out) == n:
            return Proposal(out)
        fit = self.fit_surrogate(history, pending)
        if fit is None:  # nothing usable observed yet: keep exploring at random
            while len(out) < n:
                out.append(self._initial(0, g, max_model_size))
            return Proposal(out)
        cost = self._run_cost(history)
        fids = self._fidelities(max_model_size)
        best_f = float(self._data(history)[1].min())
        iteration = max(0, len(history) + len(pending) - self._n_initial())
        gp = fit.model.fantasize(self._inputs([*pending, *out]))
        record = self.fit_metadata(fit)
        if self.recommend_rule == "incumbent":
            # The recommendation now, kept in the specs (the database) rather than in this
            # object, so that any process continues the same chain of incumbents.
            rec = self._recommend_with(fit, self._incumbent(
                [*(r.spec for r in history), *pending]))
            record[INCUMBENT_METADATA_KEY] = rec.mixture
        for _ in range(n - len(out)):
            acq = self._acquisition(gp, best_f, iteration, g)
            exclude = self._exclusions(history, [*pending, *out])
            grid = fids
            if self.bundle and isinstance(acq, TargetKGPerCost):
                chosen, _ = choose_fidelity(
                    acq, self.model_space, fids, cost,
                    n_mixtures=self.n_mixtures, max_bundle=self.max_bundle,
                    exclude=exclude, generator=g)
                grid = fids if chosen is None else [chosen]
            q = maximize_acquisition(
                acq, self.model_space, grid, cost,
                n_mixtures=self.n_mixtures, extra_mixtures=self._top_mixtures(gp, g),
                exclude=exclude, generator=g,
            )
            if not math.isfinite(q.score):  # a pool exhausted at every fidelity
                break
            size, steps = q.model_size, q.steps
            if self.screen_first:
                size, steps = self._screen_fidelity(gp, q.mixture, size, steps, fids,
                                                    history, [*pending, *out])
            spec = self._spec(q.mixture, size, steps,
                              {"acq": self.acquisition, "score": q.score, **record})
            out.append(spec)
            gp = gp.fantasize(self._inputs([spec]))
            iteration += 1
        return Proposal(out, (fit,))

    def _run_cost(self, history: Sequence[TrialResult]) -> Callable[[Tensor, Tensor], Tensor]:
        """What a run at ``(sizes, steps)`` costs the study: its predicted compute plus the
        ``trial_price`` once costs are reported in the budget's unit."""
        predict = self._cost_model(history).predict
        price = self.trial_price if costs_reported(history) else 0.0
        if price == 0.0:
            return predict
        return lambda sizes, steps: predict(sizes, steps) + price

    def _screen_fidelity(self, gp: MFMSGP, w: Tensor, size: float, steps: int,
                         fids: list[tuple[float, int]], history: Sequence[TrialResult],
                         pending: Sequence[TrialSpec]) -> tuple[float, int]:
        """``(size, steps)``, or the smallest runnable size at the nearest steps level when
        the surrogate does not yet know, to within ``screen_threshold`` noise sds, what
        mixture ``w`` scores there (see ``screen_first``)."""
        smallest = min(m for m, _ in fids)
        if size <= smallest:
            return size, steps
        z = min((zz for m, zz in fids if m == smallest), key=lambda zz: abs(zz - steps))
        spec = self._spec(w, smallest, z)
        if not self._fresh(spec, history, pending):
            return size, steps
        _, var = gp.predict(self._inputs([spec]), law_uncertainty=False)
        if float(var[0]) > self.screen_threshold ** 2 * gp.noise_variance:
            return smallest, z
        return size, steps

    def _check_capability(self, max_model_size: float | None) -> None:
        """Fail with the ladder message when no size this strategy uses fits the worker."""
        ladder = self.model_space.fidelities.model_sizes
        if max_model_size is not None and ladder[0] > max_model_size:
            raise ValidationError(
                f"no runnable model size <= {max_model_size:g} for {self.name}; it runs "
                f"{list(ladder)}")

    def _acquisition(self, gp: MFMSGP, best_f: float, iteration: int,
                     g: torch.Generator) -> CostAwareAcquisition:
        if self.acquisition == "ei":
            return EIPerCost(gp, best_f, seed_alpha(iteration))
        return TargetKGPerCost(gp, self.model_space, self._target_set(gp, g))

    def _target_set(self, gp: MFMSGP, g: torch.Generator, n_top: int = 24,
                    n_random: int = 40) -> Tensor:
        space = self.model_space
        W = space.mixture_candidates(1024, g)
        mean = gp.predict_mean(space.target_inputs(W))
        top = W[torch.argsort(mean)[:n_top]]
        if W.shape[0] <= n_top + n_random:
            return W
        rand = W[torch.randperm(W.shape[0], generator=g)[:n_random]]
        return torch.cat([top, rand])

    def _top_mixtures(self, gp: MFMSGP, g: torch.Generator, n: int = 8) -> Tensor:
        space = self.model_space
        if space.candidates is not None:
            return torch.zeros(0, space.k, dtype=torch.float64)
        W = space.mixture_candidates(512, g)
        mean = gp.predict_mean(space.target_inputs(W))
        return W[torch.argsort(mean)[:n]]

    def _inputs(self, specs: Sequence[TrialSpec]) -> Tensor:
        space = self.model_space
        if not specs:
            return torch.zeros(0, space.dim, dtype=torch.float64)
        W = torch.tensor([[float(s.mixture.get(d, 0.0)) for d in space.mixtures.domains]
                          for s in specs], dtype=torch.float64)
        m = torch.tensor([s.model_size for s in specs], dtype=torch.float64)
        z = torch.tensor([float(s.steps) for s in specs], dtype=torch.float64)
        return space.encode(W, m, z)

    def _exclusions(self, history: Sequence[TrialResult], pending: Sequence[TrialSpec]
                    ) -> Tensor | None:
        """On a pool, runs already done or pending (a rerun repeats a table entry), each with
        the steps it covers: a completed run covers the steps it was asked for even when its
        last checkpoint falls short of them (a table logs every 1000 steps, a request can be
        for 14422), a failed one only what it measured."""
        if self.space.candidates is None:
            return None
        specs = [(r.spec, r.spec.steps if r.completed else max(r.last_step, 1))
                 for r in history]
        specs += [(s, s.steps) for s in pending]
        if not specs:
            return None
        doms = self.space.mixtures.domains
        return torch.tensor(
            [[*(float(s.mixture.get(d, 0.0)) for d in doms), s.model_size, float(z)]
             for s, z in specs], dtype=torch.float64)

    def _fresh(self, spec: TrialSpec, history: Sequence[TrialResult],
               pending: Sequence[TrialSpec]) -> bool:
        if self.space.candidates is None:
            return True
        ex = self._exclusions(history, pending)
        if ex is None:
            return True
        key = torch.tensor([*(float(spec.mixture.get(d, 0.0))
                              for d in self.space.mixtures.domains), spec.model_size],
                           dtype=torch.float64)
        same = (ex[:, :-1] - key).abs().amax(-1) < 1e-9
        return not bool((same & (spec.steps <= ex[:, -1])).any())


class MultiFidelityBO(MFMSBO):
    """Multi-fidelity in steps only; size fixed at the largest runnable size (``mf-bo``)."""

    name = "mf-bo"

    def __init__(self, space: SearchSpace, seed: int = 0, **options) -> None:
        options.setdefault("n_init", max(4, space.k + 1))
        super().__init__(space, seed, **options)
        fid = space.fidelities
        self._space1 = restrict_fidelities(space, fid.largest_runnable,
                                           target_steps=fid.target_steps)

    @property
    def model_space(self) -> SearchSpace:
        return self._space1

    def _training_data(self, history: Sequence[TrialResult]) -> tuple[Tensor, Tensor, Tensor]:
        return training_data(history, self._space1,
                             model_size=self.space.fidelities.largest_runnable)

    def _initial(self, index: int, g: torch.Generator, max_model_size: float | None
                 ) -> TrialSpec:
        spec = super()._initial(index, g, max_model_size)
        fid = self.space.fidelities
        # Cheap initial design: short runs at the one size this baseline uses.
        steps = fid.steps_min if fid.steps_max > fid.steps_min else fid.steps_max
        return self._spec(torch.tensor([spec.mixture[d] for d in self.space.mixtures.domains],
                                       dtype=torch.float64),
                          fid.largest_runnable, steps, {"phase": "init"})


class SingleFidelityBO(MFMSBO):
    """GP-EI on final objectives at the largest runnable fidelity only (``sf-bo``)."""

    name = "sf-bo"

    def __init__(self, space: SearchSpace, seed: int = 0, **options) -> None:
        options.setdefault("acquisition", "ei")
        options.setdefault("n_steps", 1)
        super().__init__(space, seed, **options)
        fid = space.fidelities
        self._space1 = restrict_fidelities(space, fid.largest_runnable,
                                           steps_min=fid.steps_max, steps_max=fid.steps_max,
                                           target_steps=fid.steps_max)

    @property
    def model_space(self) -> SearchSpace:
        return self._space1

    def _training_data(self, history: Sequence[TrialResult]) -> tuple[Tensor, Tensor, Tensor]:
        fid = self.space.fidelities
        done = [r for r in history if r.spec.model_size == fid.largest_runnable
                and r.last_step >= fid.steps_max]
        return training_data(done, self._space1, final_only=True)

    def _acquisition(self, gp: MFMSGP, best_f: float, iteration: int,
                     g: torch.Generator) -> CostAwareAcquisition:
        return EIPerCost(gp, best_f, alpha=0.0)


def _fit_key(X: Tensor, y: Tensor, groups: Tensor, warm: dict[str, Tensor] | None,
             optimize: bool, seed: int) -> str:
    """Digest of everything a surrogate build depends on (besides the strategy's options)."""
    h = hashlib.blake2b(digest_size=20)
    for t in (X, y, groups):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    for name in sorted(warm or {}):
        h.update(name.encode())
        h.update(warm[name].contiguous().numpy().tobytes())  # type: ignore[index]
    h.update(f"{optimize}:{seed}".encode())
    return h.hexdigest()
