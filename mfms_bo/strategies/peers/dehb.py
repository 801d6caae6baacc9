"""``dehb``: DEHB (Awad et al. 2021, the ``dehb`` package) over a size x steps budget.

DEHB runs Hyperband's brackets with differential evolution instead of random sampling:
each fidelity keeps a DE subpopulation, and new configurations are mutants of the
better ones one rung below. Here a configuration is a point of the unit cube mapped to a
mixture by :func:`~mfms_bo.strategies.peers.unit_to_mixture` (as for ``tpe``), and DEHB's
continuous fidelity is a relative cost in ``[min, 1]`` (1 = the largest runnable size at
the maximum steps), mapped to the runnable ``(size, steps)`` grid of
:func:`mfms_bo.optimize.fidelity_grid`. DEHB's rungs are ``eta``-spaced in that cost, as
:func:`mfms_bo.strategies.hyperband.budget_ladder`'s are.

**Why a replay.** DEHB's ``ask``/``tell`` interface is stateful (populations, brackets,
its random generator), but strategies here must be rebuilt from the history alone. So every
call constructs DEHB with the study's seed and replays the study's exact sequence of calls:
each spec records in ``metadata["dehb"]`` its ask index, DEHB's own config vector and
fidelity, the asks whose results were told just before it (``after``, in order) and any
asks answered from a pool's table without running (``cached``, with the value told).
DEHB is deterministic given its seed and that sequence, so the replayed asks reproduce the
recorded ones; the replay checks that, and should a study outlive a DEHB upgrade it tells
DEHB the recorded configs anyway (``DEHB.tell(replay=True)`` does the same) and counts
the mismatch in :attr:`DEHBStrategy.replay_mismatches`.

**Pools.** A configuration runs the nearest pool member not yet run at its fidelity. When
every member has been run there, the configuration's nearest member with a result at that
fidelity answers DEHB at no cost - a table lookup is deterministic, so rerunning it would
only spend budget on a number already known - and DEHB is asked again.

Trials DEHB did not propose (warm starts, a server's random fallback) count for the
recommendation - the best run at the highest fidelity reached - but are not told to DEHB,
which only takes results of its own asks.
"""

from __future__ import annotations

import functools
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mfms_bo.cost import CostModel
from mfms_bo.limits import real_number, whole_number
from mfms_bo.optimize import fidelity_grid
from mfms_bo.recommend import final_objective
from mfms_bo.space import SearchSpace
from mfms_bo.strategies.base import Strategy
from mfms_bo.trials import TrialResult, TrialSpec

__all__ = ["DEHBStrategy", "assign_levels"]

_KEY = "dehb"


