"""Keeps each running study's queue of proposals topped up.

A proposal is computed in three steps so that no database transaction stays open while the
GP fits: (1) a short transaction checks the study and its budget and takes the study's
proposer lock (a row in ``studies``, so it holds across server processes and lapses if its
holder dies); (2) the strategy proposes from the history, outside any transaction; (3) a
short transaction queues the proposals and releases the lock - only if it is still held.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mfms_bo.strategies import RandomSearch, Strategy
from mfms_bo.trials import TrialSpec
from server import storage
from server.config import Settings
from server.db import Database, utcnow
from server.models import StudyState, TrialState
from server.study_cache import StudyCache

if TYPE_CHECKING:
    from server.observability import Metrics

__all__ = ["Proposer", "TopUp"]

log = logging.getLogger("mfms.proposer")


@dataclass(frozen=True)
class _Proposed:
    """What ``_propose`` returns: the specs, and how the strategy did. ``error`` is its
    exception when it failed (``specs`` are then random); ``recorded`` is False when there
    is nothing to note on the study (the strategy had no proposal for the worker's size)."""

    specs: list[TrialSpec]
    error: str | None = None
    recorded: bool = True


@dataclass(frozen=True)
class TopUp:
    """Outcome of one top-up: how many trials were queued; ``busy`` when another process
    holds the study's proposer lock (its proposals are on their way)."""

    made: int
    busy: bool = False


class Proposer:
    def __init__(self, db: Database, settings: Settings, strategies: StudyCache,
                 metrics: Metrics | None = None) -> None:
        self.db = db
        self.settings = settings
        self.strategies = strategies
        self.metrics = metrics
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # study -> lock token this process failed to release (the database was down then);
        # released on the study's next top-up rather than left to lapse.
        self._unreleased: dict[int, str] = {}

    def top_up(self, study_id: int, *, want: int, max_model_size: float | None = None
               ) -> TopUp:
        """Queue up to ``want`` new proposals for the study (fewer when its budget is
        nearly spent); 0 when the study is not running or has nothing left to propose."""
        if want <= 0:
            return TopUp(0)
        self._retry_release(study_id)
        now = utcnow()
        with self.db.session() as s:
            study = storage.get_study(s, study_id)
            if study.state != StudyState.RUNNING.value:
                return TopUp(0)
            want = min(want, self._budget_room(s, study))
            if want <= 0:
                self._complete_if_done(s, study_id)
                return TopUp(0)
            # One token per call: two threads of this process must exclude each other too.
            holder = f"{self.holder[:80]}:{uuid.uuid4().hex[:8]}"
            if not storage.acquire_proposer(s, study_id=study_id, holder=holder, now=now,
                                            seconds=self.settings.proposal_lock_seconds):
                return TopUp(0, busy=True)
            config, seed = dict(study.config), int(study.seed)
        try:
            with self.db.session() as s:
                history, pending = storage.history_of(s, study_id)
            t0 = time.perf_counter()
            with self._renewing(study_id, holder):
                proposed = self._propose(study_id, config, seed, history, pending, want,
                                         max_model_size)
            specs = proposed.specs
            with self.db.session() as s:
                if proposed.recorded:  # on the study, so every server process shows it
                    storage.record_proposal(s, study_id=study_id, error=proposed.error,
                                            now=utcnow())
                # Re-check the budget under the lock: trials may have been enqueued by hand
                # while the strategy worked.
                room = self._budget_room(s, storage.get_study(s, study_id))
                rows = storage.insert_proposals(s, study_id=study_id, specs=specs[:max(room, 0)],
                                                holder=holder, now=utcnow())
                if not specs and not pending and max_model_size is None:
                    # The strategy has nothing left (e.g. a pool tried at every fidelity).
                    self._complete_if_done(s, study_id, nothing_left=True)
            if specs:
                log.info("study %d: queued %d proposal(s) in %.2f s", study_id, len(rows),
                         time.perf_counter() - t0)
            return TopUp(len(rows))
        except BaseException:
            try:
                with self.db.session() as s:
                    storage.release_proposer(s, study_id=study_id, holder=holder)
            except Exception:
                self._unreleased[study_id] = holder
                log.warning("study %d: could not release the proposer lock; retrying at the "
                            "next top-up", study_id)
            raise

    @contextlib.contextmanager
    def _renewing(self, study_id: int, holder: str) -> Iterator[None]:
        """Keep the proposer lock alive while the strategy works. The lock's lease is
        short, so a server killed mid-proposal blocks its study's proposals for at most
        ``proposal_lock_seconds``; a live holder renews it every third of that, however
        long its GP fit takes."""
        seconds = self.settings.proposal_lock_seconds
        done = threading.Event()

        def renew() -> None:
            while not done.wait(seconds / 3.0):
                try:
                    with self.db.session() as s:
                        if not storage.renew_proposer(s, study_id=study_id, holder=holder,
                                                      now=utcnow(), seconds=seconds):
                            return  # lost it: insert_proposals will refuse our batch
                except Exception:  # database down: try again next period
                    log.warning("study %d: could not renew the proposer lock", study_id)

        thread = threading.Thread(target=renew, name=f"proposer-lock-{study_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _retry_release(self, study_id: int) -> None:
        """Release the lock a failed top-up of this process left behind (a database outage
        mid-proposal), so the study does not wait ``proposal_lock_seconds`` for it."""
        holder = self._unreleased.pop(study_id, None)
        if holder is None:
            return
        try:
            with self.db.session() as s:
                storage.release_proposer(s, study_id=study_id, holder=holder)
        except Exception:
            self._unreleased.setdefault(study_id, holder)
            raise

    def _propose(self, study_id: int, config: dict, seed: int, history, pending,
                 want: int, max_model_size: float | None) -> _Proposed:
        entry = self.strategies.strategy(study_id, config, seed)
        with entry.lock:
            strategy = entry.strategy
            t0 = time.perf_counter()
            try:
                proposal = strategy.proposal(history, pending, want, max_model_size)
            except ValueError as exc:  # the worker cannot run any size this study uses
                self._observe(strategy, t0, failure="capability")
                log.info("study %d: no proposal for max_model_size=%s: %s", study_id,
                         max_model_size, exc)
                return _Proposed([], recorded=False)
            except Exception as exc:
                self._observe(strategy, t0, failure="error")
                # A numerical failure of the surrogate must not stall the workers: run a
                # random trial this time and say so; the next proposal tries the GP again.
                log.exception("study %d: strategy failed; proposing at random instead",
                              study_id)
                fallback = RandomSearch(self.strategies.study(study_id, config, seed)
                                        .config.space, seed=seed)
                return _Proposed(fallback.propose(history, pending, want, max_model_size),
                                 error=f"{type(exc).__name__}: {exc}")
            self._observe(strategy, t0, fits=proposal.fits, proposed=len(proposal.specs))
            return _Proposed(proposal.specs)

    def _observe(self, strategy: Strategy, t0: float, **outcome: Any) -> None:
        if self.metrics is not None:
            self.metrics.observe_propose(strategy, time.perf_counter() - t0, **outcome)

    def _budget_room(self, s, study) -> int:
        """How many more trials the study's budget allows (a large number when unlimited)."""
        return storage.budget_room(s, study.id, self.strategies.config_of(study),
                                   self.settings.queue_max)

    def finish_if_done(self, study_id: int) -> bool:
        """Mark a running study completed once its budget is spent and nothing is in flight."""
        with self.db.session() as s:
            # Unlocked pre-check: most calls find work in flight, and must not serialise
            # every /complete on the study row.
            study = storage.get_study(s, study_id)
            if (study.state != StudyState.RUNNING.value
                    or not self.strategies.config_of(study).has_budget):
                return False
            counts = storage.study_counts(s, [study_id])[study_id]
            if counts[TrialState.QUEUED.value] or counts[TrialState.RUNNING.value]:
                return False
        with self.db.session() as s:
            return self._complete_if_done(s, study_id)

    def _complete_if_done(self, s, study_id: int, nothing_left: bool = False
                          ) -> bool:
        study = storage.get_study(s, study_id, lock=True)
        if study.state != StudyState.RUNNING.value:
            return False
        counts = storage.study_counts(s, [study_id])[study_id]
        if counts[TrialState.QUEUED.value] or counts[TrialState.RUNNING.value]:
            return False
        exhausted = (self._budget_room(s, study) <= 0
                     and self.strategies.config_of(study).has_budget)
        if exhausted or nothing_left:
            study.state = StudyState.COMPLETED.value
            log.info("study %d completed (budget spent or nothing left to propose)", study_id)
            return True
        return False
