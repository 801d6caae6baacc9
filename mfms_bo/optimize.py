"""Maximising an acquisition over simplex x size ladder x steps.

Why not gradient-based SLSQP with an equality constraint: through ``optimize_acqf`` it was
seen returning far worse points than plain Dirichlet sampling, and acquisitions
over mixtures are multi-modal. So: score a large feasible candidate set (Dirichlet samples,
or the whole pool for pool-based studies, plus caller-supplied seeds such as the current best
mixtures) at every fidelity on the grid, then polish the top few by a shrinking local random
search whose proposals are projected back onto the bounded simplex - bounds and the
sum-to-one constraint hold exactly at every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mfms_bo.space import SearchSpace

__all__ = ["Fidelity", "ScoredQuery", "excluded", "fidelity_grid", "maximize_acquisition",
           "maximize_on_simplex", "score_grid"]

Fidelity = tuple[float, int]


@dataclass(frozen=True)
class ScoredQuery:
    """A maximiser: mixture ``k``, fidelity, and its acquisition value."""

    mixture: Tensor
    model_size: float
    steps: int
    score: float


def fidelity_grid(space: SearchSpace, n_steps: int = 4, max_model_size: float | None = None,
                  sizes: tuple[float, ...] | None = None) -> list[Fidelity]:
    """Runnable ``(m, z)`` pairs: the size ladder x ``n_steps`` log-spaced step counts.

    ``max_model_size`` drops sizes a worker can't run; ``sizes`` restricts the ladder.
    """
    fid = space.fidelities
    ladder = sizes if sizes is not None else fid.model_sizes
    if max_model_size is not None:
        ladder = tuple(m for m in ladder if m <= max_model_size)
    lo, hi = fid.steps_min, fid.steps_max
    if hi == lo or n_steps <= 1:
        steps = [hi]
    else:
        steps = sorted({int(round(math.exp(v))) for v in
                        torch.linspace(math.log(lo), math.log(hi), n_steps).tolist()})
        steps[-1] = hi
    return [(float(m), int(z)) for m in ladder for z in steps]


def maximize_on_simplex(
    score: Callable[[Tensor], Tensor],
    space: SearchSpace,
    start: Tensor,
    rounds: int = 4,
    n_local: int = 48,
    scales: tuple[float, ...] = (0.15, 0.05, 0.015),
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Local random search from each row of ``start`` (``s x k``); returns improved rows and
    their scores. Proposals are Gaussian steps projected onto the bounded simplex.

    ``score`` is always called on ``s * j`` rows ordered start-major (row ``r`` descends
    from start ``r // j``), so one call can score every start's proposals with that start's
    own context (e.g. its fidelity)."""
    W = start.clone()
    vals = score(W)
    for _ in range(rounds):
        for scale in scales:
            noise = torch.randn(W.shape[0], n_local, W.shape[1], generator=generator,
                                dtype=W.dtype) * scale
            cand = space.mixtures.project((W.unsqueeze(1) + noise).reshape(-1, W.shape[1]))
            cv = score(cand).reshape(W.shape[0], n_local)
            best_v, best_i = cv.max(dim=1)
            better = best_v > vals
            W[better] = cand.reshape(W.shape[0], n_local, -1)[better, best_i[better]]
            vals = torch.where(better, best_v, vals)
    return W, vals


def excluded(W: Tensor, M: Tensor, Z: Tensor, exclude: Tensor) -> Tensor:
    """Which of the ``n`` runs ``(W, M, Z)`` repeat a row ``[w, m, z]`` of ``exclude``: the
    same mixture and size for at most as many steps (on a pool, a table entry already
    bought)."""
    key = torch.cat([W, M.unsqueeze(-1)], dim=-1)
    same = (key.unsqueeze(1) - exclude[:, :-1].unsqueeze(0)).abs().amax(-1) < 1e-9
    return (same & (Z.unsqueeze(1) <= exclude[:, -1].unsqueeze(0))).any(-1)


