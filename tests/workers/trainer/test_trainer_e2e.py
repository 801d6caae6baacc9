"""The torch backend end to end: a server, a worker agent, real training on the example
corpus at the tiniest presets on CPU - losses fall and every domain is reported at every
checkpoint."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from mfms_client.client import MFMSClient
from server import migrate
from server.app import create_app
from server.config import Settings
from workers.agent import WorkerAgent
from workers.backends.torch_backend import TorchBackend


def test_torch_worker_trains_a_study(tmp_path: Path, example_dir: Path,
                                     three_domains: list[str]) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    migrate.upgrade(url)
    app = create_app(Settings(database_url=url, background=False, next_trial_wait_seconds=1))
    with TestClient(app) as http:
        api = MFMSClient(http=http)
        study = api.create_study(name="torch", domains=three_domains,
                                 model_sizes=[1e5, 2e6], steps={"min": 40, "max": 80},
                                 target={"model_size": 2e7}, checkpoints=3,
                                 strategy={"name": "random"}, budget={"trials": 2}, seed=0)
        backend = TorchBackend(example_dir, device="cpu", batch_size=4, seq_len=64,
                               eval_tokens=1024, progress=False)
        agent = WorkerAgent(api, backend, "cpu-worker", study_id=study.id, poll_min=0.01,
                            poll_max=0.05, echo=lambda _: None)
        assert agent.run() == 2
        for t in api.list_trials(study.id):
            assert t.state == "completed" and t.cost and t.cost > 0
            assert [m.step for m in t.measurements] == t.checkpoints
            assert all(set(m.losses) == set(three_domains) for m in t.measurements)
            first, last = t.measurements[0].losses, t.measurements[-1].losses
            assert all(last[d] < first[d] for d in three_domains), (first, last)
        assert api.get_study(study.id).state == "completed"
        assert api.recommendation(study.id).mixture
