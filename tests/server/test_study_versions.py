"""The per-process study cache read by version (``StudyCache.at_version``): the hot paths
do not read or compare a study's config JSON while its row is unchanged, and a change made
through another server process (a ``PATCH``) is picked up at the next request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from mfms_client.client import MFMSClient
from server.app import create_app
from server.study_cache import StudyCache
from tests.server.conftest import fake_losses, make_settings, study_body


def _config(checkpoints: int = 4) -> dict:
    body = study_body(strategy={"name": "random"}, checkpoints=checkpoints)
    return {k: v for k, v in body.items() if k not in ("name", "seed")}


def test_same_version_is_a_hit_without_reading_the_config() -> None:
    cache, loads = StudyCache(), []

    def load() -> tuple[dict, int]:
        loads.append(1)
        return _config(), 0

    first = cache.at_version(1, "v1", load)
    assert cache.at_version(1, "v1", load) is first and len(loads) == 1
    # a new version re-reads; an unchanged config keeps its entry (and its strategy)
    assert cache.at_version(1, "v2", load) is first and len(loads) == 2
    changed = cache.at_version(1, "v3", lambda: (_config(checkpoints=3), 0))
    assert changed is not first and changed.raw["checkpoints"] == 3
    assert cache.at_version(1, "v3", load) is changed and len(loads) == 2


def test_no_version_always_reads() -> None:
    cache, loads = StudyCache(), []

    def load() -> tuple[dict, int]:
        loads.append(1)
        return _config(), 0

    cache.at_version(1, None, load)
    cache.at_version(1, None, load)
    assert len(loads) == 2


@pytest.fixture
def two_servers(db_url: str) -> Iterator[tuple[MFMSClient, MFMSClient]]:
    """Two apps (two server processes' worth of caches) on one database."""
    with TestClient(create_app(make_settings(db_url))) as a, \
            TestClient(create_app(make_settings(db_url))) as b:
        yield MFMSClient(http=a), MFMSClient(http=b)


def test_a_patch_in_one_process_reaches_the_others_cache(two_servers) -> None:
    a, b = two_servers
    sid = a.create_study(study_body(strategy={"name": "random"})).id
    trial = b.next_trial("w", study_id=sid)  # b caches the study at its current version
    step = trial.checkpoints[0]
    b.post_measurement(trial.trial_id, step, fake_losses(trial.mixture, step), worker_id="w")
    cache: StudyCache = b._http.app.state.studies
    assert cache._entries[sid].config.budget_trials is None
    a.update_budget(sid, trials=7)
    step = trial.checkpoints[1]
    b.post_measurement(trial.trial_id, step, fake_losses(trial.mixture, step), worker_id="w")
    assert cache._entries[sid].config.budget_trials == 7
