"""Search space of a study: mixtures on a (bounded) simplex and the two fidelities.

* :class:`MixtureSpace` - k named domains and per-domain bounds ``lo_i <= w_i <= hi_i``;
  validates, samples and projects mixtures.
* :class:`FidelitySpace` - a ladder of runnable model sizes, a steps range and the target
  fidelity ``(m*, z*)``; ``m*`` may exceed every runnable size (extrapolation).
* :class:`SearchSpace` - both, plus the objective weights and an optional finite candidate
  pool, and the encoding of ``(w, m, z)`` into the GP's ``n x (k + 2)`` input
  ``[w_1..w_k, s(log m), s(log z)]`` with ``s`` mapping the runnable range to ``[0, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mfms_bo.errors import ValidationError
from mfms_bo.limits import MAX_CHECKPOINTS, MAX_DOMAINS, MAX_MODEL_SIZE, MAX_STEPS

__all__ = ["MixtureSpace", "FidelitySpace", "SearchSpace", "project_to_simplex",
           "check_mixture"]

_SUM_TOL = 1e-6  # tolerance on sum(w) == 1 for user-supplied mixtures


def project_to_simplex(V: Tensor, lo: Tensor, hi: Tensor, iters: int = 60) -> Tensor:
    """Euclidean projection of the rows of ``V`` (``n x k``) onto ``{lo <= w <= hi, sum w = 1}``.

    Solves for the shift ``tau`` with ``sum clip(v - tau, lo, hi) = 1`` by bisection, so the
    result satisfies the bounds exactly and the sum to float precision; a final rescale of
    the free coordinates removes the residual.
    """
    V = V.to(lo.dtype)
    lo_t = (V - hi).min(dim=-1, keepdim=True).values - 1.0
    hi_t = (V - lo).max(dim=-1, keepdim=True).values + 1.0
    for _ in range(iters):
        mid = 0.5 * (lo_t + hi_t)
        s = (V - mid).clamp(min=lo, max=hi).sum(dim=-1, keepdim=True)
        too_big = s > 1.0
        lo_t = torch.where(too_big, mid, lo_t)
        hi_t = torch.where(too_big, hi_t, mid)
    W = (V - 0.5 * (lo_t + hi_t)).clamp(min=lo, max=hi)
    # Distribute the tiny residual over coordinates strictly inside their bounds.
    resid = 1.0 - W.sum(dim=-1, keepdim=True)
    room = torch.where(resid > 0, hi - W, W - lo).clamp(min=0)
    denom = room.sum(dim=-1, keepdim=True).clamp(min=1e-300)
    W = W + resid * room / denom
    return W.clamp(min=lo, max=hi)


def check_mixture(mixture: Mapping[str, float], domains: Sequence[str],
                  field_name: str = "mixture") -> Tensor:
    """A mixture as a ``k`` tensor in ``domains`` order: the one mixture validator (trial
    mixtures, reported proportions, online mixers' priors), so every path refuses the same
    inputs with the same messages. Missing domains weigh 0.

    Raises:
        ValidationError: not an object, unknown domain, a weight that is not a finite number
            >= 0, or a sum not within 1e-6 of one (the message names ``field_name``).
    """
    if not isinstance(mixture, Mapping):
        raise ValidationError(f"{field_name}: must be an object {{domain: weight}}")
    unknown = [d for d in mixture if d not in domains]
    if unknown:
        raise ValidationError(
            f"{field_name}: unknown domain(s) {unknown}; known: {list(domains)}"
        )
    vals = []
    for d in domains:
        v = mixture.get(d, 0.0)
        try:
            v = float(v)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"{field_name}[{d!r}]: not a number: {v!r}") from exc
        if not math.isfinite(v):
            raise ValidationError(f"{field_name}[{d!r}]: must be finite, got {v}")
        if v < 0:
            raise ValidationError(f"{field_name}[{d!r}]: weights must be >= 0, got {v}")
        vals.append(v)
    w = torch.tensor(vals, dtype=torch.float64)
    total = float(w.sum())
    if abs(total - 1.0) > _SUM_TOL:
        raise ValidationError(f"{field_name}: weights must sum to 1, got {total:.6g}")
    return w


@dataclass(frozen=True)
class MixtureSpace:
    """k named domains with per-domain bounds.

    Args:
        domains: domain names, in coordinate order.
        bounds: optional ``{domain: (lo, hi)}``; unspecified domains get ``(0, 1)``.
    """

    domains: tuple[str, ...]
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        doms = tuple(self.domains)
        object.__setattr__(self, "domains", doms)
        if len(doms) < 2:
            raise ValidationError("domains: at least two domains are needed for a mixture")
        if len(doms) > MAX_DOMAINS:
            raise ValidationError(f"domains: at most {MAX_DOMAINS} domains, got {len(doms)}")
        if len(set(doms)) != len(doms):
            raise ValidationError("domains: names must be unique")
        for d in doms:
            if not isinstance(d, str) or not d.strip():
                raise ValidationError(f"domains: invalid domain name {d!r}")
        for name, b in self.bounds.items():
            if name not in doms:
                raise ValidationError(f"mixture_bounds: unknown domain {name!r}")
            lo, hi = float(b[0]), float(b[1])
            if not (math.isfinite(lo) and math.isfinite(hi)) or not 0.0 <= lo <= hi <= 1.0:
                raise ValidationError(
                    f"mixture_bounds[{name!r}]: need 0 <= lo <= hi <= 1, got [{lo}, {hi}]"
                )
        lo_t, hi_t = self.lower, self.upper
        if float(lo_t.sum()) > 1.0 + 1e-9:
            raise ValidationError("mixture_bounds: lower bounds sum above 1; no mixture fits")
        if float(hi_t.sum()) < 1.0 - 1e-9:
            raise ValidationError("mixture_bounds: upper bounds sum below 1; no mixture fits")

    @property
    def k(self) -> int:
        return len(self.domains)

    @property
    def lower(self) -> Tensor:
        """``k`` lower bounds, float64."""
        return torch.tensor(
            [float(self.bounds.get(d, (0.0, 1.0))[0]) for d in self.domains], dtype=torch.float64
        )

    @property
    def upper(self) -> Tensor:
        """``k`` upper bounds, float64."""
        return torch.tensor(
            [float(self.bounds.get(d, (0.0, 1.0))[1]) for d in self.domains], dtype=torch.float64
        )

    def validate(self, mixture: Mapping[str, float], field_name: str = "mixture") -> Tensor:
        """:func:`check_mixture` over these domains, then each weight within its bounds.

        Raises:
            ValidationError: as :func:`check_mixture`, or a weight outside its bounds.
        """
        w = check_mixture(mixture, self.domains, field_name)
        lo, hi = self.lower, self.upper
        bad = ((w < lo - 1e-9) | (w > hi + 1e-9)).nonzero().flatten().tolist()
        if bad:
            d = self.domains[bad[0]]
            raise ValidationError(
                f"{field_name}[{d!r}]={float(w[bad[0]]):.6g} is outside its bounds "
                f"[{float(lo[bad[0]])}, {float(hi[bad[0]])}]"
            )
        return w

    def to_dict(self, w: Tensor) -> dict[str, float]:
        """A ``k`` tensor as ``{domain: weight}`` (plain floats, JSON-ready)."""
        return {d: float(v) for d, v in zip(self.domains, w.tolist(), strict=True)}

    def project(self, V: Tensor) -> Tensor:
        """Project ``n x k`` points onto the bounded simplex (bounds exact)."""
        return project_to_simplex(V, self.lower, self.upper)

    def sample(self, n: int, generator: torch.Generator | None = None,
               concentration: float = 1.0) -> Tensor:
        """``n x k`` mixtures: Dirichlet(concentration) mapped into the bounds.

        Mixtures are drawn as ``lo + (1 - sum lo) * d`` (respects lower bounds and the sum)
        and projected when an upper bound is active, so samples are always feasible.
        """
        # numpy's Dirichlet, seeded from ``generator`` so a seeded caller stays reproducible.
        seed = (None if generator is None
                else int(torch.randint(0, 2**62, (1,), generator=generator)))
        rng = np.random.default_rng(seed)
        d = torch.from_numpy(rng.dirichlet(np.full(self.k, float(concentration)), size=n))
        lo, hi = self.lower, self.upper
        W = lo + (1.0 - float(lo.sum())) * d
        if bool((W > hi + 1e-12).any()):
            W = self.project(W)
        return W


@dataclass(frozen=True)
class FidelitySpace:
    """Runnable fidelities and the target one.

    Args:
        model_sizes: runnable sizes (parameter counts), any order; stored sorted.
        steps_min, steps_max: range of training steps a trial may request.
        target_model_size: ``m*``; may exceed every runnable size.
        target_steps: ``z*``; defaults to ``steps_max``.
        checkpoints: evaluations per trial.
    """

    model_sizes: tuple[float, ...]
    steps_min: int
    steps_max: int
    target_model_size: float
    target_steps: int | None = None
    checkpoints: int = 8

    def __post_init__(self) -> None:
        sizes = tuple(sorted(float(m) for m in self.model_sizes))
        object.__setattr__(self, "model_sizes", sizes)
        if not sizes:
            raise ValidationError("model_sizes: at least one runnable model size is required")
        for m in (*sizes, float(self.target_model_size)):
            if not math.isfinite(m) or m <= 0 or m > MAX_MODEL_SIZE:
                raise ValidationError(
                    f"model_sizes: sizes must be positive parameter counts <= {MAX_MODEL_SIZE:g},"
                    f" got {m:g}"
                )
        if len(set(sizes)) != len(sizes):
            raise ValidationError("model_sizes: duplicate sizes")
        if not (1 <= int(self.steps_min) <= int(self.steps_max) <= MAX_STEPS):
            raise ValidationError(
                f"steps: need 1 <= min <= max <= {MAX_STEPS}, got "
                f"[{self.steps_min}, {self.steps_max}]"
            )
        object.__setattr__(self, "steps_min", int(self.steps_min))
        object.__setattr__(self, "steps_max", int(self.steps_max))
        ts = self.steps_max if self.target_steps is None else int(self.target_steps)
        if not (self.steps_min <= ts <= MAX_STEPS):
            raise ValidationError(f"target.steps: must be in [{self.steps_min}, {MAX_STEPS}]")
        object.__setattr__(self, "target_steps", ts)
        object.__setattr__(self, "target_model_size", float(self.target_model_size))
        if float(self.target_model_size) < sizes[0]:
            raise ValidationError("target.model_size: below the smallest runnable size")
        if not 1 <= int(self.checkpoints) <= MAX_CHECKPOINTS:
            raise ValidationError(f"checkpoints: must be between 1 and {MAX_CHECKPOINTS}")

    @property
    def largest_runnable(self) -> float:
        return self.model_sizes[-1]

    def validate(self, model_size: float, steps: int) -> None:
        """Reject a fidelity a trial may not request (size off the ladder, steps out of range)."""
        try:
            steps_f = float(steps)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"steps: not a number: {steps!r}") from exc
        if not math.isfinite(steps_f) or steps_f != int(steps_f):
            raise ValidationError(f"steps: must be a whole number, got {steps!r}")
        if float(model_size) not in self.model_sizes:
            raise ValidationError(
                f"model_size: {model_size:g} is not on the ladder {list(self.model_sizes)}"
            )
        if not self.steps_min <= int(steps) <= self.steps_max:
            raise ValidationError(
                f"steps: {steps} outside [{self.steps_min}, {self.steps_max}]"
            )

    def checkpoint_steps(self, steps: int) -> tuple[int, ...]:
        """Evenly spaced evaluation steps ending at ``steps`` (at most ``checkpoints``)."""
        n = min(int(self.checkpoints), int(steps))
        return tuple(sorted({max(1, round(steps * i / n)) for i in range(1, n + 1)}))

    # -- encoding ---------------------------------------------------------------------------
    @property
    def _log_m_range(self) -> tuple[float, float]:
        lo = math.log(self.model_sizes[0])
        hi = math.log(max(self.model_sizes[-1], self.target_model_size))
        return lo, (hi if hi > lo else lo + 1.0)

    @property
    def _log_z_range(self) -> tuple[float, float]:
        lo = math.log(self.steps_min)
        hi = math.log(max(self.steps_max, self.target_steps))
        return lo, (hi if hi > lo else lo + 1.0)

    def encode(self, model_size: Tensor, steps: Tensor) -> Tensor:
        """``n`` sizes and ``n`` steps -> ``n x 2`` scaled log-fidelities in ``[0, 1]``."""
        (ml, mh), (zl, zh) = self._log_m_range, self._log_z_range
        m = (torch.log(model_size.to(torch.float64)) - ml) / (mh - ml)
        z = (torch.log(steps.to(torch.float64)) - zl) / (zh - zl)
        return torch.stack([m, z], dim=-1)

    def decode(self, F: Tensor) -> tuple[Tensor, Tensor]:
        """Inverse of :meth:`encode`: ``n x 2`` -> (sizes, steps), steps rounded."""
        (ml, mh), (zl, zh) = self._log_m_range, self._log_z_range
        m = torch.exp(F[..., 0] * (mh - ml) + ml)
        z = torch.round(torch.exp(F[..., 1] * (zh - zl) + zl))
        return m, z

    def target_encoding(self) -> Tensor:
        """The target fidelity encoded, shape ``2``."""
        return self.encode(
            torch.tensor([self.target_model_size], dtype=torch.float64),
            torch.tensor([float(self.target_steps)], dtype=torch.float64),
        )[0]


@dataclass(frozen=True)
class SearchSpace:
    """Mixtures x fidelities, the objective and an optional finite candidate pool.

    ``candidates`` (``p x k``) restricts proposals to a pool of mixtures (pool-based
    problems); ``objective_weights`` defaults to the uniform average over domains.
    ``loss_domains`` names the validation sets losses are reported on when they differ from
    the mixture's training domains (e.g. RegMix trains on 17 domains, validates on 13);
    objective weights then refer to them.
    """

    mixtures: MixtureSpace
    fidelities: FidelitySpace
    objective_weights: Mapping[str, float] | None = None
    candidates: Tensor | None = None
    loss_domains: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.loss_domains is not None:
            object.__setattr__(self, "loss_domains", tuple(self.loss_domains))
        names = self.loss_domains or self.mixtures.domains
        w = self.objective_weights
        if w is None:
            w = {d: 1.0 / len(names) for d in names}
        else:
            unknown = [d for d in w if d not in names]
            if unknown:
                raise ValidationError(f"objective_weights: unknown domain(s) {unknown}")
            vals = [float(v) for v in w.values()]
            if any(not math.isfinite(v) or v < 0 for v in vals) or sum(vals) <= 0:
                raise ValidationError(
                    "objective_weights: weights must be finite, >= 0 and not all zero"
                )
            w = {d: float(v) for d, v in w.items()}
        object.__setattr__(self, "objective_weights", w)
        if self.candidates is not None:
            C = torch.as_tensor(self.candidates, dtype=torch.float64)
            if C.ndim != 2 or C.shape[1] != self.mixtures.k or C.shape[0] == 0:
                raise ValidationError("candidates: need a non-empty p x k table of mixtures")
            object.__setattr__(self, "candidates", C)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SearchSpace:
        """The space a study config describes (the JSON of a ``POST /studies`` body, or
        ``mfms_bo.bench.config_of_problem``): the one builder of a space from outside data,
        so every check on it lives here and its message reaches the client unchanged.

        Raises:
            ValidationError: naming the field (``mixture_bounds``, ``candidates[3]``, ...).
        """
        mixtures = MixtureSpace(tuple(config["domains"]), bounds={
            d: (float(b[0]), float(b[1])) for d, b in (config.get("mixture_bounds") or {}).items()})
        target, steps = config["target"], config["steps"]
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
            candidates = torch.stack([mixtures.validate(c, f"candidates[{i}]")
                                      for i, c in enumerate(config["candidates"])])
        loss_domains = config.get("loss_domains")
        if loss_domains is not None and len(loss_domains) == 0:
            raise ValidationError("loss_domains: must not be empty when given")
        return cls(mixtures, fid, config.get("objective_weights"), candidates,
                   tuple(loss_domains) if loss_domains else None)

    @property
    def k(self) -> int:
        return self.mixtures.k

    @property
    def dim(self) -> int:
        """GP input dimension ``d = k + 2``."""
        return self.mixtures.k + 2

    def encode(self, W: Tensor, model_size: Tensor, steps: Tensor) -> Tensor:
        """``n x k`` mixtures, ``n`` sizes, ``n`` steps -> ``n x (k + 2)`` GP inputs."""
        return torch.cat([W.to(torch.float64), self.fidelities.encode(model_size, steps)], dim=-1)

    def decode(self, X: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Inverse of :meth:`encode`: GP inputs -> (mixtures, sizes, steps)."""
        m, z = self.fidelities.decode(X[..., -2:])
        return X[..., :-2], m, z

    def target_inputs(self, W: Tensor) -> Tensor:
        """GP inputs of ``n x k`` mixtures at the target fidelity, ``n x (k + 2)``."""
        t = self.fidelities.target_encoding().expand(W.shape[0], 2)
        return torch.cat([W.to(torch.float64), t], dim=-1)

    @property
    def reported_domains(self) -> tuple[str, ...]:
        """Names a loss report may use."""
        return self.loss_domains or self.mixtures.domains

    def mixture_candidates(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """The pool when there is one, else ``n`` feasible random mixtures."""
        if self.candidates is not None:
            return self.candidates
        return self.mixtures.sample(n, generator)
