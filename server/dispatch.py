"""``/next-trial``: claim queued work, or have it proposed, within a bounded wait.

The fast path is a single transaction (claim a queued trial). When the queue is empty the
asking request proposes a batch itself - sized to the idle workers, so a crowd of workers
arriving together is served by one GP fit - unless another process already holds the
study's proposer lock, in which case it polls the queue until ``next_trial_wait_seconds``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Row, select

from mfms_bo.study import StudyConfig
from mfms_client.schemas import Capabilities
from server import storage
from server.config import Settings
from server.db import Database, utcnow
from server.errors import Conflict, NotFound
from server.models import Study, StudyState
from server.proposer import Proposer
from server.study_cache import StudyCache

__all__ = ["next_trial", "Claim"]


@dataclass(frozen=True)
class Claim:
    """A claimed trial (a row of :data:`storage.CLAIMED_COLUMNS`) and its study's config,
    or the reason there is none."""

    trial: Row | None
    study_state: str | None = None  # for a worker pinned to one study: why no work
    config: StudyConfig | None = None


def next_trial(db: Database, proposer: Proposer, settings: Settings, *, worker_id: str,
               study_id: int | None, capabilities: Capabilities | None = None) -> Claim:
    """A trial for this worker, of ``study_id`` or of any running study it matches.

    Raises:
        Conflict: the worker is pinned to a study it does not match (it could only fail
            or fake its trials), naming what is missing.
    """
    caps_in = capabilities or Capabilities()
    max_model_size = caps_in.max_model_size
    caps = caps_in.model_dump(exclude_defaults=True)
    now = utcnow()
    with db.connection() as conn:  # the fast path: one transaction on a Core connection
        storage.touch_worker(conn, worker_id=worker_id, capabilities=caps, now=now)
        expired = storage.any_expired(conn, now=now)
        if not expired:
            state, configs = _matching_studies(conn, proposer.strategies, caps_in, study_id)
            claim = _claim_in(conn, settings, worker_id, study_id, max_model_size, configs,
                              state)
    if expired:  # rare: the ORM reaper re-queues lapsed trials before this claim
        with db.session() as s:
            storage.reap_expired(s, now=now, max_attempts=settings.max_attempts)
        with db.connection() as conn:
            state, configs = _matching_studies(conn, proposer.strategies, caps_in, study_id)
            claim = _claim_in(conn, settings, worker_id, study_id, max_model_size, configs,
                              state)
    if claim.trial is not None or (claim.study_state not in (None, StudyState.RUNNING.value)):
        return claim
    deadline = time.monotonic() + settings.next_trial_wait_seconds
    while True:
        busy = False
        for sid in _running_studies(db, study_id):
            if sid not in configs:
                continue  # a study this worker cannot run: propose nothing for it
            want = max(1, min(settings.queue_max, _idle(db, settings)))
            result = proposer.top_up(sid, want=want, max_model_size=max_model_size)
            busy |= result.busy
            if result.made:
                claim = _claim(db, settings, worker_id, sid, max_model_size, configs, state)
                if claim.trial is not None:
                    return claim
        claim = _claim(db, settings, worker_id, study_id, max_model_size, configs, state)
        if claim.trial is not None or not busy or time.monotonic() >= deadline:
            return claim
        time.sleep(0.2)


def _matching_studies(conn: Connection, studies: StudyCache, caps: Capabilities,
                      study_id: int | None) -> tuple[str | None, dict[int, StudyConfig]]:
    """The running studies a worker with ``caps`` can run, with their configs, and the
    pinned study's state (None when not pinned). A simulator or a data folder without a
    study's domain, or a worker without the backend or labels the study requires, could
    only fail or fake its trials; matching here keeps it from spending the study's budget.
    A worker pinned to ``study_id`` that does not match gets a 409 naming why.

    Reads only each study's id, state and version (``updated_at``): configs come from the
    per-process cache, re-read only when a study row changed."""
    out: dict[int, StudyConfig] = {}
    state = None
    for sid, st, version in storage.running_studies(conn, study_id):
        if study_id is not None:
            state = st
            if st != StudyState.RUNNING.value:
                continue
        entry = studies.at_version(sid, version,
                                   lambda sid=sid: storage.study_config(conn, sid))
        why = mismatch(entry.config.space, entry.raw, caps)
        if why is None:
            out[sid] = entry.config
        elif study_id is not None:
            raise Conflict(f"this worker cannot run study {sid}: {why}")
    return state, out


def mismatch(space: Any, config: dict[str, Any], caps: Capabilities) -> str | None:
    """Why a worker with ``caps`` cannot run a study (its ``space`` and stored ``config``);
    None when it can."""
    if caps.domains is not None:
        need = list(space.mixtures.domains) + [d for d in space.loss_domains or ()
                                               if d not in space.mixtures.domains]
        missing = [d for d in need if d not in caps.domains]
        if missing:
            return f"its domains {list(caps.domains)} lack the study's {missing}"
        if caps.exact_domains and set(caps.domains) != set(need):
            return (f"its domains {sorted(caps.domains)} are not exactly the study's "
                    f"{sorted(need)}")
    requires = config.get("requires") or {}
    backend = requires.get("backend")
    if backend is not None and caps.backend != backend:
        return (f"the study requires backend {backend!r}, the worker runs "
                f"{caps.backend or 'an undeclared backend'}")
    missing_labels = [x for x in requires.get("labels") or () if x not in (caps.labels or ())]
    if missing_labels:
        return f"the study requires the labels {missing_labels} (mfms worker --label)"
    return None


def _claim(db: Database, settings: Settings, worker_id: str, study_id: int | None,
           max_model_size: float | None, configs: dict[int, StudyConfig],
           state: str | None) -> Claim:
    with db.connection() as conn:
        return _claim_in(conn, settings, worker_id, study_id, max_model_size, configs, state)


def _claim_in(conn: Connection, settings: Settings, worker_id: str, study_id: int | None,
              max_model_size: float | None, configs: dict[int, StudyConfig],
              state: str | None) -> Claim:
    """Claim among the studies in ``configs`` (those the worker matches)."""
    trial = storage.claim_trial(conn, worker_id=worker_id, study_id=study_id,
                                max_model_size=max_model_size, study_ids=configs.keys(),
                                lease_seconds=settings.lease_seconds, now=utcnow())
    return Claim(trial, state, None if trial is None else configs[trial.study_id])


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
