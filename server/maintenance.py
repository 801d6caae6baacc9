"""The background thread of a server process: reaps lapsed leases, keeps every running
study's proposal queue topped up, and completes studies whose budget is spent.

Every server process runs one; they coordinate only through the database (row locks and
the per-study proposer lock), so any process may die at any time.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import select

from server import storage
from server.config import Settings
from server.db import Database, utcnow
from server.errors import Unavailable
from server.models import Study, StudyState
from server.proposer import Proposer

__all__ = ["Maintainer"]

log = logging.getLogger("mfms.maintenance")


class Maintainer:
    def __init__(self, db: Database, proposer: Proposer, settings: Settings) -> None:
        self.db = db
        self.proposer = proposer
        self.settings = settings
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mfms-maintenance", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Run a pass now (a trial was claimed or finished: the queue may need a top-up)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Unavailable as exc:
                log.warning("maintenance paused: %s", exc)
            except Exception:
                log.exception("maintenance pass failed")
            self._wake.wait(self.settings.maintenance_interval_seconds)
            # Coalesce bursts of wake-ups (every claim and completion wakes us): under load
            # a pass per request would double the database work for nothing.
            self._stop.wait(min(0.25, self.settings.maintenance_interval_seconds))
            self._wake.clear()

    def tick(self) -> None:
        """One pass; also callable directly (tests, single-threaded use)."""
        now = utcnow()
        with self.db.session() as s:
            reaped = storage.reap_expired(s, now=now, max_attempts=self.settings.max_attempts)
        if reaped:
            log.warning("abandoned trial(s) %s: lease expired; re-queued where attempts "
                        "remain", reaped)
            with self.db.session() as s:
                for sid in storage.study_ids_of(s, reaped):
                    reason = storage.pause_after_failures(
                        s, sid, self.settings.pause_after_failures, now)
                    if reason:
                        log.warning("study %d: %s", sid, reason)
        with self.db.session() as s:
            studies = list(s.scalars(select(Study.id).where(
                Study.state == StudyState.RUNNING.value).order_by(Study.id)))
            idle = storage.idle_workers(
                s, since=now - timedelta(seconds=self.settings.worker_idle_window_seconds))
        for sid in studies:
            if self._stop.is_set():
                return
            with self.db.session() as s:
                queued = storage.queued_count(s, sid)
            want = max(self.settings.queue_min, min(self.settings.queue_max, idle)) - queued
            if want > 0:
                self.proposer.top_up(sid, want=want)
            self.proposer.finish_if_done(sid)
