"""Bounds on every size a study may declare, the one place they are written.

The REST schemas (``mfms_client.schemas``) declare them to clients and the library's
validators (:mod:`mfms_bo.space`, :mod:`mfms_bo.study`) enforce them, so a study the API
accepts is one the library can build, and the two cannot drift apart.
"""

from __future__ import annotations

__all__ = ["MAX_DOMAINS", "MAX_MODEL_SIZE", "MAX_STEPS", "MAX_CHECKPOINTS", "MAX_COST",
           "LOSS_MIN", "LOSS_MAX"]

MAX_DOMAINS = 1024
MAX_MODEL_SIZE = 1e13  # parameters; beyond any model anyone trains
MAX_STEPS = 10**9
MAX_CHECKPOINTS = 1000  # evaluations per trial
MAX_COST = 1e15  # GPU-seconds
# Loss sanity bounds (nats), exclusive: the default when a study sets no ``loss_bounds``.
LOSS_MIN, LOSS_MAX = 0.0, 1e4
