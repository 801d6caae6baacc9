"""Peer tools as baselines, run through their own packages: Optuna's TPE and DEHB.

The benchmark compares MFMS-BO against what practitioners would reach for, so these
adapters call the real packages (``pip install 'mfms-bo[peers]'``) rather than
re-implementing them. The packages are imported lazily, inside the adapters: the core
install, ``mfms demo`` and the server never need them, and registering the strategies
imports neither.

Both adapters see a mixture through the same parametrisation, :func:`unit_to_mixture`:
``k`` independent coordinates ``x_i`` in ``(0, 1)`` mapped to ``w_i = -log x_i / sum_j
-log x_j``. If the ``x_i`` are uniform, the ``-log x_i`` are Exp(1) and ``w`` is exactly
Dirichlet(1), i.e. uniform on the simplex. That is why this map and not ``x / sum x``:
a tool's random start-up phase (TPE's first trials, DEHB's initial populations) then
samples mixtures the way :class:`~mfms_bo.strategies.random_search.RandomSearch` does,
instead of crowding the centre of the simplex, and every mixture is reachable in a box
the tools natively search. The price is one redundant direction (scaling all ``-log x_i``
together leaves ``w`` unchanged), which neither TPE nor differential evolution minds.
Per-domain bounds are applied afterwards exactly as :meth:`MixtureSpace.sample` does.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from types import ModuleType

import torch
from torch import Tensor

from mfms_bo.errors import ValidationError
from mfms_bo.space import SearchSpace
from mfms_bo.trials import TrialSpec

__all__ = ["PEERS_HINT", "require", "unit_to_mixture", "mixture_to_unit", "nearest_fresh",
           "TPE", "DEHBStrategy"]

PEERS_HINT = "pip install 'mfms-bo[peers]'"
# Keeps -log(x) finite at the box's edges (a tool may return exactly 0 or 1).
_X_EPS = 1e-12


def require(module: str, strategy: str) -> ModuleType:
    """Import a peer package, or fail with the install command (a ``ValueError``, so
    ``make_strategy`` reports it as a bad study configuration, not a server crash)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ValidationError(
            f"strategy {strategy!r} needs the {module!r} package: {PEERS_HINT}") from exc


def unit_to_mixture(space: SearchSpace, x: Sequence[float]) -> Tensor:
    """A point of the unit cube ``(0, 1)^k`` as a feasible mixture (see the module doc)."""
    v = torch.tensor([min(max(float(xi), _X_EPS), 1.0 - _X_EPS) for xi in x],
                     dtype=torch.float64)
    e = -torch.log(v)
    d = e / e.sum()
    mix = space.mixtures
    lo, hi = mix.lower, mix.upper
    w = lo + (1.0 - float(lo.sum())) * d
    if bool((w > hi + 1e-12).any()):
        w = mix.project(w.unsqueeze(0))[0]
    return w


def mixture_to_unit(space: SearchSpace, w: Tensor) -> list[float]:
    """One preimage of ``w`` under :func:`unit_to_mixture`, for trials a tool did not
    propose (warm starts): ``x_i = exp(-k d_i)``, so the uniform mixture sits at
    ``exp(-1)``, where the Exp(1) coordinates have their mean."""
    mix = space.mixtures
    lo = mix.lower
    free = 1.0 - float(lo.sum())
    d = ((w.to(torch.float64) - lo) / free).clamp(min=0.0) if free > 0 else \
        torch.full((mix.k,), 1.0 / mix.k, dtype=torch.float64)
    d = d / d.sum().clamp(min=1e-300)
    return [min(max(math.exp(-mix.k * float(di)), _X_EPS), 1.0 - _X_EPS) for di in d]


def pool_key(space: SearchSpace, w: Tensor | dict) -> tuple[float, ...]:
    """A mixture rounded for identity checks on a pool (as ``Strategy._shuffled_pool``)."""
    if isinstance(w, dict):
        vals = [float(w.get(d, 0.0)) for d in space.mixtures.domains]
    else:
        vals = [float(v) for v in w.tolist()]
    return tuple(round(v, 9) for v in vals)


def nearest_fresh(space: SearchSpace, w: Tensor, used: Sequence[TrialSpec],
                  model_size: float, steps: int) -> int | None:
    """Index of the pool member nearest to ``w`` (Euclidean) that no spec in ``used`` runs
    at ``(model_size, steps)``; None when every member has been run there."""
    pool = space.candidates
    assert pool is not None
    taken = {pool_key(space, dict(s.mixture)) for s in used
             if s.model_size == model_size and s.steps == steps}
    dist = (pool - w.to(pool.dtype)).pow(2).sum(-1)
    for i in torch.argsort(dist, stable=True).tolist():
        if pool_key(space, pool[i]) not in taken:
            return int(i)
    return None


# The adapters import their packages lazily, so importing them here is free.
from mfms_bo.strategies.peers.dehb import DEHBStrategy  # noqa: E402
from mfms_bo.strategies.peers.tpe import TPE  # noqa: E402
