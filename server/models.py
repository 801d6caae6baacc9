"""ORM tables: studies, trials, measurements, workers.

Rows never leave :mod:`server.storage`; it converts them to the library's frozen
``TrialSpec`` / ``TrialResult`` and to API schemas. JSON columns hold what varies with the
study (domain names are data, not columns), so one schema serves any number of domains.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from server.db import utcnow

__all__ = ["Base", "Study", "Trial", "Measurement", "Worker", "StudyState", "TrialState"]


class StudyState(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    COMPLETED = "completed"

    def is_finished(self) -> bool:
        return self in (StudyState.STOPPED, StudyState.COMPLETED)


class TrialState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    ABANDONED = "abandoned"
    CANCELLED = "cancelled"  # queued when its study was stopped; never ran

    def is_finished(self) -> bool:
        return self not in (TrialState.QUEUED, TrialState.RUNNING)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default=StudyState.RUNNING.value)
    seed: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    # Per-study proposer lock: at most one process fits the GP and queues proposals at a
    # time; a crashed holder's lock lapses at ``proposer_until``.
    proposer_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    proposer_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # The strategy's latest proposal failed (a random one ran instead): why and when; both
    # cleared by its next success. ``proposal_failures`` counts failures over the study's
    # life. In the database, so every server process reports the same.
    last_proposal_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_proposal_error_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    proposal_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Why the study is paused when the service paused it (a run of trials that all failed
    # before reporting a loss); cleared by any state change a person makes.
    pause_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    paused_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    trials: Mapped[list[Trial]] = relationship(back_populates="study",
                                               cascade="all, delete-orphan")


class Trial(Base):
    __tablename__ = "trials"
    __table_args__ = (
        Index("ix_trials_claim", "state", "priority", "id"),
        Index("ix_trials_study_state", "study_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default=TrialState.QUEUED.value)
    # Where the spec came from: "strategy", "user" (enqueued by hand) or "import" (posted
    # with its results). User trials are claimed before the strategy's.
    source: Mapped[str] = mapped_column(String(16), default="strategy")
    priority: Mapped[int] = mapped_column(Integer, default=1)
    mixture: Mapped[dict[str, Any]] = mapped_column(JSON)
    model_size: Mapped[float] = mapped_column(Float)
    steps: Mapped[int] = mapped_column(BigInteger)
    checkpoints: Mapped[list[Any]] = mapped_column(JSON)
    spec_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    retry_of: Mapped[int | None] = mapped_column(ForeignKey("trials.id"), nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    cost: Mapped[float | None] = mapped_column(Float, nullable=True)
    fail_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # An online-mixed run's summary ({"final_proportions": ..., "average_proportions": ...}):
    # the mixture a trial *ran* can differ from the one it was proposed with.
    online_result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    study: Mapped[Study] = relationship(back_populates="trials")
    measurements: Mapped[list[Measurement]] = relationship(
        back_populates="trial", cascade="all, delete-orphan", order_by="Measurement.step")


class Measurement(Base):
    __tablename__ = "measurements"
    __table_args__ = (UniqueConstraint("trial_id", "step", name="uq_measurements_trial_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"),
                                          index=True)
    step: Mapped[int] = mapped_column(BigInteger)
    losses: Mapped[dict[str, Any]] = mapped_column(JSON)
    objective: Mapped[float | None] = mapped_column(Float, nullable=True)
    cost: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # The mixture the run trained on at this step, when it mixes online.
    proportions: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    trial: Mapped[Trial] = relationship(back_populates="measurements")


class Worker(Base):
    """Workers seen by ``/next-trial``: sizes the proposal queue and feeds the dashboard."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    capabilities: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    first_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
