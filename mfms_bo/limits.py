"""Bounds on every size a study may declare, the one place they are written.

The REST schemas (``mfms_client.schemas``) declare them to clients and the library's
validators (:mod:`mfms_bo.space`, :mod:`mfms_bo.study`) enforce them, so a study the API
accepts is one the library can build, and the two cannot drift apart.

Strategy options are checked here too (:func:`whole_number`, :func:`real_number`): they
arrive from REST clients and command lines and run inside the server, so an option that is
not a number, or one so large that a proposal would take hours or all the memory
(``n_mixtures=10**9``), is refused when the study is created, with a message naming it.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MAX_DOMAINS", "MAX_MODEL_SIZE", "MAX_STEPS", "MAX_CHECKPOINTS", "MAX_COST",
           "LOSS_MIN", "LOSS_MAX", "MAX_NESTING", "whole_number", "real_number"]

MAX_DOMAINS = 1024
MAX_MODEL_SIZE = 1e13  # parameters; beyond any model anyone trains
MAX_STEPS = 10**9
MAX_CHECKPOINTS = 1000  # evaluations per trial
MAX_COST = 1e15  # GPU-seconds
# Loss sanity bounds (nats), exclusive: the default when a study sets no ``loss_bounds``.
LOSS_MIN, LOSS_MAX = 0.0, 1e4
# Levels of lists and objects one free-form JSON value (metadata, options, an online spec)
# may nest: far beyond any real use, far below what pydantic serialises (~250 levels; a
# deeper value was stored and then broke every listing of its study) or Python's JSON
# parser reads (~1000).
MAX_NESTING = 32


def whole_number(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``.

    Raises:
        ValueError: ``"<name>: must be a whole number in [low, high], got <value>"``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}: must be a whole number in [{low}, {high}], got {value!r}")
    return int(value)


def real_number(name: str, value: Any, low: float, high: float, *,
                low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float in the interval from ``low`` to ``high`` (each end open
    when asked).

    Raises:
        ValueError: ``"<name>: must be a number in [low, high], got <value>"`` (the
            brackets show which ends are open).
    """
    ok = (not isinstance(value, bool) and isinstance(value, (int, float))
          and math.isfinite(float(value)))
    if ok:
        v = float(value)
        ok = (low < v if low_open else low <= v) and (v < high if high_open else v <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name}: must be a number in {interval}, got {value!r}")
    return float(value)
