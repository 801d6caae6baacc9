"""Large studies: the read paths at 10,000 trials x 8 checkpoints, on SQLite and PostgreSQL.

A study that size would take hours to play through the API, so :func:`generate_study`
writes it straight into a migrated database with SQLAlchemy Core bulk inserts (a few
seconds); the tests of pagination, export and the dashboard use it too. Then we time what a
person or a script does with such a study, through the real app (FastAPI's TestClient):

* one page of ``GET /studies/{id}/trials`` (the default page size) and walking every page;
* ``GET /studies/{id}/export`` (streamed) and ``POST /studies/import`` of that document;
* ``GET /studies/{id}/dashboard``, the study page's payload, and its peak Python memory
  (``tracemalloc``), next to the export's peak.

    python bench/large_study.py [--trials 10000] [--db sqlite,postgresql]
                                [--json bench/results/large_study.json]

PostgreSQL is the local trust-auth server (``MFMS_TEST_POSTGRES_URL``), in a throwaway
database dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert

from mfms_bo.study import StudyConfig
from mfms_bo.trials import objective_of
from mfms_client.schemas import StudyCreate
from server.models import Measurement, Study, Trial

__all__ = ["LARGE_STUDY", "generate_study", "main"]

# Three domains, two sizes below a larger target, eight checkpoints per trial: the shape of
# the studies the tests run, at 10,000 trials.
LARGE_STUDY: dict[str, Any] = {
    "domains": ["code", "web", "books"],
    "model_sizes": [20e6, 60e6],
    "steps": {"min": 500, "max": 4000},
    "target": {"model_size": 150e6},
    "checkpoints": 8,
    "strategy": {"name": "random"},
}
_BATCH = 1000  # trials per INSERT; their measurements go in the same transaction


def _losses(mixture: dict[str, float], step: int, rng: random.Random) -> dict[str, float]:
    """Losses that fall with steps and favour balanced mixtures, with a little noise."""
    k = len(mixture)
    return {d: 2.0 + 3.0 / (1 + step / 500) + (w - 1 / k) ** 2 + rng.gauss(0, 0.01)
            for d, w in mixture.items()}


def generate_study(url: str, n_trials: int, *, name: str = "large", seed: int = 0,
                   body: dict[str, Any] | None = None, state: str = "completed") -> int:
    """Write a study of ``n_trials`` trials with every checkpoint measured into the migrated
    database at ``url``, bypassing the API (bulk Core inserts); returns its id.

    Nine trials in ten completed, the rest failed halfway (half their checkpoints, a
    reason, no cost) so state filters have something to find. The config goes through the
    same validation as ``POST /studies``, so the server reads it back as any other study.
    """
    rng = random.Random(seed)
    config = StudyCreate.model_validate({**(body or LARGE_STUDY), "name": name}
                                        ).model_dump(mode="json", exclude={"seed"})
    space = StudyConfig.from_dict(config).space
    fid, domains = space.fidelities, list(space.mixtures.domains)
    weights = space.objective_weights or {}
    start = datetime(2026, 1, 1)
    engine = create_engine(url)
    try:
        with engine.begin() as c:
            study_id = c.execute(insert(Study).returning(Study.id), {
                "name": name, "config": config, "state": state, "seed": seed,
                "created_at": start, "updated_at": start, "proposal_failures": 0}).scalar_one()
        for lo in range(0, n_trials, _BATCH):
            trials, curves = [], []
            for i in range(lo, min(lo + _BATCH, n_trials)):
                raw = [rng.expovariate(1.0) for _ in domains]
                mixture = {d: w / sum(raw) for d, w in zip(domains, raw, strict=True)}
                size = rng.choice(fid.model_sizes)
                steps = rng.choice([500, 1000, 2000, 4000])
                checkpoints = list(fid.checkpoint_steps(steps))
                failed = i % 10 == 9
                began = start + timedelta(minutes=i)
                done = began + timedelta(seconds=30 + 60 * steps / 1000)
                trials.append({
                    "study_id": study_id, "state": "failed" if failed else "completed",
                    "source": "strategy", "priority": 1, "mixture": mixture,
                    "model_size": size, "steps": steps, "checkpoints": checkpoints,
                    "spec_metadata": {}, "attempt": 1, "worker_id": f"w-{i % 16}",
                    "created_at": began, "started_at": began, "finished_at": done,
                    "heartbeat_at": done, "cost": None if failed else size / 20e6 * steps / 1e3,
                    "fail_reason": "CUDA out of memory" if failed else None})
                ran = checkpoints[:len(checkpoints) // 2] if failed else checkpoints
                curves.append([(step, _losses(mixture, step, rng), began) for step in ran])
            with engine.begin() as c:
                ids = c.execute(insert(Trial).returning(Trial.id, sort_by_parameter_order=True),
                                trials).scalars().all()
                c.execute(insert(Measurement), [
                    {"trial_id": tid, "step": step, "losses": losses,
                     "objective": objective_of(losses, weights), "cost": None,
                     "proportions": None, "created_at": at + timedelta(seconds=step / 100)}
                    for tid, curve in zip(ids, curves, strict=True)
                    for step, losses, at in curve])
    finally:
        engine.dispose()
    return study_id


# -- the benchmark ---------------------------------------------------------------------------
@contextmanager
def _database(kind: str) -> Iterator[str]:
    """A migrated, empty database of ``kind``, removed afterwards."""
    from server import migrate

    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/large.db"
            migrate.upgrade(url)
            yield url
    else:
        from tests.postgres import empty_postgres_database

        with empty_postgres_database("mfms_bench") as url:
            migrate.upgrade(url)
            yield url


def _timed(fn: Callable[[], Any], memory: bool = False) -> tuple[Any, float, float | None]:
    """``fn()``'s result, its wall time (s) and, with ``memory``, its peak traced Python
    allocation (MiB; tracing slows the call, so the time comes from an untraced run)."""
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    peak = None
    if memory:
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return out, seconds, peak


def bench_one(kind: str, n_trials: int) -> dict[str, Any]:
    """Generate the study on ``kind`` and time each read path once (after a warm-up)."""
    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.config import Settings

    with _database(kind) as url:
        t0 = time.perf_counter()
        sid = generate_study(url, n_trials)
        generated = time.perf_counter() - t0
        app = create_app(Settings(database_url=url, background=False))
        with TestClient(app) as http:
            base = f"/studies/{sid}"
            http.get(f"{base}/trials").raise_for_status()  # warm-up: connections, caches

            def page() -> Any:
                r = http.get(f"{base}/trials")
                r.raise_for_status()
                return r.json()

            def walk() -> int:
                n, cursor = 0, None
                while True:
                    r = http.get(f"{base}/trials",
                                 params={"cursor": cursor} if cursor else None)
                    r.raise_for_status()
                    body = r.json()
                    n += len(body["trials"])
                    cursor = body["next_cursor"]
                    if cursor is None:
                        return n

            def export() -> bytes:
                r = http.get(f"{base}/export")
                r.raise_for_status()
                return r.content

            def dashboard() -> bytes:
                r = http.get(f"{base}/dashboard")
                r.raise_for_status()
                return r.content

            first, t_page, _ = _timed(page)
            walked, t_walk, _ = _timed(walk)
            doc, t_export, m_export = _timed(export, memory=True)
            names = iter(range(10**6))

            def import_() -> Any:
                r = http.post("/studies/import", content=doc,
                              params={"name": f"copy-{next(names)}"},
                              headers={"Content-Type": "application/json"})
                r.raise_for_status()
                return r.json()

            _, t_import, m_import = _timed(import_, memory=True)
            http.get(f"{base}/dashboard").raise_for_status()  # the surrogate's first fit
            payload, t_dash, m_dash = _timed(dashboard, memory=True)
    assert walked == n_trials, (walked, n_trials)
    return {"db": kind, "trials": n_trials, "generate_s": generated,
            "page_s": t_page, "page_trials": len(first["trials"]), "walk_s": t_walk,
            "export_s": t_export, "export_mib": len(doc) / 2**20, "export_peak_mib": m_export,
            "import_s": t_import, "import_peak_mib": m_import,
            "dashboard_s": t_dash, "dashboard_mib": len(payload) / 2**20,
            "dashboard_peak_mib": m_dash}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--db", default="sqlite,postgresql",
                    help="comma list of sqlite, postgresql")
    ap.add_argument("--json", default="bench/results/large_study.json")
    args = ap.parse_args(argv)
    rows = [bench_one(kind, args.trials) for kind in args.db.split(",")]
    cols = [("db", "{}"), ("trials", "{}"), ("generate_s", "{:.1f}"), ("page_s", "{:.3f}"),
            ("walk_s", "{:.2f}"), ("export_s", "{:.2f}"), ("export_mib", "{:.1f}"),
            ("export_peak_mib", "{:.1f}"), ("import_s", "{:.2f}"),
            ("import_peak_mib", "{:.1f}"), ("dashboard_s", "{:.2f}"),
            ("dashboard_mib", "{:.2f}"), ("dashboard_peak_mib", "{:.1f}")]
    print(" | ".join(c for c, _ in cols))
    for r in rows:
        print(" | ".join(f.format(r[c]) for c, f in cols))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"commit": _commit(), "command": "python bench/large_study.py "
                               f"--trials {args.trials} --db {args.db}", "results": rows},
                              indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
