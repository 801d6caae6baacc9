"""A study's stored configuration -> the library's ``SearchSpace`` and strategy.

Building both is also how a new study is validated: every semantic check (bounds that admit
no mixture, a target below the ladder, unknown objective domains, bad strategy options)
lives once, in ``mfms_bo``, and its message reaches the client unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

from mfms_bo.errors import ValidationError
from mfms_bo.space import FidelitySpace, MixtureSpace, SearchSpace
from mfms_bo.strategies import Strategy, make_strategy

__all__ = ["search_space_of_config", "strategy_of_config"]


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
