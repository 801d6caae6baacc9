"""Large studies: the read paths at 10,000 trials x 8 checkpoints, on SQLite and PostgreSQL.

A study that size would take hours to play through the API, so :func:`generate_study`
writes it straight into a migrated database with SQLAlchemy Core bulk inserts (seconds);
the tests of pagination, export and the dashboard use it too. Then we time what a person or
a script does with such a study, through the real app (FastAPI's TestClient), medians of
three calls where the call is short:

* one page of ``GET /studies/{id}/trials`` (the default page size) and walking every page;
* ``GET /studies/{id}/export`` (streamed), with the server side's peak Python memory
  (``tracemalloc``) beside that of the former whole-document export; the import of that
  document as ``mfms db import`` runs it (``POST /studies/import`` caps bodies at
  ``MFMS_MAX_BODY_BYTES``, 1 MB by default), with its peak;
* the study page's two requests: ``GET /studies/{id}/dashboard?part=overview`` (size and
  peak too) and ``?part=surrogate``, its first call (the GP's first fit on every trial)
  and once fitted.

    python bench/large_study.py [--trials 10000] [--db sqlite,postgresql]
                                [--json bench/results/large_study.json]

PostgreSQL is the local trust-auth server (``MFMS_TEST_POSTGRES_URL``), in a throwaway
database dropped afterwards.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import subprocess
import sys
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


def _seconds(fn: Callable[[], Any], repeats: int = 1) -> tuple[Any, float]:
    """``fn()``'s last result and its median wall time (s) over ``repeats`` calls."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def _peak_mib(fn: Callable[[], Any]) -> float:
    """The peak Python allocation (MiB, ``tracemalloc``) while ``fn`` runs, beyond what was
    allocated before; a separate, slower run from the timed ones."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def bench_one(kind: str, n_trials: int) -> dict[str, Any]:
    """Generate the study on ``kind`` and time each read path (after a warm-up)."""
    from fastapi.testclient import TestClient

    from server import transfer
    from server.app import create_app
    from server.config import Settings
    from server.db import Database
    from tests.server.test_large_study import _oracle

    with _database(kind) as url:
        t0 = time.perf_counter()
        sid = generate_study(url, n_trials)
        out: dict[str, Any] = {"db": kind, "trials": n_trials,
                               "generate_s": time.perf_counter() - t0}
        app = create_app(Settings(database_url=url, background=False))
        db: Database = app.state.db
        with TestClient(app) as http:
            base = f"/studies/{sid}"

            def get(path: str, **params: Any) -> bytes:
                r = http.get(path, params=params or None)
                r.raise_for_status()
                return r.content

            get(f"{base}/trials")  # warm-up: connections, caches
            page, out["page_s"] = _seconds(lambda: get(f"{base}/trials"), 3)
            out["page_trials"] = len(json.loads(page)["trials"])

            def walk() -> int:
                n, cursor = 0, None
                while True:
                    body = json.loads(get(f"{base}/trials", **({"cursor": cursor}
                                                                 if cursor else {})))
                    n += len(body["trials"])
                    cursor = body["next_cursor"]
                    if cursor is None:
                        return n

            walked, out["walk_s"] = _seconds(walk)
            assert walked == n_trials, (walked, n_trials)
            doc, out["export_s"] = _seconds(lambda: get(f"{base}/export"))
            out["export_mib"] = len(doc) / 2**20

            def stream() -> int:  # the server's side of the export: pieces written away
                with db.session() as s:
                    return sum(len(p) for p in transfer.iter_export_study(s, sid))

            def whole() -> int:  # the former export: ORM rows, one dict, one string
                with db.session() as s:
                    return len(json.dumps(_oracle(s, sid)))

            out["export_peak_mib"] = _peak_mib(stream)
            out["export_whole_peak_mib"] = _peak_mib(whole)
            parsed = json.loads(doc)
            names = iter(range(10**6))

            def import_() -> int:  # what mfms db import does (REST caps bodies at 1 MB)
                with db.session() as s:
                    return transfer.import_study(s, parsed, f"copy-{next(names)}").id

            _, out["import_s"] = _seconds(import_)
            out["import_peak_mib"] = _peak_mib(import_)
            board, out["overview_s"] = _seconds(
                lambda: get(f"{base}/dashboard", part="overview"), 3)
            out["overview_mib"] = len(board) / 2**20
            out["overview_peak_mib"] = _peak_mib(lambda: get(f"{base}/dashboard",
                                                             part="overview"))
            _, out["surrogate_cold_s"] = _seconds(
                lambda: get(f"{base}/dashboard", part="surrogate"))
            _, out["surrogate_s"] = _seconds(
                lambda: get(f"{base}/dashboard", part="surrogate"), 3)
    return out


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
    commit = _commit()  # the code measured: taken before the run, which lasts minutes
    rows = [bench_one(kind, args.trials) for kind in args.db.split(",")]
    cols = [("db", "{}"), ("trials", "{}"), ("generate_s", "{:.1f}"), ("page_s", "{:.3f}"),
            ("walk_s", "{:.2f}"), ("export_s", "{:.2f}"), ("export_mib", "{:.1f}"),
            ("export_peak_mib", "{:.1f}"), ("export_whole_peak_mib", "{:.1f}"),
            ("import_s", "{:.2f}"), ("import_peak_mib", "{:.1f}"), ("overview_s", "{:.2f}"),
            ("overview_mib", "{:.2f}"), ("overview_peak_mib", "{:.1f}"),
            ("surrogate_cold_s", "{:.1f}"), ("surrogate_s", "{:.2f}")]
    print(" | ".join(c for c, _ in cols))
    for r in rows:
        print(" | ".join(f.format(r[c]) for c, f in cols))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"commit": commit, "command": "python bench/large_study.py "
                               f"--trials {args.trials} --db {args.db}", "results": rows},
                              indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.postgres, as soak.py
    main()
