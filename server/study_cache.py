"""Per-process cache of each study's parsed config and strategies, for speed only.

A study's stored JSON config is parsed into a :class:`~mfms_bo.study.StudyConfig` once, on
first use, and its strategy and surrogate are built from that on demand (and its last
recommendation kept); any process that rebuilds them from the stored config behaves the
same. The cache is bounded (least recently
used studies go first), and an entry whose study's stored config or seed no longer matches
is rebuilt, so a changed or re-created study never sees a stale one (a deleted study's
entry is never read again and ages out). Strategy and surrogate
each carry a lock: request threads and the maintenance thread may share one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mfms_bo.strategies import MFMSBO, Strategy
from mfms_bo.study import StudyConfig
from server.models import Study

__all__ = ["StudyCache", "CachedStudy", "CachedStrategy"]


@dataclass
class CachedStrategy:
    strategy: Strategy
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class CachedStudy:
    raw: Mapping[str, Any]  # the stored JSON and seed it was parsed from
    seed: int
    config: StudyConfig
    strategy: CachedStrategy | None = None
    surrogate: CachedStrategy | None = None
    recommendation: tuple[tuple, Any] | None = None  # (state of the data, the answer)
    # The study row's ``updated_at`` when this entry was last checked against its config
    # (every write to a study row sets it, in any process); see ``StudyCache.at_version``.
    version: Any = None


class StudyCache:
    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, CachedStudy] = OrderedDict()

    def study(self, study_id: int, config: Mapping[str, Any], seed: int) -> CachedStudy:
        """The study's entry, parsed from ``config`` (its stored JSON) when it is new here or
        its config or seed changed.

        Raises:
            ValidationError: a stored config the library no longer accepts (-> 422).
        """
        with self._lock:
            entry = self._entries.get(study_id)
            if entry is not None and entry.seed == seed and entry.raw == config:
                self._entries.move_to_end(study_id)
                return entry
        entry = CachedStudy(dict(config), int(seed), StudyConfig.from_dict(config))
        with self._lock:
            self._entries[study_id] = entry
            self._entries.move_to_end(study_id)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return entry

    def at_version(self, study_id: int, version: Any,
                   load: Callable[[], tuple[Mapping[str, Any], int]]) -> CachedStudy:
        """The study's entry, read by version: the hot paths (a claim, a measurement) know
        the study row's ``updated_at`` from a column they select anyway, and when this
        process already checked the entry at that version neither the config JSON is read
        nor compared. Otherwise ``load()`` reads the stored ``(config, seed)`` and the entry
        is checked (rebuilt if it changed) as by :meth:`study`. A ``PATCH`` in another
        process changes ``updated_at``, so it takes effect here at the next request.

        Raises:
            ValidationError: a stored config the library no longer accepts (-> 422).
        """
        if version is not None:
            with self._lock:
                entry = self._entries.get(study_id)
                if entry is not None and entry.version == version:
                    self._entries.move_to_end(study_id)
                    return entry
        config, seed = load()
        entry = self.study(study_id, config, seed)
        entry.version = version
        return entry

    def config_of(self, study: Study) -> StudyConfig:
        """The parsed config of a study row."""
        return self.study(study.id, study.config, study.seed).config

    def _built(self, study_id: int, config: Mapping[str, Any], seed: int, slot: str,
               build: Callable[[CachedStudy], Strategy]) -> CachedStrategy:
        entry = self.study(study_id, config, seed)
        with self._lock:
            held = getattr(entry, slot)
            if held is None:
                held = CachedStrategy(build(entry))
                setattr(entry, slot, held)
            return held

    def strategy(self, study_id: int, config: Mapping[str, Any], seed: int) -> CachedStrategy:
        """The study's own strategy (proposals and its recommendation)."""
        return self._built(study_id, config, seed, "strategy",
                           lambda e: e.config.make_strategy(e.seed))

    def surrogate_model(self, study_id: int, config: Mapping[str, Any], seed: int
                        ) -> CachedStrategy:
        """The model behind ``/predict`` and the dashboard: the study's own strategy when it
        has a surrogate (``mfms-bo`` and its single-size baselines: its options, and the
        very fit its recommendation comes from, so the two never disagree); for a strategy
        without one (random, hyperband, screen, ...) an MFMS-BO with default options,
        which ``/predict`` names in its answer."""
        own = self.strategy(study_id, config, seed)
        if isinstance(own.strategy, MFMSBO):
            return own
        return self._built(study_id, config, seed, "surrogate",
                           lambda e: MFMSBO(e.config.space, seed=e.seed))
