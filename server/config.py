"""One place for the service's configuration: environment variables prefixed ``MFMS_``.

Every knob has a default that works on a laptop (a SQLite file in the working directory, no
token); deployments set ``MFMS_DATABASE_URL`` to PostgreSQL, ``MFMS_ADMIN_TOKEN`` and
``MFMS_WORKER_TOKEN`` (``MFMS_API_TOKEN``, the older name, is the admin token).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "normalize_database_url"]


def normalize_database_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs (SQLAlchemy would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class Settings(BaseSettings):
    """Service settings; build one per process (``Settings()`` reads the environment)."""

    model_config = SettingsConfigDict(env_prefix="MFMS_", extra="ignore")

    database_url: str = Field("sqlite:///./mfms.db",
                              description="SQLAlchemy URL; postgresql://... for deployments")
    admin_token: SecretStr | None = Field(
        None, description="bearer token for every route (studies, imports, deletes...)")
    worker_token: SecretStr | None = Field(
        None, description="bearer token for the worker protocol only (/next-trial, "
                          "heartbeat, measurements, complete, fail) and reads")
    api_token: SecretStr | None = Field(
        None, description="legacy name: the admin token when MFMS_ADMIN_TOKEN is unset")
    protect_reads: bool = Field(False, description="also require a token for reads")
    auto_upgrade: bool = Field(False, description="run Alembic migrations at server start")
    lease_seconds: float = Field(300.0, gt=0, le=7 * 86400,
                                 description="a running trial without heartbeat this long is "
                                             "abandoned and re-queued")
    max_attempts: int = Field(3, ge=1, le=100,
                              description="runs of one trial spec before it stays abandoned")
    pause_after_failures: int = Field(
        3, ge=0, le=10_000,
        description="pause a study once this many of its trials in a row failed before "
                    "reporting any loss (a misconfigured worker), with the reason on the "
                    "study; 0 never pauses; a study's own pause_after_failures overrides it")
    queue_min: int = Field(1, ge=0, le=1024,
                           description="proposals kept queued per running study, so a "
                                       "worker finishing a trial is not kept waiting")
    queue_max: int = Field(16, ge=1, le=1024,
                           description="most proposals queued per study at once")
    proposal_lock_seconds: float = Field(
        30.0, gt=0, description="a study's proposer lock is renewed every third of this "
                                "while its holder works, and lapses after it when the "
                                "holder died (a killed server)")
    next_trial_wait_seconds: float = Field(
        5.0, ge=0, le=120, description="how long /next-trial waits for another process's "
                                       "proposal before answering 204")
    background: bool = Field(True, description="run the lease reaper and queue top-up thread")
    maintenance_interval_seconds: float = Field(2.0, gt=0)
    worker_idle_window_seconds: float = Field(
        120.0, gt=0, description="workers seen this recently count when sizing the queue")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="largest accepted request body")
    max_import_bytes: int = Field(
        100_000_000, ge=1024, description="largest accepted body of POST /studies/import: a "
                                          "study export, ~2 kB per trial of 8 checkpoints")
    body_read_timeout_seconds: float = Field(
        30.0, gt=0, le=3600, description="a request body not received in full this long "
                                         "after the server starts reading it is a 408")
    worker_fast_path: bool = Field(
        True, description="serve /next-trial, measurements and /complete without FastAPI's "
                          "per-request layers (same answers; off only to compare)")
    pool_size: int = Field(20, ge=1, description="PostgreSQL connection pool size")
    database_timeout_seconds: float = Field(
        5.0, gt=0, le=600, description="longest a request waits on the database (connect, "
                                       "pool checkout, each statement and round trip; "
                                       "SQLite's busy timeout) before answering 503")
    log_format: Literal["text", "json"] = Field(
        "text", description="server logs: text lines, or one JSON object per line")

    @field_validator("database_url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = normalize_database_url(v.strip())
        if not (v.startswith("sqlite") or v.startswith("postgresql")):
            raise ValueError("MFMS_DATABASE_URL: only sqlite:/// and postgresql:// are supported")
        return v

    @property
    def token(self) -> str | None:
        """The admin token: ``MFMS_ADMIN_TOKEN``, else the legacy ``MFMS_API_TOKEN``."""
        secret = self.admin_token or self.api_token
        return secret.get_secret_value() if secret else None

    @property
    def worker_secret(self) -> str | None:
        return self.worker_token.get_secret_value() if self.worker_token else None
