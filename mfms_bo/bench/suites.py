"""Named sets of benchmark problems (``mfms bench --suite NAME``).

``standard`` is what search decisions are made on: simulated problems where the uniform
mixture is far from the optimum and the optimum moves with scale, plus the three published
run tables. ``easy`` keeps the first four simulated problems, on which the uniform mixture is
already within 0.7% of the optimum: useful as a regression check, not as evidence.
"""

from __future__ import annotations

__all__ = ["SUITES", "suite_problems"]

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
