"""The database is the source of truth: a new server process continues a study exactly."""

from __future__ import annotations

from mfms_client.client import MFMSClient
from tests.server.conftest import LiveServer, fake_losses, make_settings, study_body


def _work(api: MFMSClient, study_id: int, n: int) -> list[int]:
    done = []
    for _ in range(n):
        a = api.next_trial("w", study_id=study_id)
        assert a is not None
        for step in a.checkpoints:
            api.post_measurement(a.trial_id, step, fake_losses(a.mixture, step))
        api.complete_trial(a.trial_id, cost=2.0)
        done.append(a.trial_id)
    return done


def test_server_restart_loses_nothing_and_the_study_continues(db_url: str) -> None:
    settings = make_settings(db_url)
    with LiveServer(settings) as srv:
        api = MFMSClient(srv.url)
        s = api.create_study(study_body(seed=5, budget={"trials": 8}))
        first = _work(api, s.id, 5)
        running = api.next_trial("w2", study_id=s.id)  # in flight when the server dies
        api.post_measurement(running.trial_id, running.checkpoints[0],
                             fake_losses(running.mixture, 1))
        before = api.list_trials(s.id)
        rec_before = api.recommendation(s.id)
    with LiveServer(make_settings(db_url)) as srv:  # a brand-new process state
        api = MFMSClient(srv.url)
        after = api.list_trials(s.id)
        assert [t.model_dump() for t in after] == [t.model_dump() for t in before]
        assert api.recommendation(s.id).mixture == rec_before.mixture
        # the in-flight trial carries on under the new server (its worker, w2, reports)
        for step in running.checkpoints[1:]:
            api.post_measurement(running.trial_id, step, fake_losses(running.mixture, step),
                                 worker_id="w2")
        api.complete_trial(running.trial_id, cost=2.0, worker_id="w2")
        more = _work(api, s.id, 2)
        assert api.next_trial("w", study_id=s.id) is None
        study = api.get_study(s.id)
        assert study.state == "completed" and study.counts["completed"] == 8
        assert len(set(first + more + [running.trial_id])) == 8