def score_grid(
    score: Callable[[Tensor, Tensor, Tensor], Tensor],
    space: SearchSpace,
    W: Tensor,
    fidelities: list[Fidelity],
    exclude: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Every mixture of ``W`` at every fidelity, fidelity-major, scored: ``(Wr, M, Z, X,
    vals)``. ``score(X, M, Z)`` gets the GP inputs, sizes and steps of up to 2048 rows at a
    time (one call shares the kernel work across fidelities); a run that would repeat a row
    of ``exclude`` (see :func:`excluded`) scores ``-inf``."""
    F = torch.tensor(fidelities, dtype=torch.float64)  # f x 2
    nW = W.shape[0]
    Wr = W.repeat(F.shape[0], 1)
    M = F[:, 0].repeat_interleave(nW)
    Z = F[:, 1].repeat_interleave(nW)
    X = space.encode(Wr, M, Z)
    vals = torch.cat([score(X[i:i + 2048], M[i:i + 2048], Z[i:i + 2048])
                      for i in range(0, X.shape[0], 2048)])
    if exclude is not None and exclude.numel():
        vals = torch.where(excluded(Wr, M, Z, exclude), torch.full_like(vals, -math.inf), vals)
    return Wr, M, Z, X, vals


def maximize_acquisition(
    acq: Callable[[Tensor, Tensor], Tensor],
    space: SearchSpace,
    fidelities: list[Fidelity],
    cost: Callable[[Tensor, Tensor], Tensor],
    n_mixtures: int = 256,
    extra_mixtures: Tensor | None = None,
    n_polish: int = 4,
    exclude: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> ScoredQuery:
    """Best ``(w, m, z)`` for an acquisition ``acq(X, cost)`` over the grid.

    Args:
        acq: scores ``n x d`` GP inputs given ``n`` costs.
        space: search space (a candidate pool restricts mixtures to the pool; no polishing).
        fidelities: ``(m, z)`` pairs to consider.
        cost: predicted cost of ``n`` sizes and ``n`` steps.
        n_mixtures: random mixtures scored at every fidelity (ignored with a pool).
        extra_mixtures: ``e x k`` mixtures always included (e.g. current best guesses).
        n_polish: top candidates refined by local search (continuous spaces only).
        exclude: ``p x (k + 2)`` rows ``[w, m, z]``: a candidate with the same mixture and
            size and at most ``z`` steps is skipped (it would repeat a run on a pool).
    """
    if not fidelities:
        raise ValueError("maximize_acquisition: no runnable fidelity")
    pool = space.candidates is not None
    W = space.mixture_candidates(n_mixtures, generator)
    if extra_mixtures is not None and not pool and extra_mixtures.numel():
        W = torch.cat([W, extra_mixtures.to(W.dtype)])
    k = space.k
    Wr, M, Z, _, vals = score_grid(lambda X, Ms, Zs: acq(X, cost(Ms, Zs)), space, W,
                                   fidelities, exclude)
    order = torch.argsort(vals, descending=True)
    best = int(order[0])
    best_w, best_m, best_z, best_v = Wr[best], float(M[best]), int(Z[best]), float(vals[best])
    if not pool and n_polish > 0:
        # Polish the top starts together, each at its own fidelity: one acquisition call
        # per local-search step instead of one per start.
        top = order[: min(n_polish, order.numel())]
        top = top[torch.isfinite(vals[top])]
        if top.numel():
            Ms, Zs = M[top], Z[top]
            cs = cost(Ms, Zs)

            def score(Wc: Tensor) -> Tensor:
                owner = torch.arange(top.numel()).repeat_interleave(Wc.shape[0] // top.numel())
                return acq(space.encode(Wc, Ms[owner], Zs[owner]), cs[owner])

            w_opt, v_opt = maximize_on_simplex(score, space, Wr[top], generator=generator)
            j = int(torch.argmax(v_opt))
            if float(v_opt[j]) > best_v:
                best_w, best_m, best_z = w_opt[j], float(Ms[j]), int(Zs[j])
                best_v = float(v_opt[j])
    return ScoredQuery(best_w[:k].clone(), best_m, best_z, best_v)
