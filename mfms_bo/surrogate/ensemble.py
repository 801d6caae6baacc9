"""Model averaging over the size lengthscale of the mixture x fidelity factor.

Why: how far up the size ladder a mixture's advantage carries is set by one
hyperparameter, the size lengthscale of the factor that multiplies the mixture kernel.
Until mixtures have been compared at two or more sizes the data cannot identify it, so a
point estimate sits at its prior mode, and that one number decides the whole early search:
the generic mode (0.33) says the smallest size shares ~4% of the target's mixture effect,
so no cheap run looks worth buying; a long one (1.0) says ~52%, so cheap runs look
decisive even where rankings do not transfer. Measured: each fixed choice wins on some
problems and loses badly on others (docs/decisions.md).

Averaging the posterior over a few values of that lengthscale, each weighted by its
marginal likelihood times the lengthscale prior's density there (a quadrature version of
integrating the hyperparameter out under the same prior the point fit uses, as in Snoek et
al. 2012), keeps every plausible hypothesis alive while the data are silent, so
acquisitions value a cheap run for what it *might* teach, and lets the evidence settle the
value once several sizes have been run: members whose weight falls under ``min_weight``
are dropped, so a well-identified surrogate costs the same as a single GP. Weighting by
the prior matters: equal weights would silently replace the model's prior by a flat one
over the grid, which puts a third of the belief on "small runs rank like the target"
and was measured to mislead the search where they do not (docs/decisions.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mfms_bo.surrogate.mfms_gp import MFMSGP

__all__ = ["SurrogateEnsemble", "size_lengthscale_ensemble"]


class SurrogateEnsemble:
    """A weighted mixture of fitted MFMS-GPs on the same data.

    Offers the prediction interface of :class:`MFMSGP` (``predict``, ``predict_mean``,
    ``fantasize``) with the moments of the mixture; acquisitions that need one GP's
    internals average over :attr:`members` with :attr:`weights`.
    """

    def __init__(self, members: Sequence[MFMSGP], weights: Tensor) -> None:
        if len(members) == 0 or len(members) != weights.numel():
            raise ValueError("SurrogateEnsemble: need one weight per member, at least one")
        w = weights.to(torch.float64).reshape(-1).clamp(min=0.0)
        if not torch.isfinite(w).all() or float(w.sum()) <= 0.0:
            raise ValueError("SurrogateEnsemble: weights must be finite and not all zero")
        self.members = list(members)
        self.weights = w / w.sum()

    def predict(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of the mixture of member posteriors (law of total variance)."""
        means, variances = zip(*(m.predict(X) for m in self.members), strict=True)
        M = torch.stack(means)  # members x n
        V = torch.stack(variances)
        w = self.weights.unsqueeze(-1)
        mean = (w * M).sum(0)
        var = (w * (V + (M - mean) ** 2)).sum(0)
        return mean, var.clamp(min=1e-12)

    def predict_mean(self, X: Tensor) -> Tensor:
        """Weighted posterior mean (objective units)."""
        return torch.stack([m.predict_mean(X) for m in self.members]).mul(
            self.weights.unsqueeze(-1)).sum(0)

    def fantasize(self, X: Tensor) -> SurrogateEnsemble:
        """Every member conditioned on ``X`` at its own mean (kriging believer), weights
        unchanged: believed values add no evidence for or against a member."""
        if X.shape[0] == 0:
            return self
        out = SurrogateEnsemble([m.fantasize(X) for m in self.members], self.weights)
        out.weights = self.weights  # already normalised: renormalising moves the last bits
        return out

    def size_lengthscales(self) -> list[float | None]:
        """Each member's size lengthscale, in member order (for traces and tests)."""
        return [m.size_lengthscale() for m in self.members]


def size_lengthscale_ensemble(
    gp: MFMSGP,
    values: Sequence[float],
    min_weight: float = 0.01,
) -> MFMSGP | SurrogateEnsemble:
    """``gp`` plus copies with the size lengthscale set to each of ``values``, weighted by
    marginal likelihood times the lengthscale prior's density at each value.

    Values within 10% of the fitted lengthscale are skipped (the fit already stands for
    them). Returns ``gp`` itself when it has no mixture x fidelity factor, when ``values``
    is empty, or when every alternative falls below ``min_weight``.
    """
    fitted = gp.size_lengthscale()
    if fitted is None or not values:
        return gp
    members = [gp]
    for v in values:
        if abs(float(v) - fitted) <= 0.1 * fitted:
            continue
        alt = gp.with_size_lengthscale(float(v))
        if alt is not None:
            members.append(alt)
    if len(members) == 1:
        return gp
    log_post = torch.tensor([m.log_marginal_likelihood() + m.size_lengthscale_log_prior()
                             for m in members], dtype=torch.float64)
    weights = torch.softmax(log_post, dim=0)
    keep = [i for i in range(len(members)) if float(weights[i]) >= min_weight]
    if len(keep) == 1:
        return members[keep[0]]
    return SurrogateEnsemble([members[i] for i in keep], weights[keep])
