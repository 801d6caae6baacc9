"""Trial backends behind one small interface (:class:`Backend`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from server.schemas import TrialAssignment

__all__ = ["Backend", "Report"]

Report = Callable[[int, dict[str, float], float | None], None]
"""``report(step, losses, cost_so_far)``: called by a backend at every checkpoint."""


class Backend(Protocol):
    """Runs one trial. Calls ``report`` at each checkpoint as it happens and returns the
    trial's cost (GPU-seconds, or the problem's own unit for simulations). Raises on
    failure; the agent fails the trial with the exception's message."""

    name: str

    def run(self, trial: TrialAssignment, report: Report) -> float: ...
