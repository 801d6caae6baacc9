"""Aioli (Chen et al. 2024, arXiv 2411.05735): learn the mixing law online, update the
proportions by exponentiated gradient.

The linear dynamic mixing law says that over the next few steps every domain's validation
loss drops by ``A @ p``: ``A[i, j]`` is how much a step on domain ``j`` lowers the loss of
domain ``i`` *now*. Minimising the average loss over ``p`` on the simplex by exponentiated
gradient gives ``p_j <- p_j * exp(eta * sum_i A[i, j])`` (renormalised): domains whose
data lowers every domain's loss gain weight.

Training is split into rounds of ``update_steps`` steps. Each round starts with
LearnParams, which estimates ``A`` by probing: for ``lp_rounds`` random orders of the
domains it trains ``lp_steps`` real steps on a smoothed one-hot mixture of domain ``j``
(``one_hot_factor`` on ``j``, the rest spread evenly), measures every domain's validation
loss and credits the drop since the previous measurement to column ``j``. The drops are
averaged over the rounds and divided by ``lp_steps`` (so ``A`` is per step), and the
smoothing is undone by solving the linear system of the smoothed one-hot mixtures. The
probing steps are training steps: they count toward the run and the
remaining ``update_steps - lp_rounds * k * lp_steps`` steps train on the updated ``p``.

Two details decide whether ``p`` moves at all (the issue's reference run stayed within
0.24-0.27 of uniform):

* With ``normalize_A`` (the reference code's default) ``A`` is shifted to be non-negative
  and divided by its sum, so its column sums lie in ``[0, 1]`` and average ``1/k``: one
  round moves ``log p`` by at most ``eta``, typically ``eta / k``. ``eta_scale="k"``
  (default here) multiplies ``eta`` by ``k`` so that ``eta`` means the same step for any
  number of domains; ``eta_scale="none"`` is the reference code.
* ``ema=None`` is the cumulative update of the paper's Lemma 1 (``p`` keeps moving while
  a domain keeps helping); with ``ema=beta`` the reference code instead sets ``p`` from
  scratch each round, ``p ∝ exp(eta * colsum(EMA(A)))`` with
  ``EMA <- (1 - beta) * A + beta * EMA``, which can never leave a ball of radius ``eta``
  around the start.

The restricted mode (``prior`` + ``prior_steps``) trains on a prior mixture (a study's
recommendation) for ``prior_steps`` steps before adapting; the updates then start from the
prior (``restart_from_uniform=True`` restarts them from uniform, as the reference code does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mfms_bo.online.controller import MixingController, check_mixture

__all__ = ["Aioli", "smoothed_one_hot", "unsmooth", "normalize_interaction", "egd_step"]


def smoothed_one_hot(k: int, j: int, one_hot_factor: float) -> np.ndarray:
    """Mixture with ``one_hot_factor`` on domain ``j`` and the rest spread evenly."""
    if k == 1:
        return np.ones(1)
    p = np.full(k, (1.0 - one_hot_factor) / (k - 1))
    p[j] = one_hot_factor
    return p


def unsmooth(G: np.ndarray, one_hot_factor: float) -> np.ndarray:
    """``A`` from the drops ``G`` measured under smoothed one-hot mixtures.

    Column ``j`` of ``G`` was measured training on ``s_j`` (row ``j`` of the matrix ``S`` of
    smoothed one-hots), so under the linear law ``G[i, j] = sum_l A[i, l] S[j, l]``, i.e.
    ``G = A S^T`` and ``A = G S^-T``. ``S`` is invertible unless ``one_hot_factor = 1/k``.
    """
    k = G.shape[0]
    if k == 1 or one_hot_factor == 1.0:
        return G.copy()
    S = np.stack([smoothed_one_hot(k, j, one_hot_factor) for j in range(k)])
    return np.linalg.solve(S, G.T).T


def normalize_interaction(A: np.ndarray) -> np.ndarray:
    """The reference code's normalisation: shift so the smallest entry is 0 (only if it is
    negative), then divide by the sum (left as is if the sum is 0)."""
    A = A.astype(np.float64, copy=True)
    lo = A.min()
    if lo < 0:
        A -= lo
    total = A.sum()
    return A / total if total > 0 else A


def egd_step(p: np.ndarray, A: np.ndarray, eta: float) -> np.ndarray:
    """One exponentiated-gradient step ``p_j * exp(eta * sum_i A[i, j])``, renormalised
    (computed in log space so large ``eta * A`` cannot overflow)."""
    logits = np.log(np.clip(p, 1e-300, None)) + eta * A.sum(axis=0)
    logits -= logits.max()
    q = np.exp(logits)
    return q / q.sum()


class Aioli(MixingController):
    """Aioli online mixer; see the module docstring for the method and the knobs.

    Args:
        domains: domain names.
        eta: EGD step size (> 0); scaled by ``k`` when ``eta_scale="k"``.
        update_steps: steps per round, LearnParams sweep included.
        lp_rounds: random orders of the domains probed per round.
        lp_steps: steps per probe.
        one_hot_factor: probe weight on the probed domain, in ``(1/k, 1]``.
        ema: ``None`` for the cumulative EGD update; ``beta`` in ``(0, 1)`` for the
            reference code's EMA form (weight ``beta`` on the previous EMA).
        normalize_A: shift ``A`` to be non-negative and divide by its sum.
        eta_scale: ``"k"`` (multiply ``eta`` by ``k``) or ``"none"``.
        prior: starting mixture (default uniform).
        prior_steps: steps trained on ``prior`` before the first round.
        restart_from_uniform: after ``prior_steps``, base the updates on uniform, not the
            prior (the reference code).
        min_weight: floor on every proportion after an update (``p`` is mixed with uniform
            just enough), so no domain is starved to zero. 0 disables.
        seed: seeds the probe orders.
    """

    method = "aioli"

    def __init__(
        self,
        domains: Sequence[str],
        eta: float = 0.2,
        update_steps: int = 250,
        lp_rounds: int = 4,
        lp_steps: int = 4,
        one_hot_factor: float = 0.75,
        ema: float | None = None,
        normalize_A: bool = True,
        eta_scale: str = "k",
        prior: Mapping[str, float] | Sequence[float] | None = None,
        prior_steps: int = 0,
        restart_from_uniform: bool = False,
        min_weight: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(domains)
        k = self.k
        if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta > 0):
            raise ValueError(f"eta must be a finite number > 0, got {eta!r}")
        for name, v in (("update_steps", update_steps), ("lp_rounds", lp_rounds),
                        ("lp_steps", lp_steps)):
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if int(prior_steps) != prior_steps or prior_steps < 0:
            raise ValueError(f"prior_steps must be an integer >= 0, got {prior_steps!r}")
        sweep = int(lp_rounds) * k * int(lp_steps)
        if sweep >= update_steps:
            raise ValueError(
                f"the LearnParams sweep takes lp_rounds x k x lp_steps = {lp_rounds} x {k} x "
                f"{lp_steps} = {sweep} steps, which leaves nothing of update_steps = "
                f"{update_steps}; raise update_steps or lower lp_rounds/lp_steps")
        if k > 1 and not (1.0 / k < one_hot_factor <= 1.0):
            raise ValueError(f"one_hot_factor must be in (1/k, 1] = ({1.0 / k:.3g}, 1] for "
                             f"k = {k}, got {one_hot_factor!r}")
        if ema is not None and not (0.0 < ema < 1.0):
            raise ValueError(f"ema must be None or in (0, 1), got {ema!r}")
        if eta_scale not in ("k", "none"):
            raise ValueError(f"eta_scale must be 'k' or 'none', got {eta_scale!r}")
        if not (0.0 <= min_weight < 1.0 / k):
            raise ValueError(f"min_weight must be in [0, 1/k) = [0, {1.0 / k:.3g}), got "
                             f"{min_weight!r}")
        self.eta = float(eta)
        self.update_steps, self.lp_rounds, self.lp_steps = (int(update_steps), int(lp_rounds),
                                                           int(lp_steps))
        self.one_hot_factor = float(one_hot_factor)
        self.ema = ema
        self.normalize_A = bool(normalize_A)
        self.eta_scale = eta_scale
        self.prior_steps = int(prior_steps)
        self.restart_from_uniform = bool(restart_from_uniform)
        self.min_weight = float(min_weight)
        self.seed = int(seed)
        self.sweep_steps = sweep
        if prior is not None:
            self._p = check_mixture(self.domains, prior, "prior")
        if prior_steps and prior is None:
            raise ValueError("prior_steps > 0 needs a prior mixture")
        self._base: np.ndarray | None = None  # EGD base for the EMA form
        self._ema_A: np.ndarray | None = None
        self._round_losses: dict[int, np.ndarray] = {}
        self._round = -1
        self.interactions: list[tuple[int, list[list[float]]]] = []
        self._record(0)

    # -- schedule -----------------------------------------------------------------------
    @property
    def effective_eta(self) -> float:
        return self.eta * (self.k if self.eta_scale == "k" else 1.0)

    def _position(self, step: int) -> tuple[int, int] | None:
        """``(round, offset)`` of a step in the adaptive phase, ``None`` in the prior phase."""
        if step < self.prior_steps:
            return None
        r, o = divmod(step - self.prior_steps, self.update_steps)
        return r, o

    def probe_order(self, round_index: int) -> list[int]:
        """Domains probed in round ``round_index``, in order (``lp_rounds`` permutations),
        from a generator keyed by (seed, round) so a resumed run probes the same way."""
        rng = np.random.default_rng([self.seed, round_index])
        return [int(j) for _ in range(self.lp_rounds) for j in rng.permutation(self.k)]

    def _mixture_vector(self, step: int) -> np.ndarray:
        pos = self._position(step)
        if pos is None or pos[1] >= self.sweep_steps:
            return self._p
        r, o = pos
        j = self.probe_order(r)[o // self.lp_steps]
        return smoothed_one_hot(self.k, j, self.one_hot_factor)

    def needs_losses(self, step: int) -> bool:
        pos = self._position(self._check_step(step))
        if pos is None:
            return False
        _, o = pos
        return o <= self.sweep_steps and o % self.lp_steps == 0

    # -- learning -----------------------------------------------------------------------
    def observe(self, step: int, losses: Mapping[str, float]) -> None:
        step = self._check_step(step)
        vec = self._loss_vector(losses)
        if not self.needs_losses(step):
            return
        r, o = self._position(step)  # type: ignore[misc]
        if r != self._round:
            self._round, self._round_losses = r, {}
        self._round_losses[o // self.lp_steps] = vec
        if o == self.sweep_steps:
            self._update(step)

    def learn_params(self, round_index: int) -> np.ndarray | None:
        """``A`` of a round from its measured losses (``None`` if a probe's losses are
        missing: the loop skipped an evaluation, so this round cannot update)."""
        n_probes = self.lp_rounds * self.k
        if any(i not in self._round_losses for i in range(n_probes + 1)):
            return None
        G = np.zeros((self.k, self.k))
        order = self.probe_order(round_index)
        for i, j in enumerate(order):
            G[:, j] += self._round_losses[i] - self._round_losses[i + 1]
        G /= self.lp_rounds * self.lp_steps  # per training step, so A does not depend
        return unsmooth(G, self.one_hot_factor)  # on how long a probe is

    def _update(self, step: int) -> None:
        A = self.learn_params(self._round)
        if A is None:
            return
        self.interactions.append((step, A.tolist()))
        if self.normalize_A:
            A = normalize_interaction(A)
        eta = self.effective_eta
        if self._base is None:
            self._base = (np.full(self.k, 1.0 / self.k) if self.restart_from_uniform
                          else self._p.copy())
            if self.restart_from_uniform:
                self._p = self._base.copy()
        if self.ema is None:
            p = egd_step(self._p, A, eta)
        else:
            self._ema_A = A if self._ema_A is None else (
                (1.0 - self.ema) * A + self.ema * self._ema_A)
            p = egd_step(self._base, self._ema_A, eta)
        if self.min_weight > 0:  # mix with uniform: every weight >= min_weight, sum 1
            p = self.min_weight + (1.0 - self.k * self.min_weight) * p
        self._p = p
        self._record(step)

    # -- checkpointing ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update({
            "round": self._round,
            "round_losses": {str(i): v.tolist() for i, v in self._round_losses.items()},
            "base": None if self._base is None else self._base.tolist(),
            "ema_A": None if self._ema_A is None else self._ema_A.tolist(),
            "interactions": [[s, A] for s, A in self.interactions],
        })
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._round = int(state["round"])
        self._round_losses = {int(i): np.asarray(v, dtype=np.float64)
                              for i, v in state["round_losses"].items()}
        self._base = None if state["base"] is None else np.asarray(state["base"])
        self._ema_A = None if state["ema_A"] is None else np.asarray(state["ema_A"])
        self.interactions = [(int(s), A) for s, A in state["interactions"]]
