"""RegMix (Liu et al. 2024, "RegMix: Data Mixture as Regression"), behind the Strategy API.

The method: train many small models on random mixtures, fit a regression model (LightGBM)
from the mixture to the small models' loss, predict the loss of a very large number of
random mixtures, and train the large model on the *average of the top-100 predicted
mixtures* (averaging smooths the regressor's piecewise-constant noise). Here:

* the screening phase is :class:`~mfms_bo.strategies.screen.ScreenThenConfirm`'s (same
  fidelity, budget split, pool handling and anytime schedule);
* the confirming phase trains, at the largest runnable size and the target steps, first
  RegMix's top-``top_average`` average (on a pool: the pool member nearest to it that has not
  been confirmed), then the next-best predicted mixtures in order, until the budget is spent;
* candidates are ``n_candidates`` Dirichlet(1) draws (seeded with the strategy seed), or the
  pool. On a pool the average is over the top tenth of the pool at most: the top 100 of a
  26-member pool is the whole pool, whose mean says nothing about the prediction.

Before ``min_fit`` screening runs exist the regressor is not fitted and mixtures are ranked
by their observed screening objective (plain screen-then-confirm).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mfms_bo.limits import real_number, whole_number
from mfms_bo.space import SearchSpace
from mfms_bo.strategies.screen import Fidelity, RunKey, ScreenThenConfirm, mixture_key
from mfms_bo.trials import TrialResult, TrialSpec

__all__ = ["RegMix"]

_INSTALL = "regmix needs the lightgbm package: pip install 'mfms-bo[peers]'"


class RegMix(ScreenThenConfirm):
    """Screen small, regress mixture -> loss with LightGBM, confirm the predicted best.

    Args (besides :class:`ScreenThenConfirm`'s ``budget``, ``screen_fraction``, ``top_k``,
    ``max_screen``, ``screen_size``, ``screen_steps``):
        n_candidates: random mixtures the regressor ranks (default 100,000; ignored on a
            pool, whose members are the candidates).
        top_average: how many top predictions are averaged into the first confirmed mixture
            (default 100, as in the paper).
        n_estimators, learning_rate, num_leaves: the LightGBM regressor; modest defaults
            (200 trees of 15 leaves, rate 0.05) because the data are tens to hundreds of
            rows. ``min_child_samples`` scales with the data (``n // 10`` within [2, 20]):
            LightGBM's default of 20 would not split at all on 20 rows.
        min_fit: screening runs needed before the regressor is used (default 5).
    """

    name = "regmix"

    def __init__(self, space: SearchSpace, seed: int = 0, n_candidates: int = 100_000,
                 top_average: int = 100, n_estimators: int = 200, learning_rate: float = 0.05,
                 num_leaves: int = 15, min_fit: int = 5, **options: Any) -> None:
        super().__init__(space, seed, **options)
        if importlib.util.find_spec("lightgbm") is None:
            raise ValueError(_INSTALL)
        whole_number("n_candidates", n_candidates, 1, 1_000_000)
        whole_number("top_average", top_average, 1, n_candidates)
        whole_number("n_estimators", n_estimators, 1, 10_000)
        whole_number("min_fit", min_fit, 1, 10_000)
        whole_number("num_leaves", num_leaves, 2, 4096)
        real_number("learning_rate", learning_rate, 0.0, 1.0, low_open=True)
        self.n_candidates = n_candidates
        self.top_average = top_average
        self.n_estimators = n_estimators
        self.learning_rate = float(learning_rate)
        self.num_leaves = num_leaves
        self.min_fit = min_fit
        self._cands: Tensor | None = None
        self._memo: tuple[tuple, Tensor] | None = None

    # -- the regression -----------------------------------------------------------------
    def candidates(self) -> Tensor:
        """The mixtures RegMix ranks: the pool, or ``n_candidates`` seeded Dirichlet draws
        (fixed for the strategy's life, so successive proposals rank the same set)."""
        if self.space.candidates is not None:
            return self.space.candidates
        if self._cands is None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + 17)
            self._cands = self.space.mixtures.sample(self.n_candidates, g)
        return self._cands

    def predict_screening(self, history: Sequence[TrialResult], W: Tensor | None = None,
                          max_model_size: float | None = None) -> Tensor | None:
        """Predicted screening objective of the rows of ``W`` (default: :meth:`candidates`)
        from a LightGBM fitted to the history's screening runs; None with fewer than
        ``min_fit`` of them. Deterministic (seeded, single-threaded)."""
        data = self.screened(history, self.screen_fidelity(max_model_size))
        if len(data) < self.min_fit:
            return None
        if W is None:
            return self._predict_data(data)
        return torch.as_tensor(self._fit_data(data).predict(W.numpy()), dtype=torch.float64)

    def _predict_data(self, data: list[tuple[float, Tensor]]) -> Tensor:
        """Predictions over :meth:`candidates`, memoised on the training data: during the
        confirming phase the screening data do not change, and refitting and predicting
        100k mixtures at every proposal would be the strategy's whole cost."""
        key = tuple((v, mixture_key(w.tolist())) for v, w in data)
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        pred = torch.as_tensor(self._fit_data(data).predict(self.candidates().numpy()),
                               dtype=torch.float64)
        self._memo = (key, pred)
        return pred

    def _fit_data(self, data: list[tuple[float, Tensor]]) -> Any:
        return self._fit(torch.stack([w for _, w in data]).numpy(),
                         np.array([v for v, _ in data], dtype=np.float64))

    def _fit(self, X: np.ndarray, y: np.ndarray) -> Any:
        """The fitted LightGBM booster (its ``predict`` takes a plain array: the sklearn
        wrapper's would warn about feature names on every call)."""
        try:
            import lightgbm as lgb
        except ImportError:  # pragma: no cover - checked at construction
            raise ValueError(_INSTALL) from None
        model = lgb.LGBMRegressor(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=max(2, min(20, len(y) // 10)),
            min_data_in_bin=1,
            random_state=self.seed,
            deterministic=True,
            force_row_wise=True,
            n_jobs=1,
            verbose=-1,
        )
        model.fit(X, y)
        return model.booster_

    # -- confirming ---------------------------------------------------------------------
    def _confirm_order(self, history: Sequence[TrialResult], pending: Sequence[TrialSpec],
                       fs: Fidelity, fc: Fidelity, known: set[RunKey]
                       ) -> Iterator[tuple[Tensor, dict[str, Any]]]:
        """RegMix's average first (once per fit), then the candidates by predicted objective.

        Lazy: the regressor is only fitted when a confirmation is actually wanted."""
        data = self.screened(history, fs)
        if len(data) < self.min_fit:
            yield from super()._confirm_order(history, pending, fs, fc, known)
            return
        pred = self._predict_data(data)
        W = self.candidates()
        order = torch.argsort(pred, stable=True)
        n_fit = len(data)
        done = any(s.metadata.get("regmix") == "average" and s.metadata.get("n_fit") == n_fit
                   for s in [*(r.spec for r in history), *pending])
        if not done:
            pool = self.space.candidates
            n_avg = min(self.top_average, W.shape[0] if pool is None
                        else max(1, W.shape[0] // 10))
            avg = W[order[:n_avg]].mean(0)
            md = {"regmix": "average", "n_fit": n_fit, "n_average": n_avg}
            if pool is None:
                yield avg, md
            else:
                dist = (pool - avg).norm(dim=-1)
                for i in torch.argsort(dist, stable=True).tolist():
                    if (mixture_key(pool[i].tolist()), fc[0], fc[1]) not in known:
                        yield pool[i], md
                        break
        for rank, i in enumerate(order.tolist()):
            yield W[i], {"regmix": "predicted", "rank": rank, "predicted": float(pred[i])}
