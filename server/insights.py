"""What the surrogate believes: the recommendation and predictions at any fidelity.

Both fit (or reuse) a GP, so the recommendation is kept in the study's cache entry with the
state of the data it was made from; the cache is only for speed - it is rebuilt from the
database after a restart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from mfms_bo.errors import ValidationError
from mfms_bo.space import FidelitySpace, SearchSpace
from mfms_bo.trials import TrialResult
from mfms_client.schemas import Prediction, PredictRequest, PredictResponse, RecommendationPublic
from server import storage
from server.db import Database
from server.errors import Conflict, NotFound
from server.study_cache import StudyCache

__all__ = ["Insights"]

def _data_key(history: list[TrialResult]) -> tuple:
    return (len(history), sum(len(r.measurements) for r in history),
            sum(r.completed for r in history),
            sum(m.step for r in history for m in r.measurements))


class Insights:
    def __init__(self, db: Database, strategies: StudyCache) -> None:
        self.db = db
        self.strategies = strategies

    def _load(self, study_id: int) -> tuple[dict, int, list[TrialResult]]:
        with self.db.session() as s:
            study = storage.get_study(s, study_id)
            history, _ = storage.history_of(s, study_id)
            return dict(study.config), int(study.seed), history

    def recommendation(self, study_id: int) -> RecommendationPublic:
        config, seed, history = self._load(study_id)
        key, study = _data_key(history), self.strategies.study(study_id, config, seed)
        if study.recommendation is not None and study.recommendation[0] == key:
            return study.recommendation[1]
        held = self.strategies.strategy(study_id, config, seed)
        with held.lock:
            rec = held.strategy.recommend(history)
        if rec is None:
            raise NotFound(f"study {study_id} has no recommendation yet: no trial has "
                           "reported losses")
        out = RecommendationPublic(
            study_id=study_id, mixture=rec.mixture, predicted_objective=rec.predicted_objective,
            interval=rec.interval, model_size=rec.model_size, steps=rec.steps,
            strategy=study.config.strategy, trials_used=len(history))
        study.recommendation = (key, out)
        return out

    def last_recommendation(self, study_id: int, config: Mapping[str, Any], seed: int
                            ) -> RecommendationPublic | None:
        """The recommendation :meth:`recommendation` last computed for the study in this
        process (perhaps from fewer trials than it has now; ``trials_used`` says how many),
        or None. Fits nothing and reads no trials, so a page listing every study can show
        it on each poll.

        Raises:
            ValidationError: a stored config the library no longer accepts.
        """
        held = self.strategies.study(study_id, config, seed).recommendation
        return None if held is None else held[1]

    def predict(self, study_id: int, req: PredictRequest) -> PredictResponse:
        config, seed, history = self._load(study_id)
        space = self.strategies.study(study_id, config, seed).config.space
        fid = space.fidelities
        m = float(req.model_size) if req.model_size is not None else fid.target_model_size
        z = int(req.steps) if req.steps is not None else int(fid.target_steps)  # type: ignore
        req_m, req_z = m, z
        W = torch.stack([space.mixtures.validate(w, f"mixtures[{i}]")
                         for i, w in enumerate(req.mixtures)])
        _check_range(space, m, z)  # before the fit: a bad request costs nothing
        entry = self.strategies.surrogate_model(study_id, config, seed)
        strategy = entry.strategy
        name = self.strategies.study(study_id, config, seed).config.strategy
        if strategy.name == name:
            model = f"the study's strategy {name}"
            m, z = _as_modelled(strategy.model_space, fid, name, m, z)  # type: ignore[attr-defined]
        else:
            model = f"mfms-bo with default options (the study's strategy {name} has no surrogate)"
        with entry.lock:
            pred = strategy.predict(history, W, m, z)  # type: ignore[attr-defined]
        if pred is None:
            raise NotFound(f"study {study_id}: too few measurements to fit the surrogate")
        preds = [
            Prediction(mixture=space.mixtures.to_dict(W[i]),
                       predicted_objective=float(pred.mean[i]),
                       interval=(float(pred.lower[i]), float(pred.upper[i])))
            for i in range(W.shape[0])
        ]
        return PredictResponse(model_size=req_m, steps=req_z, predictions=preds, model=model)


def _as_modelled(modelled: SearchSpace, study: FidelitySpace, name: str, model_size: float,
                 steps: int) -> tuple[float, int]:
    """The fidelity a single-size baseline (``mf-bo``, ``sf-bo``) answers a request at: it
    models one size and takes it for the target (that is what its recommendation
    predicts), so the study's target maps to its target and any other size or steps
    outside its range is a 409: answering from another model would disagree with it."""
    fid = modelled.fidelities
    if modelled.fidelities == study:
        return model_size, steps
    if math.isclose(model_size, study.target_model_size) and steps == study.target_steps:
        return fid.target_model_size, int(fid.target_steps)  # type: ignore[arg-type]
    if not any(math.isclose(model_size, s) for s in fid.model_sizes) or not (
            fid.steps_min <= steps <= fid.steps_max):
        raise Conflict(f"the study's strategy {name} models only model size "
                       f"{fid.model_sizes[0]:g} at steps {fid.steps_min}..{fid.steps_max} "
                       f"(it takes that size for the target); a prediction at "
                       f"({model_size:g}, {steps}) needs a multi-fidelity strategy (mfms-bo)")
    return model_size, steps


def _check_range(space: SearchSpace, model_size: float, steps: int) -> None:
    """Predictions far outside what the GP was built for are extrapolation noise: refuse
    sizes below the ladder and anything beyond 100x the largest modelled size or steps."""
    fid: FidelitySpace = space.fidelities
    top_m = max(fid.largest_runnable, fid.target_model_size)
    top_z = max(fid.steps_max, int(fid.target_steps))  # type: ignore[arg-type]
    if not fid.model_sizes[0] <= model_size <= 100 * top_m:
        raise ValidationError(f"model_size: {model_size:g} outside [{fid.model_sizes[0]:g}, "
                              f"{100 * top_m:g}]")
    if not 1 <= steps <= 100 * top_z:
        raise ValidationError(f"steps: {steps} outside [1, {100 * top_z}]")