class DEHBStrategy(Strategy):
    """DEHB over mixtures, with model size and steps as its budget.

    Args:
        eta: DEHB's (and Hyperband's) reduction factor.
        n_steps: log-spaced step counts per size in the fidelity grid.
        mutation_factor, crossover_prob, de_strategy: DEHB's DE settings (its defaults).
        max_cached: most free table answers per call on a pool before giving up (a pool
            exhausted at every fidelity DEHB asks for would otherwise loop forever).
        max_rungs: most fidelity levels, i.e. ``min_fidelity >= eta^-(max_rungs - 1)``. A
            ladder whose cheapest run costs 1/1000 of the largest gives DEHB seven rungs
            and a first bracket of 729 configurations; DEHB's users bound the range
            (its examples use 1/27 to 1/81), and so does the default here.
    """

    name = "dehb"

    def __init__(self, space: SearchSpace, seed: int = 0, eta: int = 3, n_steps: int = 4,
                 mutation_factor: float = 0.5, crossover_prob: float = 0.5,
                 de_strategy: str = "rand1_bin", max_cached: int = 1000,
                 max_rungs: int = 5) -> None:
        super().__init__(space, seed)
        from mfms_bo.strategies.peers import require

        require("dehb", self.name)  # fail at study creation, not at the first proposal
        self.eta = whole_number("eta", eta, 2, 100)
        self.n_steps = whole_number("n_steps", n_steps, 1, 32)
        self.mutation_factor = real_number("mutation_factor", mutation_factor, 0.0, 2.0,
                                           low_open=True)
        self.crossover_prob = real_number("crossover_prob", crossover_prob, 0.0, 1.0)
        self.de_strategy = str(de_strategy)
        self.max_cached = whole_number("max_cached", max_cached, 1, 100_000)
        costs = [c for _, c in self._grid(None)]
        self._top = max(costs)
        rungs = whole_number("max_rungs", max_rungs, 2, 32)
        self.min_fidelity = max(min(costs) / self._top, float(self.eta) ** -(rungs - 1))
        if min(costs) / self._top >= 1.0:
            raise ValueError("dehb: needs runnable fidelities of different costs (more than "
                             "one model size, or a steps range)")
        #: replayed asks that did not reproduce their recorded spec in the last call
        self.replay_mismatches = 0

    # -- fidelities ---------------------------------------------------------------------------
    def _grid(self, max_model_size: float | None) -> list[tuple[tuple[float, int], float]]:
        """Runnable ``(m, z)`` with their prior costs (``params x steps``), cheapest first.

        The prior, not the cost model refitted to observed costs: DEHB's fidelities and
        their map to the grid must stay fixed for the life of the study (a rung mixing two
        fidelities would compare losses on different scales), and they are needed before
        any run has reported a cost. Hyperband does the same.
        """
        prior = CostModel()
        fids = fidelity_grid(self.space, self.n_steps, max_model_size)
        out = [((m, z), float(prior.predict(m, z))) for m, z in fids]
        return sorted(out, key=lambda t: (t[1], -t[0][0]))

    def levels(self, fidelities: Sequence[float], max_model_size: float | None
               ) -> dict[float, tuple[float, int]]:
        """DEHB fidelity -> runnable ``(m, z)``: the grid point closest in log-cost, keeping
        distinct rungs on distinct points while the grid has enough of them (a worker
        capped below the largest size gets the top rungs squeezed onto what it can run,
        not several rungs on one fidelity)."""
        self._runnable_max(max_model_size)  # the ladder message when nothing fits
        grid = self._grid(max_model_size)
        targets = sorted(float(f) for f in fidelities)
        idx = assign_levels(targets, [c / self._top for _, c in grid])
        return {f: grid[i][0] for f, i in zip(targets, idx, strict=True)}

    # -- DEHB itself --------------------------------------------------------------------------
    def optimizer(self) -> Any:
        """A fresh DEHB with this study's seed and settings (no files, no log output)."""
        return _quiet_dehb()(
            cs=None, f=None, dimensions=self.space.k, min_fidelity=self.min_fidelity,
            max_fidelity=1.0, eta=self.eta, mutation_factor=self.mutation_factor,
            crossover_prob=self.crossover_prob, strategy=self.de_strategy, seed=self.seed,
            n_workers=1, save_freq="end")

    def _value(self, r: TrialResult) -> float:
        """What DEHB is told: the final objective (a failed run's partial curve counts at
        its last step, which its shorter training already penalises); inf if none."""
        v = final_objective(r, self.space)
        return math.inf if v is None else float(v)

    def replay(self, history: Sequence[TrialResult], pending: Sequence[TrialSpec]
               ) -> tuple[Any, dict[int, dict], set[int], dict[int, TrialResult]]:
        """DEHB brought to where the study left it: ``(dehb, jobs, told, results)`` with
        the replayed job of every ask index, the indices told, and the results by index."""
        opt = self.optimizer()
        records: dict[int, Mapping[str, Any]] = {}
        for spec in [*(r.spec for r in history), *pending]:
            rec = self._record(spec)
            if rec is not None:
                records.setdefault(int(rec["ask"]), rec)  # a retried run repeats its record
        results: dict[int, TrialResult] = {}
        for r in history:
            rec = self._record(r.spec)
            if rec is not None:
                results[int(rec["ask"])] = r
        jobs: dict[int, dict] = {}
        told: set[int] = set()
        self.replay_mismatches = 0

        def ask_up_to(i: int) -> dict | None:
            # Asks whose spec is lost (none in history or pending) are asked and never told,
            # as DEHB would see a job that never came back.
            while len(jobs) <= i:
                jobs[len(jobs)] = opt.ask()
            return jobs.get(i)

        for j in sorted(records):
            rec = records[j]
            for i in rec.get("after") or []:
                i = int(i)
                if i in jobs and i not in told and i in results:
                    opt.tell(jobs[i], {"fitness": self._value(results[i]),
                                       "cost": float(results[i].cost or 0.0)})
                    told.add(i)
            for c, value in rec.get("cached") or []:
                if int(c) >= len(jobs):
                    job = ask_up_to(int(c))
                    opt.tell(job, {"fitness": float(value), "cost": 0.0})
                    told.add(int(c))
            if j < len(jobs):
                continue  # a malformed record reusing an index; keep the first
            job = ask_up_to(j)
            assert job is not None
            x = [float(v) for v in rec["config"]]
            same_x = [float(v) for v in job["config"]] == x
            if not same_x or float(job["fidelity"]) != float(rec["fidelity"]):
                self.replay_mismatches += 1
                if not same_x:  # DEHB's own replay: keep its bookkeeping, the recorded config
                    cfg = _np().asarray(x, dtype=float)
                    job["config"] = cfg
                    opt.config_repository.configs[job["config_id"]].config = cfg.copy()
        return opt, jobs, told, results

    def _record(self, spec: TrialSpec) -> Mapping[str, Any] | None:
        rec = spec.metadata.get(_KEY) if spec.metadata else None
        if not isinstance(rec, Mapping):
            return None
        try:
            ok = (int(rec["ask"]) >= 0 and len(rec["config"]) == self.space.k
                  and math.isfinite(float(rec["fidelity"])))
        except (KeyError, TypeError, ValueError):
            return None
        return rec if ok else None

    # -- proposals ----------------------------------------------------------------------------
    def propose(
        self,
        history: Sequence[TrialResult],
        pending: Sequence[TrialSpec],
        n: int = 1,
        max_model_size: float | None = None,
    ) -> list[TrialSpec]:
        from mfms_bo.strategies.peers import nearest_fresh, unit_to_mixture

        opt, jobs, told, results = self.replay(history, pending)
        levels = self.levels(opt.fidelities, max_model_size)
        # Results that arrived since the last proposal, told in history order.
        after: list[int] = []
        for r in history:
            rec = self._record(r.spec)
            i = None if rec is None else int(rec["ask"])
            if i is not None and i in jobs and i not in told and results.get(i) is r:
                opt.tell(jobs[i], {"fitness": self._value(r), "cost": float(r.cost or 0.0)})
                told.add(i)
                after.append(i)
        pool = self.space.candidates
        used = [*(r.spec for r in history), *pending]
        out: list[TrialSpec] = []
        cached: list[list[float]] = []
        n_cached = 0
        while len(out) < n:
            j = len(jobs)
            job = jobs[j] = opt.ask()
            x = [float(v) for v in job["config"]]
            f = float(job["fidelity"])
            m, z = levels[f]
            w = unit_to_mixture(self.space, x)
            if pool is not None:
                i = nearest_fresh(self.space, w, [*used, *out], m, z)
                if i is None:
                    value = self._lookup(w, m, z, history)
                    if value is None or n_cached >= self.max_cached:
                        break  # only pending runs there, or nothing left to learn
                    opt.tell(job, {"fitness": value, "cost": 0.0})
                    cached.append([j, value])
                    n_cached += 1
                    continue
                w = pool[i]
            meta = {_KEY: {"ask": j, "config": x, "fidelity": f,
                           "bracket": int(job["bracket_id"]), "after": after,
                           "cached": cached}}
            after, cached = [], []
            out.append(self._spec(w, m, z, meta))
        return out

    def _lookup(self, w: torch.Tensor, model_size: float, steps: int,
                history: Sequence[TrialResult]) -> float | None:
        """The objective of the finished run at ``(model_size, steps)`` whose mixture is
        nearest to ``w`` (a pool's table answer), or None when there is none."""
        best: tuple[float, float] | None = None
        doms = self.space.mixtures.domains
        for r in history:
            if r.spec.model_size != model_size or r.spec.steps != steps:
                continue
            v = final_objective(r, self.space)
            if v is None:
                continue
            u = torch.tensor([float(r.spec.mixture.get(d, 0.0)) for d in doms],
                             dtype=torch.float64)
            dist = float((u - w).pow(2).sum())
            if best is None or dist < best[0]:
                best = (dist, float(v))
        return None if best is None else best[1]


