"""Workers get only trials they can run, and a broken worker neither spends a study's budget
nor keeps failing: matching on domains, backend and labels in ``/next-trial``, a study's
own pause threshold, and real ``mfms worker`` processes for both misconfigurations a new
user meets first (a command that cannot run; a simulator without the study's domains)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mfms_bo.bench.harness import load_problem
from mfms_cli.demo import study_of_problem
from mfms_client.client import ConflictError, InvalidRequestError, MFMSClient
from tests.server.conftest import LiveServer, fake_losses, make_settings, study_body

DOMAINS = ["code", "web", "books"]


def _fail(api: MFMSClient, study_id: int, worker: str = "w") -> None:
    t = api.next_trial(worker, study_id=study_id)
    assert t is not None
    api.fail_trial(t.trial_id, "boom", worker_id=worker)


def test_a_study_requiring_a_backend_and_labels_goes_only_to_workers_that_declare_them(
        api: MFMSClient) -> None:
    study = api.create_study(study_body(
        strategy={"name": "random"}, requires={"backend": "torch", "labels": ["a100"]}))
    assert study.config["requires"] == {"backend": "torch", "labels": ["a100"]}
    assert api.next_trial("sim", domains=DOMAINS, backend="simulate", labels=["a100"]) is None
    assert api.next_trial("bare", domains=DOMAINS) is None  # declares no backend
    assert api.next_trial("nolabel", domains=DOMAINS, backend="torch") is None
    t = api.next_trial("gpu", domains=DOMAINS, backend="torch", labels=["a100", "fast"])
    assert t is not None and t.study_id == study.id


def test_a_worker_pinned_to_a_study_it_cannot_run_is_told_why(api: MFMSClient) -> None:
    study = api.create_study(study_body(strategy={"name": "random"},
                                        requires={"backend": "torch"}))
    with pytest.raises(ConflictError) as e:
        api.next_trial("sim", study_id=study.id, domains=DOMAINS, backend="simulate")
    assert f"cannot run study {study.id}" in e.value.detail
    assert "requires backend 'torch'" in e.value.detail
    with pytest.raises(ConflictError) as e:
        api.next_trial("gpu", study_id=study.id, domains=["code", "web"], backend="torch")
    assert "lack the study's ['books']" in e.value.detail
    assert api.next_trial("gpu", study_id=study.id, domains=DOMAINS, backend="torch")


def test_exact_domains_keep_a_simulator_off_a_study_of_a_subset(api: MFMSClient) -> None:
    study = api.create_study(study_body(strategy={"name": "random"}))
    more = [*DOMAINS, "math"]
    assert api.next_trial("sim", domains=more, exact_domains=True) is None
    t = api.next_trial("data", domains=more)  # a data folder with more domains: fine
    assert t is not None and t.study_id == study.id


@pytest.mark.parametrize("requires", [{"labels": ["<b>"]}, {"backend": ""},
                                      {"labels": "a100"}, {"gpu": "a100"}])
def test_bad_requirements_are_refused_by_field(api: MFMSClient, requires) -> None:
    with pytest.raises(InvalidRequestError) as e:
        api.create_study(study_body(requires=requires))
    assert "requires" in e.value.detail


def test_a_study_sets_its_own_pause_threshold_and_patch_changes_it(api: MFMSClient) -> None:
    study = api.create_study(study_body(strategy={"name": "random"}, pause_after_failures=1,
                                        budget={"trials": 4}))
    _fail(api, study.id)
    paused = api.get_study(study.id)
    assert paused.state == "paused" and "the last 1 trials failed" in paused.pause_reason
    changed = api.update_study(study.id, {"pause_after_failures": 0})
    assert changed.config["pause_after_failures"] == 0
    assert changed.config["budget"] == {"trials": 4, "cost": None}  # untouched
    api.resume_study(study.id)
    for _ in range(4):
        _fail(api, study.id)
    after = api.get_study(study.id)
    assert after.state == "running" and after.trials_run == 0
    with pytest.raises(InvalidRequestError) as e:
        api.update_study(study.id, {})
    assert "at least one of budget, pause_after_failures" in e.value.detail


def test_the_server_default_pauses_after_three(api: MFMSClient) -> None:
    study = api.create_study(study_body(strategy={"name": "random"}))
    for _ in range(2):
        _fail(api, study.id)
    assert api.get_study(study.id).state == "running"
    _fail(api, study.id)
    assert api.get_study(study.id).state == "paused"


# -- real `mfms worker` processes ------------------------------------------------------------
def _mfms(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFMS_")}
    return subprocess.run([sys.executable, "-m", "mfms_cli", *args], env=env, timeout=timeout,
                          capture_output=True, text=True)


@pytest.fixture
def live(tmp_path):
    url = f"sqlite:///{tmp_path}/live.db"
    with LiveServer(make_settings(url, auto_upgrade=True, next_trial_wait_seconds=5.0)) as srv:
        yield srv


def test_a_command_worker_that_cannot_run_pauses_the_study_with_its_budget_intact(
        live: LiveServer, tmp_path) -> None:
    """The issue's acceptance: ``mfms worker --backend command --command false``."""
    with MFMSClient(live.url) as api:
        study = api.create_study(study_body(strategy={"name": "random"},
                                            budget={"trials": 5}))
        run = _mfms("worker", "--server", live.url, "--study", str(study.id), "--backend",
                    "command", "--command", "false", "--work-dir", str(tmp_path / "trials"),
                    "--poll-max", "0.2")
        assert run.returncode == 1, run.stdout + run.stderr
        err = run.stderr.strip().splitlines()
        assert err[-1].startswith("mfms worker: error: 3 trials in a row failed"), err
        after = api.get_study(study.id)
        assert after.state == "paused"
        assert "the last 3 trials failed before reporting any loss" in after.pause_reason
        assert after.trials_run == 0 and after.config["budget"]["trials"] == 5
        assert after.counts["failed"] == 3 and after.counts["completed"] == 0


