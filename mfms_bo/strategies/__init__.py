"""Strategies behind one interface: ``propose(history, pending, n) -> list[TrialSpec]``."""

from __future__ import annotations

from typing import Any

from mfms_bo.errors import UnknownStrategyError, ValidationError
from mfms_bo.space import SearchSpace
from mfms_bo.strategies.base import Strategy, restrict_fidelities, training_data
from mfms_bo.strategies.bo import MFMSBO, MultiFidelityBO, SingleFidelityBO
from mfms_bo.strategies.hyperband import Hyperband
from mfms_bo.strategies.peers import TPE, DEHBStrategy  # optuna/dehb imported lazily
from mfms_bo.strategies.random_search import RandomSearch
from mfms_bo.strategies.regmix import RegMix  # lightgbm imported lazily
from mfms_bo.strategies.screen import ScreenThenConfirm
from mfms_bo.strategies.uniform import UniformMixture

__all__ = [
    "STRATEGIES",
    "Hyperband",
    "MFMSBO",
    "MultiFidelityBO",
    "RandomSearch",
    "RegMix",
    "ScreenThenConfirm",
    "SingleFidelityBO",
    "Strategy",
    "UniformMixture",
    "make_strategy",
    "restrict_fidelities",
    "training_data",
]

STRATEGIES: dict[str, type[Strategy]] = {
    "mfms-bo": MFMSBO,
    "random": RandomSearch,
    "hyperband": Hyperband,
    "sf-bo": SingleFidelityBO,
    "mf-bo": MultiFidelityBO,
    # Practitioners' baselines (DESIGN section 5): no search, screen-then-confirm, RegMix.
    "uniform": UniformMixture,
    "screen": ScreenThenConfirm,
    "regmix": RegMix,
    # Peer tools through their own packages (`pip install 'mfms-bo[peers]'`).
    "tpe": TPE,
    "dehb": DEHBStrategy,
}


def make_strategy(name: str, space: SearchSpace, seed: int = 0,
                  options: dict[str, Any] | None = None) -> Strategy:
    """Build a registered strategy by name (the names the REST API accepts)."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise UnknownStrategyError(
            f"unknown strategy {name!r}; choose from {sorted(STRATEGIES)}") from None
    try:
        return cls(space, seed=seed, **(options or {}))
    except TypeError as exc:
        raise UnknownStrategyError(f"strategy {name!r}: bad options: {exc}") from None
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError(f"strategy {name!r}: {exc}") from None
