"""A study's stored configuration -> the library's ``SearchSpace`` and strategy.

Building both is also how a new study is validated: every semantic check (bounds that admit
no mixture, a target below the ladder, unknown objective domains, bad strategy options)
lives once, in ``mfms_bo``, and its message reaches the client unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mfms_bo.errors import ValidationError
from mfms_bo.online import controller_from_spec
from mfms_bo.space import FidelitySpace, MixtureSpace, SearchSpace
from mfms_bo.strategies import Strategy, make_strategy
from mfms_bo.trials import validate_losses
from server.schemas import LOSS_MAX, LOSS_MIN, unstorable

__all__ = ["search_space_of_config", "strategy_of_config", "check_online",
           "check_proportions", "check_storable", "loss_bounds_of_config", "check_losses"]


def search_space_of_config(config: dict[str, Any]) -> SearchSpace:
    """The search space of a study config (the stored ``StudyCreate`` dump)."""
    domains = tuple(config["domains"])
    bounds = {d: (float(b[0]), float(b[1]))
              for d, b in (config.get("mixture_bounds") or {}).items()}
    mixtures = MixtureSpace(domains, bounds=bounds)
    target = config["target"]
    steps = config["steps"]
    fid = FidelitySpace(
        model_sizes=tuple(float(m) for m in config["model_sizes"]),
        steps_min=int(steps["min"]),
        steps_max=int(steps["max"]),
        target_model_size=float(target["model_size"]),
        target_steps=target.get("steps"),
        checkpoints=int(config.get("checkpoints", 8)),
    )
    candidates = None
    if config.get("candidates"):
        rows = [mixtures.validate(c, f"candidates[{i}]").tolist()
                for i, c in enumerate(config["candidates"])]
        candidates = torch.tensor(rows, dtype=torch.float64)
    loss_domains = config.get("loss_domains")
    if loss_domains is not None and len(loss_domains) == 0:
        raise ValidationError("loss_domains: must not be empty when given")
    return SearchSpace(mixtures, fid, config.get("objective_weights"), candidates,
                       tuple(loss_domains) if loss_domains else None)


def strategy_of_config(config: dict[str, Any], seed: int) -> Strategy:
    """The study's strategy, rebuilt from config alone (any server process can do it)."""
    spec = config.get("strategy") or {}
    return make_strategy(spec.get("name", "mfms-bo"), search_space_of_config(config),
                         seed=seed, options=spec.get("options") or {})


def check_online(domains: Sequence[str], spec: Mapping[str, Any],
                 mixture: Mapping[str, float] | None = None, field: str = "online") -> None:
    """Reject an ``online`` mixing spec the worker could not build.

    The worker builds its controller with the same ``controller_from_spec`` call, so a spec
    that passes here cannot fail on a GPU hours later. ``mixture`` is the trial's (uniform
    for a study-wide spec): it is what ``static`` and Aioli's prior default to.

    Raises:
        ValidationError: the library's message, prefixed with ``field`` (-> 422).
    """
    if mixture is None:
        mixture = {d: 1.0 / len(domains) for d in domains}
    check_storable(spec, field)
    try:
        controller_from_spec(list(domains), spec, mixture=dict(mixture))
    except ValueError as exc:
        msg = str(exc)
        if not msg.startswith("online"):
            msg = f"online: {msg}"
        raise ValidationError(field + msg.removeprefix("online")) from exc


def check_storable(value: Any, field: str) -> None:
    """Refuse a value JSON or the database cannot store faithfully (NaN or infinity, a NUL
    or lone surrogate in a string): ``schemas.unstorable``, the check request bodies get,
    for values that reach a service some other way.

    Raises:
        ValidationError: naming ``field`` and the path inside it (-> 422).
    """
    bad = unstorable(value)
    if bad is not None:
        path, problem = bad
        raise ValidationError(f"{field}.{path}: {problem}" if path else f"{field}: {problem}")


def loss_bounds_of_config(config: Mapping[str, Any]) -> tuple[float, float]:
    """The study's exclusive loss sanity bounds ``(min, max)``; the defaults for a study
    created before ``loss_bounds`` existed."""
    bounds = config.get("loss_bounds") or {}
    return float(bounds.get("min", LOSS_MIN)), float(bounds.get("max", LOSS_MAX))


def check_losses(losses: Mapping[str, float], space: SearchSpace, config: Mapping[str, Any],
                 field: str = "losses") -> dict[str, float]:
    """A loss report as the study stores it: known domains, finite, and strictly inside the
    study's ``loss_bounds`` - the one check for every path that takes losses (measurements,
    complete, enqueued results, import).

    Raises:
        ValidationError: naming ``field`` and the domain, e.g.
            ``losses['code']: must be in (0, 10000), got 1e+300`` (-> 422).
    """
    try:
        out = validate_losses(losses, space.reported_domains)
    except ValidationError as exc:
        msg = str(exc)
        raise ValidationError(field + msg.removeprefix("losses")) from exc
    lo, hi = loss_bounds_of_config(config)
    for name, value in out.items():
        if not lo < value < hi:
            raise ValidationError(f"{field}[{name!r}]: must be in ({lo:g}, {hi:g}), got "
                                  f"{value:.10g} (the study's loss_bounds)")
    return out


def check_proportions(proportions: Mapping[str, float], domains: Sequence[str], field: str
                      ) -> dict[str, float]:
    """A reported training mixture as ``{domain: weight}`` over all ``domains``.

    Any point of the simplex is accepted, not only the study's bounds: an online mixer
    decides where the run goes once it starts.

    Raises:
        ValidationError: unknown domain, negative or non-finite weight, or a sum not within
            1e-6 of one (the message names ``field``).
    """
    free = MixtureSpace(tuple(domains))
    return free.to_dict(free.validate(proportions, field))
