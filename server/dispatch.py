"""``/next-trial``: claim queued work, or have it proposed, within a bounded wait.

The fast path is a single transaction (claim a queued trial). When the queue is empty the
asking request proposes a batch itself - sized to the idle workers, so a crowd of workers
arriving together is served by one GP fit - unless another process already holds the
study's proposer lock, in which case it polls the queue until ``next_trial_wait_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server import storage
from server.config import Settings
from server.db import Database, utcnow
from server.errors import NotFound
from server.models import Study, StudyState, Trial
from server.proposer import Proposer
from server.study_cache import StudyCache

__all__ = ["next_trial", "Claim"]


@dataclass(frozen=True)
class Claim:
    """A claimed trial (detached row) or the reason there is none."""

    trial: Trial | None
    study_state: str | None = None  # for a worker pinned to one study: why no work


def next_trial(db: Database, proposer: Proposer, settings: Settings, *, worker_id: str,
               study_id: int | None, max_model_size: float | None,
               domains: Sequence[str] | None = None) -> Claim:
    caps: dict[str, Any] = {}
    if max_model_size is not None:
        caps["max_model_size"] = max_model_size
    if domains is not None:
        caps["domains"] = list(domains)
    now = utcnow()
    with db.session() as s:  # the fast path: one transaction
        storage.touch_worker(s, worker_id=worker_id, capabilities=caps, now=now)
        storage.reap_expired(s, now=now, max_attempts=settings.max_attempts)
        allowed = _matching_studies(s, proposer.strategies, domains)
        claim = _claim_in(s, settings, worker_id, study_id, max_model_size, allowed)
    if claim.trial is not None or (claim.study_state not in (None, StudyState.RUNNING.value)):
        return claim
    deadline = time.monotonic() + settings.next_trial_wait_seconds
    while True:
        busy = False
        for sid in _running_studies(db, study_id):
            if allowed is not None and sid not in allowed:
                continue  # a study this worker lacks the domains of: propose nothing for it
            want = max(1, min(settings.queue_max, _idle(db, settings)))
            result = proposer.top_up(sid, want=want, max_model_size=max_model_size)
            busy |= result.busy
            if result.made:
                claim = _claim(db, settings, worker_id, sid, max_model_size, allowed)
                if claim.trial is not None:
                    return claim
        claim = _claim(db, settings, worker_id, study_id, max_model_size, allowed)
        if claim.trial is not None or not busy or time.monotonic() >= deadline:
            return claim
        time.sleep(0.2)


def _matching_studies(s: Session, studies: StudyCache, domains: Sequence[str] | None
                      ) -> set[int] | None:
    """Running studies whose domains and loss domains a worker with ``domains`` has (None:
    no restriction). A simulator or a data folder without a study's domain could only fail
    its trials; matching here keeps such a worker from spending the study's budget."""
    if domains is None:
        return None
    have = set(domains)
    out = set()
    for sid, config, seed in s.execute(select(Study.id, Study.config, Study.seed)
                                       .where(Study.state == StudyState.RUNNING.value)):
        space = studies.study(sid, config, seed).config.space
        if set(space.mixtures.domains) | set(space.loss_domains or ()) <= have:
            out.add(sid)
    return out


def _claim(db: Database, settings: Settings, worker_id: str, study_id: int | None,
           max_model_size: float | None, allowed: set[int] | None = None) -> Claim:
    with db.session() as s:
        return _claim_in(s, settings, worker_id, study_id, max_model_size, allowed)


def _claim_in(s: Session, settings: Settings, worker_id: str, study_id: int | None,
              max_model_size: float | None, allowed: set[int] | None = None) -> Claim:
    state = storage.get_study(s, study_id).state if study_id is not None else None
    trial = storage.claim_trial(s, worker_id=worker_id, study_id=study_id,
                                max_model_size=max_model_size, study_ids=allowed,
                                lease_seconds=settings.lease_seconds, now=utcnow())
    return Claim(trial, state)


def _running_studies(db: Database, study_id: int | None) -> list[int]:
    with db.session() as s:
        if study_id is not None:
            state = s.scalar(select(Study.state).where(Study.id == study_id))
            if state is None:
                raise NotFound(f"study {study_id} not found")
            return [study_id] if state == StudyState.RUNNING.value else []
        return list(s.scalars(select(Study.id).where(Study.state == StudyState.RUNNING.value)
                              .order_by(Study.id)))


def _idle(db: Database, settings: Settings) -> int:
    with db.session() as s:
        since = utcnow() - timedelta(seconds=settings.worker_idle_window_seconds)
        return storage.idle_workers(s, since=since)
