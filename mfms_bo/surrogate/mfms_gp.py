"""The MFMS-GP: a GP over (mixture, log model size, log steps) fitted on every checkpoint.

Designed for latency (one ``propose`` under 2 s with 300 trials x 8 checkpoints):

* hyperparameters are fitted by marginal likelihood (``fit_gpytorch_mll``) on a seeded
  subsample of at most ``max_fit_points`` observations, warm-started from the previous fit;
* the posterior then conditions on up to ``max_condition_points`` observations with those
  hyperparameters, thinning long learning curves evenly (the last checkpoint of every trial
  is always kept), through one Cholesky factor cached here;
* predictions, joint cross-covariances (for knowledge-gradient acquisitions) and
  "kriging believer" fantasies reuse that factor instead of going through GPyTorch's
  generic prediction path, which would rebuild caches per call.

This module is the surrogate's whole interface: acquisitions, the recommendation and the
server's ``/predict`` use :meth:`MFMSGP.predict`, :meth:`MFMSGP.predict_mean`,
:meth:`MFMSGP.posterior_points` (cross-covariances between point sets) and
:meth:`MFMSGP.fantasize`. All inputs are GP inputs ``n x d`` (see
:meth:`SearchSpace.encode`); all outputs are in the objective's own units (outcome
standardisation is undone here, and nothing outside reads the standardised internals).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from gpytorch.mlls import ExactMarginalLogLikelihood
from linear_operator.utils.cholesky import psd_safe_cholesky
from linear_operator.utils.warnings import NumericalWarning
from torch import Tensor

from mfms_bo.limits import real_number, whole_number
from mfms_bo.surrogate.kernels import (
    KERNEL_DESIGNS,
    MEAN_DESIGNS,
    TRANSFER_PRIOR,
    ScalingLawMean,
    build_kernel,
    build_mean,
    compile_kernel,
    initial_lengthscales,
)

__all__ = ["MFMSGP", "PosteriorPoints", "SurrogateConfig", "thin_observations"]


@dataclass(frozen=True)
class SurrogateConfig:
    """Knobs of the MFMS-GP.

    Attributes:
        kernel: ``"additive"`` (default), ``"transfer"``, ``"seed"``, ``"scaling"`` or
            ``"drift"``;
            see :mod:`mfms_bo.surrogate.kernels`.
        mean: ``"scaling_law"`` (default), a power law in size and steps with a floor
            (:class:`~mfms_bo.surrogate.kernels.ScalingLawMean`), which extrapolates beyond
            the ladder and the longest run as losses do, or ``"linear"`` in the fidelities.
            On the standard suite at 10 seeds the law settled 1.2x cheaper in the geometric
            mean and its 90% intervals held the truth far more often on six of seven
            problems (docs/decisions.md).
        transfer_prior: the ``transfer`` design's prior mode (its most likely value) of the
            share of a mixture's effect that every scale has in common (0.92 by default,
            fitted on the published run tables); lower it where small runs are known to
            rank mixtures unlike the target.
        max_fit_points: observations used to fit hyperparameters.
        max_condition_points: observations the posterior conditions on.
        maxiter: L-BFGS iterations for a cold fit.
        warm_maxiter: L-BFGS iterations when warm-started from the previous fit (the
            hyperparameters move little between consecutive proposals).
        refit_growth: a strategy re-optimises hyperparameters only once the number of
            trials has grown by this fraction since the last optimisation (always at least
            one new trial); in between it conditions on the new data with the previous
            hyperparameters. 0.05 means every trial up to 20 trials and every 15th at 300,
            which keeps one proposal under the latency target (bench/latency.py).
    """

    kernel: str = "additive"
    mean: str = "scaling_law"
    transfer_prior: float = TRANSFER_PRIOR
    max_fit_points: int = 256
    max_condition_points: int = 1200
    maxiter: int = 100
    warm_maxiter: int = 30
    refit_growth: float = 0.05

    def __post_init__(self) -> None:
        if self.kernel not in KERNEL_DESIGNS:
            raise ValueError(f"kernel must be one of {KERNEL_DESIGNS}, got {self.kernel!r}")
        if self.mean not in MEAN_DESIGNS:
            raise ValueError(f"mean must be one of {MEAN_DESIGNS}, got {self.mean!r}")
        real_number("transfer_prior", self.transfer_prior, 0.0, 1.0, low_open=True,
                    high_open=True)
        whole_number("max_fit_points", self.max_fit_points, 1, 4096)
        whole_number("max_condition_points", self.max_condition_points, 1, 20_000)
        whole_number("maxiter", self.maxiter, 0, 10_000)
        whole_number("warm_maxiter", self.warm_maxiter, 0, 10_000)
        real_number("refit_growth", self.refit_growth, 0.0, 10.0)


def thin_observations(groups: Tensor, steps: Tensor, cap: int) -> Tensor:
    """Indices keeping at most ~``cap`` points: per group (trial) the last one plus evenly
    spaced earlier ones, with the same allowance for every group.

    Args:
        groups: ``n`` integer trial ids.
        steps: ``n`` steps (orders points inside a trial).
        cap: target number of points.
    Returns:
        Sorted ``LongTensor`` of kept indices.
    """
    n = groups.numel()
    if n <= cap:
        return torch.arange(n)
    uniq = torch.unique(groups)
    per = max(1, cap // max(1, uniq.numel()))
    keep: list[Tensor] = []
    for g in uniq.tolist():
        idx = (groups == g).nonzero().flatten()
        idx = idx[torch.argsort(steps[idx])]
        if idx.numel() > per:
            # Evenly spaced positions ending at the last checkpoint.
            pos = torch.round(torch.linspace(idx.numel() - 1, 0, per)).long().unique()
            idx = idx[pos]
        keep.append(idx)
    return torch.sort(torch.cat(keep)).values


class MFMSGP:
    """A fitted MFMS-GP with a cached Cholesky factor.

    Build with :meth:`fit`; query with :meth:`predict`, :meth:`covariance` and
    :meth:`fantasize`.
    """

    def __init__(
        self,
        model: SingleTaskGP,
        train_X: Tensor,
        train_y: Tensor,
        y_mean: float,
        y_std: float,
        cholesky: Tensor | None = None,
    ) -> None:
        self.model = model
        self.train_X = train_X
        self.train_y = train_y
        self.y_mean = y_mean
        self.y_std = y_std
        self.noise = float(model.likelihood.noise.detach().reshape(-1)[0])  # standardised units
        self._kernel = compile_kernel(model.covar_module)
        with torch.no_grad():
            if cholesky is None:
                K = self._k(train_X, train_X)
                K = K + self.noise * torch.eye(K.shape[0], dtype=K.dtype)
                cholesky = _robust_cholesky(K)
            self._L = cholesky
            resid = ((train_y - y_mean) / y_std - self._m(train_X)).unsqueeze(-1)
            self._alpha = torch.cholesky_solve(resid, self._L).squeeze(-1)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        X: Tensor,
        y: Tensor,
        groups: Tensor | None = None,
        config: SurrogateConfig | None = None,
        warm_start: dict[str, Tensor] | None = None,
        seed: int = 0,
        optimize: bool = True,
    ) -> MFMSGP:
        """Fit hyperparameters on a subsample and condition on the (thinned) data.

        Args:
            X: ``n x d`` GP inputs, ``d = k + 2``.
            y: ``n`` objective values (lower is better).
            groups: ``n`` trial ids used to thin learning curves; defaults to one per point.
            config: :class:`SurrogateConfig`.
            warm_start: a previous fit's :meth:`hyperparameters` to start from.
            optimize: ``False`` keeps ``warm_start``'s hyperparameters as they are and only
                conditions on the data (ignored without a usable warm start).
            seed: seeds the fitting subsample.
        """
        cfg = config or SurrogateConfig()
        X = X.to(torch.float64)
        y = y.to(torch.float64).reshape(-1)
        if X.shape[0] != y.shape[0] or X.shape[0] == 0:
            raise ValueError("MFMSGP.fit: need n >= 1 points with matching X and y")
        if groups is None:
            groups = torch.arange(X.shape[0])
        keep = thin_observations(groups, X[:, -1], cfg.max_condition_points)
        X, y, groups = X[keep], y[keep], groups[keep]
        y_mean = float(y.mean())
        y_std = float(y.std()) if y.numel() > 1 else 1.0
        if not math.isfinite(y_std) or y_std < 1e-9:
            y_std = 1.0
        fit_idx = _fit_subset(groups, X[:, -1], cfg.max_fit_points, seed)
        Xf = X[fit_idx]
        yf = ((y[fit_idx] - y_mean) / y_std).unsqueeze(-1)
        k = X.shape[1] - 2
        # GPyTorch initialises some parameters (the linear mean) from the global RNG: seed it
        # locally so the same history and seed always give the same fit and proposals.
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = SingleTaskGP(
                Xf,
                yf,
                covar_module=build_kernel(cfg.kernel, k, cfg.transfer_prior),
                mean_module=build_mean(cfg.kernel, k, cfg.mean, y_mean, y_std),
                outcome_transform=None,
            )
        if isinstance(model.mean_module, ScalingLawMean):
            model.mean_module.start_from(y[fit_idx])
        initial_lengthscales(model.covar_module)
        maxiter = cfg.maxiter
        warm = False
        if warm_start is not None:
            try:
                model.load_state_dict(warm_start, strict=False)
                maxiter = cfg.warm_maxiter
                warm = True
            except (RuntimeError, KeyError):
                pass  # shapes changed (other design or k); fit from scratch
        if warm and not optimize:
            model.eval()
            return cls(model, X, y, y_mean, y_std)
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": maxiter}})
            except Exception:  # a failed fit keeps the prior/warm start values
                pass
        model.eval()
        return cls(model, X, y, y_mean, y_std)

    def hyperparameters(self) -> dict[str, Tensor]:
        """The fitted parameters (raw, as GPyTorch stores them), for warm-starting a later
        fit or conditioning new data on them; priors and constraints are rebuilt by
        :meth:`fit` and need not travel."""
        return {k: v.detach().clone() for k, v in self.model.named_parameters()}

    # -- raw kernel pieces (standardised units) ---------------------------------------------
    def _k(self, X1: Tensor, X2: Tensor) -> Tensor:
        if self._kernel is not None:
            return self._kernel(X1, X2, False)
        with torch.no_grad():
            return self.model.covar_module(X1, X2).to_dense()

    def _m(self, X: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model.mean_module(X)

    @functools.cached_property
    def _law(self) -> _LawUncertainty | None:
        # Built on the first interval asked for, not per fantasy: acquisitions never use it.
        return _LawUncertainty.of(self.model.mean_module, self.train_X, self._L)

    # -- posterior --------------------------------------------------------------------------
    def predict(self, X: Tensor, law_uncertainty: bool = True) -> tuple[Tensor, Tensor]:
        """Posterior mean and variance of the latent objective at ``n x d`` inputs.

        ``law_uncertainty``: with a scaling-law mean, include the variance its fitted
        parameters add (:class:`_LawUncertainty`), as an interval must; leave it out to
        rank mixtures at one fidelity, which it moves together.

        Returns:
            ``(mean, var)``, each ``n``, in objective units; ``var`` excludes noise.
        """
        points = self.posterior_points(X)
        if not law_uncertainty or self._law is None:  # a ranking never builds the term
            return points.mean, points.var
        return points.mean, points.var + self._law.variance(X, points._V) * self.y_std**2

    def predict_mean(self, X: Tensor) -> Tensor:
        """Posterior mean only (objective units): no triangular solve, so ranking thousands
        of candidates costs one kernel matrix and a matrix-vector product."""
        X = X.to(torch.float64)
        with torch.no_grad():
            mean = self._m(X) + self._k(self.train_X, X).T @ self._alpha
        return self.y_mean + self.y_std * mean

    def posterior_points(self, X: Tensor) -> PosteriorPoints:
        """The posterior at ``n x d`` inputs, kept in a form whose cross-covariances with
        any other point set cost one matrix product: knowledge-gradient acquisitions need
        the covariance of thousands of queries with the same target set."""
        X = X.to(torch.float64)
        with torch.no_grad():
            Ks = self._k(self.train_X, X)  # n_train x n
            mean = self._m(X) + Ks.T @ self._alpha
            V = torch.linalg.solve_triangular(self._L, Ks, upper=False)
            var = (self._kernel_diag(X, X) - (V * V).sum(0)).clamp(min=1e-12)
        return PosteriorPoints(self, X, self.y_mean + self.y_std * mean, var * self.y_std**2,
                               V)

    def covariance(self, X1: Tensor, X2: Tensor) -> Tensor:
        """Posterior covariance ``n1 x n2`` of the latent objective (objective units)."""
        return self.posterior_points(X1).covariance(self.posterior_points(X2))

    def _kernel_diag(self, X1: Tensor, X2: Tensor) -> Tensor:
        """Prior covariance of matching rows, ``k(X1[i], X2[i])`` (standardised units)."""
        if self._kernel is not None:
            return self._kernel(X1, X2, True)
        with torch.no_grad():
            return self.model.covar_module(X1, X2, diag=True).to_dense().reshape(-1)

    @property
    def noise_variance(self) -> float:
        """Observation noise variance in objective units."""
        return self.noise * self.y_std**2

    def fantasize(self, X: Tensor) -> MFMSGP:
        """A copy conditioned on ``X`` observed at its posterior mean ("kriging believer").

        Used for pending trials: their uncertainty collapses, their mean stays, so parallel
        proposals spread out without a refit.
        """
        if X.shape[0] == 0:
            return self
        X = X.to(torch.float64)
        mean = self.predict_mean(X)
        # Extend the cached factor by the new block instead of refactorising everything:
        # O(n^2 q) instead of O(n^3), which was 11% of a batch proposal at 300 trials.
        with torch.no_grad():
            B = torch.linalg.solve_triangular(self._L, self._k(self.train_X, X), upper=False)
            S = self._k(X, X) + self.noise * torch.eye(X.shape[0], dtype=X.dtype) - B.T @ B
            C = _robust_cholesky(0.5 * (S + S.T))
            top = torch.cat([self._L, torch.zeros(self._L.shape[0], X.shape[0],
                                                  dtype=X.dtype)], dim=1)
            L = torch.cat([top, torch.cat([B.T, C], dim=1)], dim=0)
        return MFMSGP(
            self.model,
            torch.cat([self.train_X, X]),
            torch.cat([self.train_y, mean]),
            self.y_mean,
            self.y_std,
            cholesky=L,
        )


@dataclass(frozen=True)
class _LawUncertainty:
    """The variance a scaling-law mean adds to a prediction because its parameters are
    estimated, not known: universal kriging's term, with the law linearised at its fit.

    Why: the GP conditions on the fitted law as if it were exact, so beyond the ladder (or
    the longest run), where the kernels return to the law, its interval is as narrow as
    next to the data; yet a handful of sizes pins a power law's floor and exponent only
    loosely. With ``J`` the law's Jacobian at the training inputs and ``j(x)`` at ``x``,
    the added variance is ``r A^-1 r'`` with ``r = j(x) - J' K^-1 k(x)`` and ``A = J'
    K^-1 J``: next to the data ``r`` vanishes (the GP already corrects the law there), far
    from it the law's own uncertainty comes through. The acquisitions do not use it: it
    moves every mixture's prediction at one fidelity together, so it cannot change which
    mixture is best.
    """

    law: ScalingLawMean
    W: Tensor  # n_train x p: L^-1 J
    A_inv: Tensor  # p x p

    @classmethod
    def of(cls, mean: object, train_X: Tensor, L: Tensor) -> _LawUncertainty | None:
        if not isinstance(mean, ScalingLawMean):
            return None
        J = mean.jacobian(train_X)
        W = torch.linalg.solve_triangular(L, J, upper=False)
        # A weak prior keeps the variance finite while the data cannot separate the five
        # parameters (a few runs at one size): each parameter known to within its own size.
        with torch.no_grad():
            theta = mean.values()
        prior_precision = torch.diag(1.0 / theta.clamp(min=1e-6) ** 2)
        return cls(mean, W, torch.linalg.inv(W.T @ W + prior_precision))

    def variance(self, X: Tensor, V: Tensor) -> Tensor:
        """Added variance at ``n`` inputs (standardised units), given ``V = L^-1 k(X)``."""
        with torch.no_grad():
            r = self.law.jacobian(X) - V.T @ self.W
            return ((r @ self.A_inv) * r).sum(-1).clamp(min=0.0)


@dataclass(frozen=True)
class PosteriorPoints:
    """The posterior of an :class:`MFMSGP` at ``n`` inputs (objective units).

    Attributes:
        X: ``n x d`` the inputs.
        mean: ``n`` posterior means.
        var: ``n`` latent posterior variances (noise excluded).
    """

    gp: MFMSGP
    X: Tensor
    mean: Tensor
    var: Tensor
    _V: Tensor  # n_train x n: L^-1 K(train, X), in standardised units

    def covariance(self, other: PosteriorPoints) -> Tensor:
        """Posterior covariance ``n x m`` between these points and ``other``'s ``m``."""
        gp = self.gp
        with torch.no_grad():
            return (gp._k(self.X, other.X) - self._V.T @ other._V) * gp.y_std**2

    def paired_covariance(self, other: PosteriorPoints) -> Tensor:
        """Posterior covariance of row ``i`` here with row ``i`` of ``other`` (``n``)."""
        gp = self.gp
        with torch.no_grad():
            k = gp._kernel_diag(self.X, other.X)
            return (k - (self._V * other._V).sum(0)) * gp.y_std**2

    def select(self, index: Tensor) -> PosteriorPoints:
        """The points at ``index`` (repeats allowed)."""
        return PosteriorPoints(self.gp, self.X[index], self.mean[index], self.var[index],
                               self._V[:, index])


def _fit_subset(groups: Tensor, steps: Tensor, cap: int, seed: int) -> Tensor:
    """Up to ``cap`` indices for hyperparameter fitting: thinned curves, then a seeded draw."""
    idx = thin_observations(groups, steps, cap)
    if idx.numel() <= cap:
        return idx
    g = torch.Generator().manual_seed(seed)
    return torch.sort(idx[torch.randperm(idx.numel(), generator=g)[:cap]]).values


def _robust_cholesky(K: Tensor) -> Tensor:
    """Cholesky factor of a covariance that rounding may have left barely indefinite
    (a fantasy's Schur complement): GPyTorch's jitter escalation, quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumericalWarning)
        return psd_safe_cholesky(K, max_tries=6)
