"""Trial backends behind one small interface (:class:`Backend`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mfms_client.schemas import TrialAssignment

__all__ = ["Backend", "BackendResult", "Report"]

Report = Callable[..., None]
"""``report(step, losses, cost_so_far, proportions=None)``: called by a backend at every
checkpoint. ``proportions`` is the mixture the run is training on at that step, passed only
by backends that mix online (the trial's ``online`` field)."""


@dataclass(frozen=True)
class BackendResult:
    """What a backend may return instead of a bare cost: the cost plus, for an online-mixed
    run, ``online = {"final_proportions": {...}, "average_proportions": {...}}``."""

    cost: float
    online: dict[str, Any] | None = None


class Backend(Protocol):
    """Runs one trial. Calls ``report`` at each checkpoint as it happens and returns the
    trial's cost (GPU-seconds, or the problem's own unit for simulations). Raises on
    failure; the agent fails the trial with the exception's message."""

    name: str
    #: The domains this backend can run (a simulator's, a data folder's), sent with every
    #: ``/next-trial`` so the server hands it only studies it has every domain of; None
    #: (a user's command) takes any study.
    domains: tuple[str, ...] | None
    #: Optional (default False): only studies whose domains are exactly ``domains``.
    #: exact_domains: bool

    def run(self, trial: TrialAssignment, report: Report) -> float | BackendResult: ...
