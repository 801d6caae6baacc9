"""A study's configuration, parsed once into a typed, frozen :class:`StudyConfig`.

The service stores a study's config as the JSON of its ``POST /studies`` body; everything
that acts on a study (proposals, loss reports, the budget, recommendations) takes this
object instead of re-reading that JSON. Any process builds the same object, and the same
strategy, from the stored JSON alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mfms_bo.errors import ValidationError
from mfms_bo.limits import LOSS_MAX, LOSS_MIN
from mfms_bo.space import SearchSpace, check_mixture
from mfms_bo.strategies import Strategy, make_strategy
from mfms_bo.trials import validate_losses

__all__ = ["StudyConfig"]


@dataclass(frozen=True)
class StudyConfig:
    """What a study searches and how.

    Args:
        space: mixtures, fidelities, objective and candidate pool.
        strategy: a name in ``mfms_bo.strategies.STRATEGIES``.
        strategy_options: keyword arguments of that strategy.
        loss_bounds: every reported loss must lie strictly inside ``(min, max)``.
        budget_cost: GPU-seconds after which the study ends; None for no limit.
        budget_trials: trials after which the study ends; None for no limit.
        online: the in-run mixing spec every trial runs with (``mfms_bo.online``), or None.
    """

    space: SearchSpace
    strategy: str = "mfms-bo"
    strategy_options: Mapping[str, Any] = field(default_factory=dict)
    loss_bounds: tuple[float, float] = (LOSS_MIN, LOSS_MAX)
    budget_cost: float | None = None
    budget_trials: int | None = None
    online: Mapping[str, Any] | None = None

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> StudyConfig:
        """Parse a stored study config; a study created before ``loss_bounds`` existed gets
        the default bounds.

        Raises:
            ValidationError: from :meth:`SearchSpace.from_config`, naming the field.
        """
        strategy = config.get("strategy") or {}
        bounds = config.get("loss_bounds") or {}
        budget = config.get("budget") or {}
        return cls(space=SearchSpace.from_config(config),
                   strategy=strategy.get("name", "mfms-bo"),
                   strategy_options=dict(strategy.get("options") or {}),
                   loss_bounds=(float(bounds.get("min", LOSS_MIN)),
                                float(bounds.get("max", LOSS_MAX))),
                   budget_cost=None if budget.get("cost") is None else float(budget["cost"]),
                   budget_trials=None if budget.get("trials") is None
                   else int(budget["trials"]),
                   online=config.get("online"))

    @property
    def has_budget(self) -> bool:
        return self.budget_cost is not None or self.budget_trials is not None

    def make_strategy(self, seed: int) -> Strategy:
        """The study's strategy; building it is also how its options are validated.

        Raises:
            UnknownStrategyError, ValidationError: bad name or options.
        """
        return make_strategy(self.strategy, self.space, seed=seed,
                             options=dict(self.strategy_options))

    def check_losses(self, losses: Mapping[str, float], field_name: str = "losses"
                     ) -> dict[str, float]:
        """A loss report as the study stores it: known domains, finite, and strictly inside
        :attr:`loss_bounds` - the one check for every path that takes losses.

        Raises:
            ValidationError: naming ``field_name`` and the domain, e.g.
                ``losses['code']: must be in (0, 10000), got 1e+300``.
        """
        try:
            out = validate_losses(losses, self.space.reported_domains)
        except ValidationError as exc:
            raise ValidationError(field_name + str(exc).removeprefix("losses")) from exc
        lo, hi = self.loss_bounds
        for name, value in out.items():
            if not lo < value < hi:
                raise ValidationError(f"{field_name}[{name!r}]: must be in ({lo:g}, {hi:g}), "
                                      f"got {value:.10g} (the study's loss_bounds)")
        return out

    def check_proportions(self, proportions: Mapping[str, float], field_name: str
                          ) -> dict[str, float]:
        """A reported training mixture as ``{domain: weight}`` over all domains. Any point
        of the simplex is accepted, not only the study's bounds: an online mixer decides
        where the run goes once it starts.

        Raises:
            ValidationError: as :func:`mfms_bo.space.check_mixture`.
        """
        domains = self.space.mixtures.domains
        w = check_mixture(proportions, domains, field_name)
        return {d: float(v) for d, v in zip(domains, w.tolist(), strict=True)}
