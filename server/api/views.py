"""ORM rows -> response schemas (the only place rows meet the API's shapes)."""

from __future__ import annotations

from mfms_bo.study import StudyConfig
from mfms_client.schemas import MeasurementPublic, StudyPublic, TrialAssignment, TrialPublic
from server.config import Settings
from server.models import Measurement, Study, Trial
from server.storage import final_objective_of

__all__ = ["study_public", "trial_public", "measurement_public", "assignment"]


def study_public(study: Study, counts: dict[str, int], cost: float, trials_run: int
                 ) -> StudyPublic:
    return StudyPublic(id=study.id, name=study.name, state=study.state,
                       config={**study.config, "seed": study.seed}, created_at=study.created_at,
                       counts=counts, cost_spent=cost, trials_run=trials_run,
                       last_proposal_error=study.last_proposal_error,
                       last_proposal_error_at=study.last_proposal_error_at,
                       proposal_failures=study.proposal_failures or 0,
                       pause_reason=study.pause_reason, paused_at=study.paused_at)


def trial_public(trial: Trial) -> TrialPublic:
    return TrialPublic(
        id=trial.id, study_id=trial.study_id, state=trial.state, source=trial.source,
        mixture=trial.mixture, model_size=trial.model_size, steps=trial.steps,
        checkpoints=list(trial.checkpoints), attempt=trial.attempt, retry_of=trial.retry_of,
        worker_id=trial.worker_id, created_at=trial.created_at, started_at=trial.started_at,
        finished_at=trial.finished_at, lease_expires_at=trial.lease_expires_at,
        cost=trial.cost, fail_reason=trial.fail_reason, objective=final_objective_of(trial),
        metadata=dict(trial.spec_metadata or {}),
        measurements=[measurement_public(m) for m in trial.measurements],
        online_result=trial.online_result)


def measurement_public(m: Measurement) -> MeasurementPublic:
    return MeasurementPublic(step=m.step, losses=m.losses, objective=m.objective, cost=m.cost,
                             created_at=m.created_at, proportions=m.proportions)


def assignment(trial: Trial, settings: Settings, config: StudyConfig) -> TrialAssignment:
    """A claimed trial as its worker gets it; its in-run mixing spec is its own override
    (enqueued with the trial, kept across retries in its metadata), else its study's."""
    assert trial.lease_expires_at is not None
    override = (trial.spec_metadata or {}).get("online")
    return TrialAssignment(
        trial_id=trial.id, study_id=trial.study_id, mixture=trial.mixture,
        model_size=trial.model_size, steps=trial.steps, checkpoints=list(trial.checkpoints),
        lease_seconds=settings.lease_seconds, lease_expires_at=trial.lease_expires_at,
        attempt=trial.attempt, loss_domains=list(config.space.reported_domains),
        online=override if override is not None else config.online)
