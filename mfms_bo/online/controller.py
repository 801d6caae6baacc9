"""The contract between a training loop and an online mixer.

A training loop that mixes ``k`` data domains asks its :class:`MixingController` two
things at each step, and tells it one:

* ``needs_losses(step)`` - should the loop measure every domain's validation loss now
  (before running step ``step``, i.e. after ``step`` steps)? Then it calls
  ``observe(step, losses)``.
* ``mixture(step)`` - the proportions the batch of step ``step`` is sampled with. This is
  not always :attr:`proportions`: a mixer that probes (Aioli's LearnParams) steers the
  sampler to other mixtures for a few steps, and those steps count toward the run.

Usage with any PyTorch loop (``loaders`` maps each domain to an iterator of batches)::

    ctl = Aioli(domains, update_steps=250)
    for step in range(total_steps):
        if ctl.needs_losses(step):
            ctl.observe(step, {d: val_loss(model, d) for d in domains})
        w = ctl.mixture(step)                       # proportions for this batch
        counts = allocate(list(w.values()), batch_size)   # or sample a domain per row
        x, y = cat_batches([take(loaders[d], n) for d, n in zip(w, counts)])
        loss = model(x, y); loss.backward(); opt.step(); opt.zero_grad()
    final = ctl.proportions                      # where the mixer ended
    ctl.trajectory                               # [(step, proportions), ...]

State (``state_dict`` / ``load_state_dict``) is plain JSON-able data, so a checkpointed
run resumes with the same proportions and the same probing schedule.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mfms_bo import space

__all__ = ["MixingController", "Stratified", "Static", "check_mixture"]


def check_mixture(domains: Sequence[str], p: Mapping[str, float] | Sequence[float],
                  what: str = "mixture") -> np.ndarray:
    """``p`` (by domain, or a vector in ``domains`` order) as a vector over ``domains``,
    checked by the library's one mixture validator (:func:`mfms_bo.space.check_mixture`).

    Raises:
        ValueError: naming the offending domain or the sum.
    """
    if not isinstance(p, Mapping):
        vec = list(p)
        if len(vec) != len(domains):
            raise ValueError(f"{what}: expected {len(domains)} weights, got {len(vec)}")
        p = dict(zip(domains, vec, strict=True))
    return space.check_mixture(p, domains, what).numpy()


class MixingController(ABC):
    """Decides the mixture of every training batch from per-domain validation losses.

    Args:
        domains: the ``k >= 1`` domain names, in the order vectors use.
    """

    method = "base"

    def __init__(self, domains: Sequence[str]) -> None:
        domains = [str(d) for d in domains]
        if not domains:
            raise ValueError("a mixing controller needs at least one domain")
        if len(set(domains)) != len(domains):
            raise ValueError(f"domain names must be unique: {domains}")
        self.domains: tuple[str, ...] = tuple(domains)
        self.k = len(self.domains)
        self._p = np.full(self.k, 1.0 / self.k)
        self.trajectory: list[tuple[int, dict[str, float]]] = []
        self._steps_on: np.ndarray = np.zeros(self.k)  # proportion-weighted steps served

    # -- what the loop asks -----------------------------------------------------------------
    @property
    def proportions(self) -> dict[str, float]:
        """The mixer's current mixture (its estimate of the best one)."""
        return self._as_dict(self._p)

    def mixture(self, step: int) -> dict[str, float]:
        """Proportions for the batch of step ``step`` (0-based). Counted as served."""
        p = self._mixture_vector(self._check_step(step))
        self._steps_on += p
        return self._as_dict(p)

    def needs_losses(self, step: int) -> bool:
        """Whether the loop should call :meth:`observe` before running step ``step``."""
        return False

    def observe(self, step: int, losses: Mapping[str, float]) -> None:
        """Per-domain validation losses after ``step`` steps. Extra keys are an error:
        a controller asked about a domain it does not mix is a misconfiguration."""
        self._check_step(step)
        self._loss_vector(losses)

    @property
    def average_proportions(self) -> dict[str, float]:
        """Mean mixture over every batch served so far (probing steps included)."""
        total = self._steps_on.sum()
        return self._as_dict(self._steps_on / total if total > 0 else self._p)

    # -- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state; restore with :meth:`load_state_dict` on a controller built
        with the same arguments."""
        return {"method": self.method, "domains": list(self.domains),
                "p": self._p.tolist(), "steps_on": self._steps_on.tolist(),
                "trajectory": [[s, dict(p)] for s, p in self.trajectory]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("method") != self.method or list(state.get("domains", [])) != list(
                self.domains):
            raise ValueError(f"state is for {state.get('method')!r} over "
                             f"{state.get('domains')}, not {self.method!r} over "
                             f"{list(self.domains)}")
        self._p = np.asarray(state["p"], dtype=np.float64)
        self._steps_on = np.asarray(state["steps_on"], dtype=np.float64)
        self.trajectory = [(int(s), dict(p)) for s, p in state["trajectory"]]

    # -- helpers ----------------------------------------------------------------------------
    @abstractmethod
    def _mixture_vector(self, step: int) -> np.ndarray:
        """Proportions for step ``step`` as a vector."""

    def _record(self, step: int) -> None:
        self.trajectory.append((int(step), self.proportions))

    def _as_dict(self, p: np.ndarray) -> dict[str, float]:
        return {d: float(v) for d, v in zip(self.domains, p, strict=True)}

    def _loss_vector(self, losses: Mapping[str, float]) -> np.ndarray:
        unknown = sorted(set(losses) - set(self.domains))
        if unknown:
            raise ValueError(f"losses for unknown domain(s) {unknown}; this controller "
                             f"mixes {list(self.domains)}")
        missing = [d for d in self.domains if d not in losses]
        if missing:
            raise ValueError(f"losses missing for domain(s) {missing}")
        vec = np.array([float(losses[d]) for d in self.domains], dtype=np.float64)
        bad = [d for d, v in zip(self.domains, vec, strict=True) if not math.isfinite(v)]
        if bad:
            raise ValueError(f"non-finite loss for domain(s) {bad}")
        return vec

    @staticmethod
    def _check_step(step: int) -> int:
        if int(step) != step or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        return int(step)


class Stratified(MixingController):
    """Uniform proportions for the whole run: the baseline every mixer must beat."""

    method = "stratified"

    def __init__(self, domains: Sequence[str]) -> None:
        super().__init__(domains)
        self._record(0)

    def _mixture_vector(self, step: int) -> np.ndarray:
        return self._p


class Static(MixingController):
    """Fixed proportions ``p`` (e.g. the mixture a BO study recommended)."""

    method = "static"

    def __init__(self, domains: Sequence[str], p: Mapping[str, float] | Sequence[float]
                 ) -> None:
        super().__init__(domains)
        self._p = check_mixture(self.domains, p, "static mixture")
        self._record(0)

    def _mixture_vector(self, step: int) -> np.ndarray:
        return self._p
