"""Strategies behind one interface: ``propose(history, pending, n) -> list[TrialSpec]``."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
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
from mfms_bo.surrogate.mfms_gp import SurrogateConfig

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
    options = dict(options or {})
    check_option_names(f"strategy {name!r}", option_names(cls), options)
    surrogate = options.get("surrogate")
    if issubclass(cls, MFMSBO) and isinstance(surrogate, dict):
        check_option_names(f"strategy {name!r}: surrogate", _SURROGATE_FIELDS, surrogate)
    try:
        return cls(space, seed=seed, **options)
    except TypeError as exc:
        raise UnknownStrategyError(f"strategy {name!r}: bad options: {exc}") from None
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError(f"strategy {name!r}: {exc}") from None


_SURROGATE_FIELDS = tuple(f.name for f in dataclasses.fields(SurrogateConfig) if f.name != "kernel")


def option_names(cls: type[Strategy]) -> tuple[str, ...]:
    """The options a strategy class takes: the keyword parameters of its ``__init__`` and,
    where it forwards ``**options``, of its bases' (``mf-bo`` takes ``mfms-bo``'s)."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names += [p.name for p in params if p.kind is p.KEYWORD_ONLY
                  or (p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("self", "space",
                                                                           "seed"))]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return tuple(dict.fromkeys(names))


def check_option_names(where: str, known: tuple[str, ...], options: dict[str, Any]) -> None:
    """Refuse unknown option names, suggesting the closest known one: a typo must not be
    silently ignored, nor answered with a Python ``TypeError`` about ``__init__``.

    Raises:
        UnknownStrategyError: ``"<where>: unknown option 'acquistion'; did you mean
            'acquisition'? (options: ...)"``.
    """
    for key in options:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownStrategyError(f"{where}: unknown option {key!r}{hint} (options: "
                                   f"{', '.join(known) or 'none'})")
