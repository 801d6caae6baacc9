"""``mfms demo``: the whole system on one machine.

Starts the server in process on a temporary SQLite file, creates a study from a simulated
benchmark problem, runs simulated workers against it over HTTP until the budget is spent,
and prints the recommendation, the cost spent and - because the problem is simulated - how
far the recommended mixture really is from the optimum.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
import time
from pathlib import Path

from mfms_bo.bench.harness import load_problem
from mfms_bo.bench.problem import Problem, config_of_problem
from mfms_client.client import MFMSClient
from server import migrate
from server.app import create_app
from server.config import Settings
from workers.agent import WorkerAgent
from workers.backends.simulate import SimulateBackend

__all__ = ["run_demo", "study_of_problem"]


def study_of_problem(problem: Problem, name: str, strategy: str, seed: int, budget: dict
                     ) -> dict:
    """A ``POST /studies`` body searching a benchmark problem."""
    return {**config_of_problem(problem), "name": name, "budget": budget,
            "strategy": {"name": strategy, "options": {}}, "seed": seed}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(problem_ref: str = "sim-k5", strategy: str = "mfms-bo", workers: int = 2,
             max_trials: int = 40, budget: float | None = None, seed: int = 0,
             database_url: str | None = None) -> int:
    # The demo prints a line per trial itself; the in-process server's access log (one line
    # per request, INFO) would bury them. Restored afterwards: the caller's logging is theirs.
    access = logging.getLogger("mfms.access")
    level = access.level
    access.setLevel(logging.WARNING)
    try:
        return _run_demo(problem_ref, strategy, workers, max_trials, budget, seed,
                         database_url)
    finally:
        access.setLevel(level)


def _run_demo(problem_ref: str, strategy: str, workers: int, max_trials: int,
              budget: float | None, seed: int, database_url: str | None) -> int:
    import uvicorn

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    problem = load_problem(problem_ref)
    target_cost = problem.cost(max(problem.model_sizes), problem.steps[1])
    budget = budget if budget is not None else 6 * target_cost
    tmp = tempfile.TemporaryDirectory(prefix="mfms-demo-")
    url = database_url or f"sqlite:///{Path(tmp.name) / 'demo.db'}"
    migrate.upgrade(url)
    port = _free_port()
    app = create_app(Settings(database_url=url, lease_seconds=120,
                              maintenance_interval_seconds=1.0))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the demo server did not start")
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    print(f"mfms demo: server on {base} (SQLite {url.removeprefix('sqlite:///')}), "
          f"{workers} simulated worker(s)")
    t0 = time.perf_counter()
    try:
        client = MFMSClient(base, timeout=120)
        study = client.create_study(study_of_problem(
            problem, f"demo-{problem.name}", strategy, seed,
            {"cost": budget, "trials": max_trials}))
        print(f"study {study.id}: problem {problem.name} ({len(problem.domains)} domains, sizes "
              f"{[f'{m / 1e6:g}M' for m in problem.model_sizes]}, target "
              f"{problem.target_model_size / 1e6:g}M x {problem.steps[1]} steps), strategy "
              f"{strategy}, budget {budget:.4g} (= {budget / target_cost:.1f} full-size runs) "
              f"or {max_trials} trials")
        agents = [WorkerAgent(MFMSClient(base, timeout=120, retries=3),
                              SimulateBackend(problem, seed=seed), f"sim-{i + 1}",
                              study_id=study.id, poll_min=0.2, poll_max=2.0,
                              echo=lambda line: print(line, flush=True))
                  for i in range(workers)]
        threads = [threading.Thread(target=a.run, daemon=True) for a in agents]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        study = client.get_study(study.id)
        rec = client.recommendation(study.id)
    finally:
        server.should_exit = True
        thread.join(30)
        tmp.cleanup()
    print()
    print(f"Study {study.id} {study.state}: {study.counts['completed']} trials, cost "
          f"{study.cost_spent:.4g} ({study.cost_spent / target_cost:.2f} full-size runs), "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"Recommended mixture for {rec.model_size / 1e6:g}M params x {rec.steps} steps:")
    for d, v in rec.mixture.items():
        print(f"  {d:>20s}  {v:.4f}")
    if rec.interval is not None and rec.predicted_objective is not None:
        print(f"Predicted target loss: {rec.predicted_objective:.4f} "
              f"(90% interval {rec.interval[0]:.4f} .. {rec.interval[1]:.4f})")
    true, opt = problem.true_objective(rec.mixture), problem.optimum()
    if opt is not None:
        print(f"True target loss of the recommendation: {true:.4f}; optimum {opt:.4f} "
              f"(gap {100 * (true / opt - 1):.2f}%)")
    return 0