def test_a_simulate_worker_never_runs_a_study_its_simulator_lacks(live: LiveServer) -> None:
    """Two studies it cannot simulate (other domain names; a subset of its domains) and one
    it can: it runs only the last, says so, and leaves the others untouched."""
    with MFMSClient(live.url) as api:
        other = api.create_study(study_body(strategy={"name": "random"}))
        k3 = api.create_study(study_of_problem(load_problem("sim-k3"), "k3", "random", 0,
                                               {"trials": 2}))
        k5 = api.create_study(study_of_problem(load_problem("sim-k5"), "k5", "random", 0,
                                               {"trials": 2}))
        run = _mfms("worker", "--server", live.url, "--backend", "simulate", "--problem",
                    "sim-k5", "--once", "--poll-max", "0.2")
        assert run.returncode == 0, run.stdout + run.stderr
        assert "for any study it matches (backend simulate, domains d0,d1,d2,d3,d4)" \
            in run.stdout
        assert f"taking trials of study {k5.id} 'k5'" in run.stdout
        assert "2 trial(s) completed" in run.stdout
        for sid in (other.id, k3.id):
            st = api.get_study(sid)
            assert sum(st.counts.values()) == 0 or st.counts["running"] == st.counts[
                "completed"] == st.counts["failed"] == 0
        assert api.get_study(k5.id).state == "completed"


def test_a_worker_pinned_to_a_study_it_cannot_run_exits_with_one_line(
        live: LiveServer) -> None:
    with MFMSClient(live.url) as api:
        study = api.create_study(study_body(strategy={"name": "random"}))
    run = _mfms("worker", "--server", live.url, "--study", str(study.id), "--backend",
                "simulate", "--problem", "sim-k3")
    assert run.returncode == 1
    err = run.stderr.strip().splitlines()
    assert len(err) == 1 and f"cannot run study {study.id}" in err[0], err
    assert "lack the study's ['code', 'web', 'books']" in err[0]


def test_a_refused_measurement_fails_the_trial_and_the_worker_goes_on(api: MFMSClient
                                                                      ) -> None:
    """A measurement the server refuses (422: a domain the study lacks) or a NaN used to
    take the worker down with the trial left to its lease; now the trial fails with the
    reason and the next one runs."""
    from workers.agent import WorkerAgent

    api.create_study(study_body(strategy={"name": "random"}, budget={"trials": 2},
                                pause_after_failures=0))
    calls: list[int] = []

    class Flaky:
        name = "flaky"
        domains = None

        def run(self, trial, report):
            calls.append(trial.trial_id)
            for step in trial.checkpoints:
                losses = fake_losses(trial.mixture, step)
                if len(calls) == 1:
                    losses["nope"] = 2.0
                elif len(calls) == 2:
                    losses["code"] = float("nan")
                report(step, losses, 1.0)
            return 1.0

    agent = WorkerAgent(api, Flaky(), "w1", once=True, poll_min=0.01, poll_max=0.01)
    agent.run()
    first, second = api.get_trial(calls[0]), api.get_trial(calls[1])
    assert first.state == "failed" and "refused the measurement at step" in first.fail_reason
    assert "nope" in first.fail_reason
    assert second.state == "failed" and "non-finite loss(es) {'code': nan}" in \
        second.fail_reason
    assert agent.trials_done == 2 and agent.gave_up is None
