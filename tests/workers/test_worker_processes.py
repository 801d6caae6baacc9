"""Real processes: a server and two ``mfms worker`` subprocesses finish a study; one worker
is killed with SIGKILL mid-trial and its trial is recovered by the other after the lease."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx

from mfms_bo.bench.harness import load_problem
from mfms_cli.demo import study_of_problem
from mfms_client.client import MFMSClient
from tests.polling import wait_until

LEASE = 3.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_killed_worker_trial_is_recovered(tmp_path) -> None:
    port = _port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MFMS_DATABASE_URL": f"sqlite:///{tmp_path}/e2e.db",
           "MFMS_LEASE_SECONDS": str(LEASE), "MFMS_MAINTENANCE_INTERVAL_SECONDS": "0.5"}
    env.pop("MFMS_API_TOKEN", None)
    mfms = [sys.executable, "-m", "mfms_cli"]
    server = subprocess.Popen([*mfms, "serve", "--port", str(port), "--upgrade",
                               "--log-level", "warning"], env=env, stderr=subprocess.DEVNULL)
    workers: list[subprocess.Popen] = []
    try:
        def up() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, 60, "the server", interval=0.2)
        api = MFMSClient(url)
        study = api.create_study(study_of_problem(load_problem("sim-k3"), "e2e", "random", 0,
                                                  {"trials": 3}))

        def worker(name: str) -> subprocess.Popen:
            # random runs 400M x 20000 steps (cost ~3.7): ~0.25 s per checkpoint
            return subprocess.Popen(
                [*mfms, "worker", "--server", url, "--study", str(study.id), "--backend",
                 "simulate", "--problem", "sim-k3", "--time-per-cost", "0.5",
                 "--worker-id", name, "--poll-max", "1"], env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)

        workers.append(worker("doomed"))
        victim = wait_until(lambda: next((t for t in api.list_trials(study.id)
                                          if t.worker_id == "doomed" and t.state == "running"
                                          and t.measurements), None), 60, "a reported checkpoint",
                           interval=0.2)
        os.kill(workers[0].pid, signal.SIGKILL)
        workers[0].wait()
        workers.append(worker("rescuer"))
        wait_until(lambda: api.get_study(study.id).state == "completed", 120,
                   "the study to finish", interval=0.2)
        trials = {t.id: t for t in api.list_trials(study.id)}
        lost = trials[victim.id]
        assert lost.state == "abandoned" and len(lost.measurements) >= 1  # partial curve kept
        retry = next(t for t in trials.values() if t.retry_of == victim.id)
        assert retry.state == "completed" and retry.worker_id == "rescuer"
        assert retry.attempt == 2 and retry.mixture == lost.mixture
        done = [t for t in trials.values() if t.state == "completed"]
        assert len(done) == 3 and all(len(t.measurements) == len(t.checkpoints) for t in done)
    finally:
        for p in workers:
            if p.poll() is None:
                p.terminate()
                p.wait(30)
        server.terminate()
        server.wait(30)