def assign_levels(targets: Sequence[float], costs: Sequence[float]) -> list[int]:
    """For ascending ``targets``, indices into ascending ``costs`` minimising the summed
    ``|log(cost / target)|``, strictly increasing when there are at least as many costs as
    targets (a small dynamic programme); otherwise each target's nearest cost."""
    F, G = len(targets), len(costs)

    def d(i: int, j: int) -> float:
        return abs(math.log(costs[j] / targets[i]))

    if F == 0:
        return []
    if G < F:
        return [min(range(G), key=lambda j: d(i, j)) for i in range(F)]
    inf = math.inf
    dp = [[inf] * G for _ in range(F)]
    back = [[-1] * G for _ in range(F)]
    for j in range(G):
        dp[0][j] = d(0, j)
    for i in range(1, F):
        best, arg = inf, -1
        for j in range(G):
            if j > 0 and dp[i - 1][j - 1] < best:
                best, arg = dp[i - 1][j - 1], j - 1
            if arg >= 0:
                dp[i][j] = best + d(i, j)
                back[i][j] = arg
    j = min(range(G), key=lambda jj: dp[F - 1][jj])
    out = [j]
    for i in range(F - 1, 0, -1):
        j = back[i][j]
        out.append(j)
    return out[::-1]


def _np() -> Any:
    import numpy

    return numpy


class _Silent:
    """A logger that drops everything (DEHB logs every step at INFO)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


@functools.cache
def _quiet_dehb() -> type:
    """DEHB without its side effects: it opens a log file (and a loguru writer thread) per
    instance, which a strategy rebuilt on every proposal must not do."""
    from mfms_bo.strategies.peers import require

    DEHB = require("dehb", "dehb").DEHB

    class QuietDEHB(DEHB):  # type: ignore[misc, valid-type]
        def _setup_logger(self, *args: Any, **kwargs: Any) -> None:
            # An existing folder: DE subpopulations ``mkdir`` it; nothing is written there
            # because ``save_freq="end"`` only saves at the end of ``run``, never called.
            self.output_path = Path(tempfile.gettempdir())
            self.logger = _Silent()
            self.log_filename = None

    return QuietDEHB
