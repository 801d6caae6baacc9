"""The MFMS-GP: a GP over (mixture, log model size, log steps) fitted on every checkpoint.

Design for latency (issue 2: one ``propose`` under 2 s with 300 trials x 8 checkpoints):

* hyperparameters are fitted by marginal likelihood (``fit_gpytorch_mll``) on a seeded
  subsample of at most ``max_fit_points`` observations, warm-started from the previous fit;
* the posterior then conditions on up to ``max_condition_points`` observations with those
  hyperparameters, thinning long learning curves evenly (the last checkpoint of every trial
  is always kept), through one Cholesky factor cached here;
* predictions, joint cross-covariances (for knowledge-gradient acquisitions) and
  "kriging believer" fantasies reuse that factor instead of going through GPyTorch's
  generic prediction path, which would rebuild caches per call.

All public inputs are GP inputs ``n x d`` (see :meth:`SearchSpace.encode`); outputs are in
the objective's own units (outcome standardisation is undone here).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

from mfms_bo.surrogate.kernels import (
    build_kernel,
    build_mean,
    compile_kernel,
    initial_lengthscales,
    mixture_fidelity_factor,
)

__all__ = ["MFMSGP", "SurrogateConfig", "thin_observations"]


@dataclass(frozen=True)
class SurrogateConfig:
    """Knobs of the MFMS-GP.

    Attributes:
        kernel: ``"additive"`` (default) or ``"seed"``; see :mod:`mfms_bo.surrogate.kernels`.
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
        transfer_lengthscale: ``None`` (default) or the prior mode of the model-size
            lengthscale inside the mixture x fidelity factor (scaled log size: the smallest
            size is 0, the larger of the largest size and the target is 1). Until two
            sizes have been run the data cannot identify it, so this prior alone says how
            much a small run tells about the target's ranking: the generic prior (mode 0.33)
            says ~4%, 1.0 says ~52%. Measured (docs/decisions.md, 5 seeds): 0.6 cuts the cost
            to 0.5% of the optimum by 1.2-3.4x on the three published run tables, where
            rankings transfer (rank correlation 0.70-0.97 from the smallest size to the
            target), but on sim-k8-extrap, where they transfer weakly (0.47), the search
            trusts its small runs and does not get within 0.5% in 40 trials (3 of 5 seeds at
            0.6, 5 of 5 at 1.0). Set it when you know your domains' rankings transfer
            across your ladder. Additive kernel only.
        size_lengthscale_grid: extra values of that same size lengthscale to average over
            (:mod:`mfms_bo.surrogate.ensemble`): the posterior becomes a mixture of the
            fitted GP and one copy per value, weighted by marginal likelihood, so while the
            data cannot tell how far mixture effects carry across sizes the search weighs
            both answers, and once they can, the unlikely members drop out. Members are
            weighted by likelihood times the lengthscale prior. Measured with (0.6, 1.0)
            (docs/decisions.md, 5 seeds): half the cost to 0.5% on RegMix, but worse final
            regret on every simulated problem (3x on sim-k8-extrap, where 2 of 5 seeds
            never got within 0.5%), so it is off by default. Additive kernel only.
    """

    kernel: str = "additive"
    max_fit_points: int = 256
    max_condition_points: int = 1200
    maxiter: int = 100
    warm_maxiter: int = 30
    refit_growth: float = 0.05
    transfer_lengthscale: float | None = None
    size_lengthscale_grid: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        grid = self.size_lengthscale_grid
        if not isinstance(grid, (tuple, list)) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and v > 0 for v in grid):
            raise ValueError("size_lengthscale_grid must be a list of positive numbers, "
                             f"got {grid!r}")
        object.__setattr__(self, "size_lengthscale_grid", tuple(float(v) for v in grid))
        if grid and self.kernel != "additive":
            raise ValueError("size_lengthscale_grid needs kernel 'additive' (the seed design "
                             "has no separate mixture x fidelity factor)")
        t = self.transfer_lengthscale
        if t is not None and not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
            raise ValueError(f"transfer_lengthscale must be a positive number or null, got {t!r}")
        if t is not None and self.kernel != "additive":
            raise ValueError("transfer_lengthscale needs kernel 'additive' (the seed design "
                             "has no separate mixture x fidelity factor)")


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
            warm_start: a previous fit's ``state_dict`` (hyperparameters) to start from.
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
                covar_module=build_kernel(cfg.kernel, k, cfg.transfer_lengthscale),
                mean_module=build_mean(cfg.kernel, k),
                outcome_transform=None,
            )
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
        """State dict minus training data, for warm-starting the next fit."""
        return {
            k: v.detach().clone()
            for k, v in self.model.state_dict().items()
            if not k.startswith("train") and "prediction" not in k
        }

    # -- raw kernel pieces (standardised units) ---------------------------------------------
    def _k(self, X1: Tensor, X2: Tensor) -> Tensor:
        if self._kernel is not None:
            return self._kernel(X1, X2, False)
        with torch.no_grad():
            return self.model.covar_module(X1, X2).to_dense()

    def _m(self, X: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model.mean_module(X)

    # -- posterior --------------------------------------------------------------------------
    def predict(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and variance of the latent objective at ``n x d`` inputs.

        Returns:
            ``(mean, var)``, each ``n``, in objective units; ``var`` excludes noise.
        """
        X = X.to(torch.float64)
        with torch.no_grad():
            Ks = self._k(self.train_X, X)  # n_train x n
            mean = self._m(X) + Ks.T @ self._alpha
            V = torch.linalg.solve_triangular(self._L, Ks, upper=False)
            prior_var = self._prior_var(X)
            var = (prior_var - (V * V).sum(0)).clamp(min=1e-12)
        return self.y_mean + self.y_std * mean, var * self.y_std**2

    def predict_mean(self, X: Tensor) -> Tensor:
        """Posterior mean only (objective units): no triangular solve, so ranking thousands
        of candidates costs one kernel matrix and a matrix-vector product."""
        X = X.to(torch.float64)
        with torch.no_grad():
            mean = self._m(X) + self._k(self.train_X, X).T @ self._alpha
        return self.y_mean + self.y_std * mean

    def _prior_var(self, X: Tensor) -> Tensor:
        return self.kernel_diag(X, X)

    def kernel_diag(self, X1: Tensor, X2: Tensor) -> Tensor:
        """Prior covariance of matching rows, ``k(X1[i], X2[i])`` (standardised units)."""
        if self._kernel is not None:
            return self._kernel(X1, X2, True)
        with torch.no_grad():
            return self.model.covar_module(X1, X2, diag=True).to_dense().reshape(-1)

    def whitened(self, X: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(mean, V, prior_cov_diag)`` with ``V = L^-1 K(train, X)`` (``n_train x n``).

        Posterior cross-covariances follow as ``K(X1, X2) - V1^T V2``; acquisitions that need
        many of them compute ``V`` once per point set.
        """
        X = X.to(torch.float64)
        with torch.no_grad():
            Ks = self._k(self.train_X, X)
            mean = self._m(X) + Ks.T @ self._alpha
            V = torch.linalg.solve_triangular(self._L, Ks, upper=False)
        return self.y_mean + self.y_std * mean, V, self._prior_var(X)

    def covariance(self, X1: Tensor, X2: Tensor) -> Tensor:
        """Posterior covariance ``n1 x n2`` of the latent objective (objective units)."""
        _, V1, _ = self.whitened(X1)
        _, V2, _ = self.whitened(X2)
        return (self._k(X1.to(torch.float64), X2.to(torch.float64)) - V1.T @ V2) * self.y_std**2

    def log_marginal_likelihood(self) -> float:
        """Exact log evidence of the conditioned (standardised) data under these
        hyperparameters, from the cached factor; compares hyperparameter settings on the
        same data (:mod:`mfms_bo.surrogate.ensemble`)."""
        with torch.no_grad():
            resid = (self.train_y - self.y_mean) / self.y_std - self._m(self.train_X)
            n = resid.numel()
            fit = float(resid @ self._alpha)
            logdet = float(torch.log(self._L.diagonal()).sum())
        return -0.5 * fit - logdet - 0.5 * n * math.log(2.0 * math.pi)

    def with_size_lengthscale(self, value: float) -> MFMSGP | None:
        """A copy whose mixture x fidelity factor has size lengthscale ``value`` (all other
        hyperparameters kept), conditioned on the same data; ``None`` when the kernel has
        no such factor (the seed design)."""
        model = copy.deepcopy(self.model)
        factor = mixture_fidelity_factor(model.covar_module)
        if factor is None:
            return None
        with torch.no_grad():
            ls = factor.lengthscale.detach().clone()
            ls[..., 0] = float(value)
            factor.lengthscale = ls
        return MFMSGP(model, self.train_X, self.train_y, self.y_mean, self.y_std)

    def size_lengthscale(self) -> float | None:
        """The fitted size lengthscale of the mixture x fidelity factor (None without one)."""
        factor = mixture_fidelity_factor(self.model.covar_module)
        return None if factor is None else float(factor.lengthscale.detach().reshape(-1)[0])

    def size_lengthscale_log_prior(self) -> float:
        """Log density of the size lengthscale under its own prior (0 without a prior)."""
        factor = mixture_fidelity_factor(self.model.covar_module)
        prior = None if factor is None else getattr(factor, "lengthscale_prior", None)
        if prior is None:
            return 0.0
        with torch.no_grad():
            ls = factor.lengthscale.detach().reshape(-1)
            log_p = prior.log_prob(ls).reshape(-1)
        return float(log_p[0])

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


def _fit_subset(groups: Tensor, steps: Tensor, cap: int, seed: int) -> Tensor:
    """Up to ``cap`` indices for hyperparameter fitting: thinned curves, then a seeded draw."""
    idx = thin_observations(groups, steps, cap)
    if idx.numel() <= cap:
        return idx
    g = torch.Generator().manual_seed(seed)
    return torch.sort(idx[torch.randperm(idx.numel(), generator=g)[:cap]]).values


def _robust_cholesky(K: Tensor) -> Tensor:
    jitter = 1e-9 * float(K.diagonal().mean())
    eye = torch.eye(K.shape[0], dtype=K.dtype)
    for _ in range(8):
        L, info = torch.linalg.cholesky_ex(K + jitter * eye)
        if int(info) == 0:
            return L
        jitter *= 10.0
    raise RuntimeError("MFMSGP: covariance matrix is not positive definite even with jitter")
