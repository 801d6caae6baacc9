"""Named sets of benchmark problems (``mfms bench --suite NAME``).

``standard`` is what search decisions are made on: simulated problems where the uniform
mixture is far from the optimum and the optimum moves with scale, plus the three published
run tables. ``easy`` keeps the first four simulated problems, on which the uniform mixture is
already within 0.7% of the optimum: useful as a regression check, not as evidence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mfms_bo.bench.problems.simulated import SimulatedProblem

__all__ = ["SUITES", "simulated_suite_problems", "suite_problems"]

_TABLES = ["regmix-60m", "mixinglaws-5mix", "mixinglaws-redpajama"]
_EASY = ["sim-k3", "sim-k5", "sim-k6-extrap", "sim-k8-extrap"]


def _standard() -> list[str]:
    from mfms_bo.bench.problems.simulated import hard_simulated_problems

    return [*hard_simulated_problems(), *_TABLES]


SUITES = {"standard": _standard, "easy": lambda: list(_EASY)}


def suite_problems(name: str) -> list[str]:
    """The problem names of suite ``name``.

    Raises:
        ValueError: an unknown suite, naming the known ones.
    """
    try:
        return SUITES[name]()
    except KeyError:
        raise ValueError(f"unknown suite {name!r}; known: {sorted(SUITES)}") from None


def simulated_suite_problems(name: str, only: list[str] | None = None
                             ) -> dict[str, SimulatedProblem]:
    """The simulated problems of suite ``name`` (the scripts in ``bench/`` that need a
    problem's closed form: its optimum at any size, or its noise-free objective), or just
    those named in ``only``.

    Raises:
        ValueError: an unknown suite, or a name in ``only`` that is not among its simulated
            problems, naming the known ones.
    """
    from mfms_bo.bench.problems import simulated_problems
    from mfms_bo.bench.problems.simulated import hard_simulated_problems

    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; known: {sorted(SUITES)}")
    problems = hard_simulated_problems() if name == "standard" else simulated_problems()
    if not only:
        return problems
    unknown = sorted(set(only) - set(problems))
    if unknown:
        raise ValueError(f"unknown problem(s) {unknown} in the {name} suite; "
                         f"choose from {sorted(problems)}")
    return {n: problems[n] for n in only}
