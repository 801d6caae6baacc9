"""ORM rows -> response schemas (the only place rows meet the API's shapes)."""

from __future__ import annotations

from server.config import Settings
from server.models import Study, Trial
from server.schemas import MeasurementPublic, StudyPublic, TrialAssignment, TrialPublic
from server.storage import final_objective_of
from server.study_space import search_space_of_config

__all__ = ["study_public", "trial_public", "assignment"]


def study_public(study: Study, counts: dict[str, int], cost: float, trials_run: int
                 ) -> StudyPublic:
    return StudyPublic(id=study.id, name=study.name, state=study.state,
                       config={**study.config, "seed": study.seed}, created_at=study.created_at,
                       counts=counts, cost_spent=cost, trials_run=trials_run)


def trial_public(trial: Trial) -> TrialPublic:
    return TrialPublic(
        id=trial.id, study_id=trial.study_id, state=trial.state, source=trial.source,
        mixture=trial.mixture, model_size=trial.model_size, steps=trial.steps,
        checkpoints=list(trial.checkpoints), attempt=trial.attempt, retry_of=trial.retry_of,
        worker_id=trial.worker_id, created_at=trial.created_at, started_at=trial.started_at,
        finished_at=trial.finished_at, lease_expires_at=trial.lease_expires_at,
        cost=trial.cost, fail_reason=trial.fail_reason, objective=final_objective_of(trial),
        metadata=dict(trial.spec_metadata or {}),
        measurements=[MeasurementPublic(step=m.step, losses=m.losses, objective=m.objective,
                                        cost=m.cost, created_at=m.created_at)
                      for m in trial.measurements])


def assignment(trial: Trial, settings: Settings) -> TrialAssignment:
    space = search_space_of_config(trial.study.config)
    assert trial.lease_expires_at is not None
    return TrialAssignment(
        trial_id=trial.id, study_id=trial.study_id, mixture=trial.mixture,
        model_size=trial.model_size, steps=trial.steps, checkpoints=list(trial.checkpoints),
        lease_seconds=settings.lease_seconds, lease_expires_at=trial.lease_expires_at,
        attempt=trial.attempt, loss_domains=list(space.reported_domains))
