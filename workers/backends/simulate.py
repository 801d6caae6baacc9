"""``simulate``: answer trials from a benchmark problem (demos, tests, load tests).

The problem's domains must be the study's domains (a study created from the problem, as
``mfms demo`` does). ``time_per_cost`` sleeps in proportion to a trial's cost so that
schedules look like real ones; the default 0 answers at once.
"""

from __future__ import annotations

import time
import zlib

from mfms_bo.bench.harness import load_problem
from mfms_bo.bench.problem import Problem
from mfms_client.schemas import TrialAssignment
from workers.backends import Report

__all__ = ["SimulateBackend"]


class SimulateBackend:
    name = "simulate"
    #: A simulator knows one problem's losses: it runs studies of exactly its domains (a
    #: study of a subset would get losses for domains it does not have).
    exact_domains = True

    def __init__(self, problem: str | Problem, time_per_cost: float = 0.0, seed: int = 0
                 ) -> None:
        self.problem = load_problem(problem) if isinstance(problem, str) else problem
        self.domains: tuple[str, ...] | None = tuple(self.problem.domains)
        self.time_per_cost = float(time_per_cost)
        self.seed = int(seed)

    def run(self, trial: TrialAssignment, report: Report) -> float:
        p = self.problem
        if set(trial.mixture) != set(p.domains):
            raise ValueError(f"simulate: problem {p.name!r} simulates the domains "
                             f"{list(p.domains)}, not the trial's {sorted(trial.mixture)}")
        # Noise seeded by trial id: a retried trial sees a fresh draw, a replay the same one.
        seed = zlib.crc32(f"{self.seed}:{trial.trial_id}:{trial.attempt}".encode())
        curve = dict(p.evaluate(dict(trial.mixture), trial.model_size, trial.steps, seed=seed))
        total = float(p.cost(trial.model_size, trial.steps))
        # The problem's checkpoints are the study's when the study was made from it.
        for step in sorted(curve):
            if self.time_per_cost > 0:
                time.sleep(self.time_per_cost * total / len(curve))
            report(step, curve[step], total * step / trial.steps)
        return total
