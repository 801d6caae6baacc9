"""Per-process cache of study strategies.

Strategies are rebuilt from the study config alone, so the cache is only for speed: an
``MFMSBO`` keeps its last GP and warm-start hyperparameters between calls. Each entry has a
lock because the request threads and the maintenance thread may use one strategy at once
and a strategy's caches are not thread-safe.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from mfms_bo.strategies import MFMSBO, Strategy
from server.study_space import search_space_of_config, strategy_of_config

__all__ = ["StrategyCache", "CachedStrategy"]


@dataclass
class CachedStrategy:
    strategy: Strategy
    lock: threading.Lock


class StrategyCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[int, str], CachedStrategy] = {}

    def _get(self, key: tuple[int, str], build) -> CachedStrategy:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = CachedStrategy(build(), threading.Lock())
                self._entries[key] = entry
            return entry

    def strategy(self, study_id: int, config: dict[str, Any], seed: int) -> CachedStrategy:
        """The study's own strategy (proposals and its recommendation)."""
        return self._get((study_id, "strategy"), lambda: strategy_of_config(config, seed))

    def surrogate_model(self, study_id: int, config: dict[str, Any], seed: int
                        ) -> CachedStrategy:
        """An MFMS-BO model of the study, whatever its strategy: ``/predict`` answers for
        any fidelity, which only the multi-fidelity surrogate can."""
        return self._get((study_id, "surrogate"),
                         lambda: MFMSBO(search_space_of_config(config), seed=seed))

    def forget(self, study_id: int) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == study_id]:
                del self._entries[key]
