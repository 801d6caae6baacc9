"""Soak test of the service: N simulated workers against one server, then an audit.

Every worker (an asyncio task with its own httpx connection and worker id) loops claim ->
K measurements -> complete until ``--seconds`` are up, then finishes the trial it holds so
nothing is left running. The client side records what the server acknowledged: each trial
it was handed (by whom, when), each measurement it got a 2xx for (with the exact losses
sent) and each completion. The audit then reads the database directly and counts what the
service must never do: hand a trial id to two workers, lose or alter an acknowledged
measurement, forget a completion, claim a trial no client received, answer 5xx.

The same machinery backs ``tests/reliability/test_rel_load.py`` (a short run that asserts
the audit) and the fault tests (``ServerProcess``, ``fresh_database``). This script is the
long, configurable run that prints the numbers::

    .venv/bin/python bench/soak.py --workers 64 --seconds 120            # PostgreSQL
    .venv/bin/python bench/soak.py --database-url sqlite:///soak.db --seconds 30
    .venv/bin/python bench/soak.py --seconds 60 --json bench/results/soak.json

``--database-url`` is where a fresh database is made: on PostgreSQL a new database next to
the one named (dropped afterwards), on SQLite the file itself (deleted first). The server
runs as its own process (``mfms serve``); the load generator shares the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

__all__ = ["DEFAULT_ADMIN_URL", "ENDPOINTS", "Assignment", "LoadResult", "ServerProcess",
           "audit", "audit_ok", "free_port", "fresh_database", "losses_for", "main",
           "run_load", "study_body", "summarize"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ADMIN_URL = os.environ.get("MFMS_TEST_POSTGRES_URL",
                                   "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
ENDPOINTS = ("next-trial", "measurements", "complete")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def fresh_database(url: str = DEFAULT_ADMIN_URL, prefix: str = "mfms_soak") -> Iterator[str]:
    """A new, migrated, empty database; dropped (PostgreSQL) or deleted (SQLite) after.

    On PostgreSQL ``url`` names any database of the cluster (the admin connection); the new
    one is created beside it, so concurrent runs never share tables.
    """
    from server import migrate
    from server.config import normalize_database_url

    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        files = [Path(str(path) + s) for s in ("", "-wal", "-shm")]
        for f in files:
            f.unlink(missing_ok=True)
        migrate.upgrade(url)
        try:
            yield url
        finally:
            for f in files:
                f.unlink(missing_ok=True)
        return
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        fresh = url.rsplit("/", 1)[0] + "/" + name
        migrate.upgrade(fresh)
        yield fresh
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class ServerProcess:
    """``mfms serve`` as a child process on a fixed port: start, SIGKILL, start again.

    ``settings`` become ``MFMS_*`` environment variables (``lease_seconds=3`` ->
    ``MFMS_LEASE_SECONDS=3``). The server's log goes to a file (``log_path``) so a full pipe
    can never stall it; ``log_tail()`` reads it for failure messages.
    """

    def __init__(self, database_url: str, *, port: int | None = None, processes: int = 1,
                 **settings: object) -> None:
        self.database_url = database_url
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes = processes
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("MFMS_API_TOKEN", "MFMS_ADMIN_TOKEN", "MFMS_WORKER_TOKEN")}
        self.env["MFMS_DATABASE_URL"] = database_url
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        self.env.update({f"MFMS_{k.upper()}": str(v) for k, v in settings.items()})
        fd, self.log_path = tempfile.mkstemp(prefix="mfms-serve-", suffix=".log")
        os.close(fd)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> ServerProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mfms_cli", "serve", "--port", str(self.port),
                 "--log-level", "warning", "--workers", str(self.processes)],
                env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mfms serve did not start:\n{self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, open transactions die with the connections."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        Path(self.log_path).unlink(missing_ok=True)


def study_body(*, domains: int = 5, checkpoints: int = 4, strategy: str = "random",
               seed: int = 0, budget_trials: int | None = None) -> dict:
    """A study for load runs: ``random`` proposals, so the service and not the GP is timed."""
    body = {"name": f"soak-{uuid.uuid4().hex[:8]}", "domains": [f"d{i}" for i in range(domains)],
            "model_sizes": [20e6, 60e6, 150e6], "steps": {"min": 1000, "max": 10000},
            "target": {"model_size": 400e6}, "checkpoints": checkpoints,
            "strategy": {"name": strategy}, "seed": seed}
    if budget_trials is not None:
        body["budget"] = {"trials": budget_trials}
    return body


def losses_for(trial_id: int, step: int, domains: Sequence[str]) -> dict[str, float]:
    """Per-domain losses with all 53 bits of mantissa used, so a stored value that differs
    in its last bit is caught (the audit compares them exactly)."""
    rng = random.Random(f"{trial_id}:{step}")
    return {d: 2.0 + 3.0 * rng.random() for d in domains}


@dataclass(frozen=True)
class Assignment:
    trial_id: int
    worker_id: str
    claimed_at: float  # time.monotonic() when the answer arrived
    lease_expires_at: str


@dataclass
class LoadResult:
    """What the clients saw: latencies per endpoint, what the server acknowledged."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter = field(default_factory=Counter)  # (endpoint, status) -> count
    assignments: list[Assignment] = field(default_factory=list)
    acked: dict[tuple[int, int], dict[str, float]] = field(default_factory=dict)
    completed: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)  # 5xx answers and transport errors
    wall: float = 0.0
    workers: int = 0

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())


async def _worker(i: int, base: str, study_id: int, stop_at: float, res: LoadResult,
                  max_trials: int | None, timeout: float) -> None:
    wid = f"soak-{i}"
    async with httpx.AsyncClient(base_url=base, timeout=timeout) as http:

        async def call(name: str, path: str, body: dict) -> httpx.Response | None:
            t0 = time.perf_counter()
            try:
                r = await http.post(path, json=body)
            except httpx.HTTPError as exc:
                res.errors.append(f"{wid} {name}: {exc!r}")
                return None
            res.latencies[name].append(time.perf_counter() - t0)
            res.statuses[(name, r.status_code)] += 1
            if r.status_code >= 500:
                res.errors.append(f"{wid} {name} {r.status_code} {r.text[:200]}")
            return r

        while time.monotonic() < stop_at:
            if max_trials is not None and len(res.assignments) >= max_trials:
                return
            r = await call("next-trial", "/next-trial", {"worker_id": wid, "study_id": study_id})
            if r is None or r.status_code != 200:
                if r is not None and r.status_code == 204 and \
                        r.headers.get("x-mfms-study-state", "running") != "running":
                    return  # the study is over (budget spent)
                await asyncio.sleep(0.05)
                continue
            a = r.json()
            tid = a["trial_id"]
            res.assignments.append(Assignment(tid, wid, time.monotonic(), a["lease_expires_at"]))
            for step in a["checkpoints"]:
                losses = losses_for(tid, step, a["loss_domains"])
                r = await call("measurements", f"/trials/{tid}/measurements",
                               {"step": step, "losses": losses, "worker_id": wid})
                if r is not None and r.status_code in (200, 201):
                    res.acked[(tid, step)] = losses
            r = await call("complete", f"/trials/{tid}/complete", {"cost": 1.0, "worker_id": wid})
            if r is not None and r.status_code == 200:
                res.completed.add(tid)


async def _drive(urls: Sequence[str], study_id: int, workers: int, seconds: float,
                 max_trials: int | None, timeout: float) -> LoadResult:
    res = LoadResult(workers=workers)
    stop_at = time.monotonic() + seconds
    t0 = time.perf_counter()
    await asyncio.gather(*(_worker(i, urls[i % len(urls)], study_id, stop_at, res, max_trials,
                                   timeout) for i in range(workers)))
    res.wall = time.perf_counter() - t0
    return res


def run_load(urls: str | Sequence[str], study_id: int, *, workers: int = 64,
             seconds: float = 20.0, max_trials: int | None = None,
             timeout: float = 60.0) -> LoadResult:
    """Run ``workers`` simulated workers for ``seconds`` (or until ``max_trials`` were
    handed out) against one server URL, or spread round-robin over several."""
    urls = [urls] if isinstance(urls, str) else list(urls)
    return asyncio.run(_drive(urls, study_id, workers, seconds, max_trials, timeout))


def audit(database_url: str, study_id: int, res: LoadResult) -> dict[str, int]:
    """Compare what the clients were acknowledged with what the database holds.

    Every count but the first three must be zero.
    """
    engine = create_engine(database_url)
    try:
        with engine.connect() as c:
            trials = {int(r.id): r for r in c.execute(text(
                "SELECT id, state, worker_id, started_at FROM trials WHERE study_id = :s"),
                {"s": study_id})}
            stored = {(int(r.trial_id), int(r.step)): r.losses for r in c.execute(text(
                "SELECT m.trial_id, m.step, m.losses FROM measurements m JOIN trials t "
                "ON t.id = m.trial_id WHERE t.study_id = :s"), {"s": study_id})}
    finally:
        engine.dispose()
    stored = {k: json.loads(v) if isinstance(v, str) else v for k, v in stored.items()}
    handed = Counter(a.trial_id for a in res.assignments)
    holder = {a.trial_id: a.worker_id for a in res.assignments}
    claimed_in_db = {tid for tid, r in trials.items() if r.started_at is not None}
    return {
        "trials_handed_out": len(handed),
        "measurements_acknowledged": len(res.acked),
        "completions_acknowledged": len(res.completed),
        "handed_out_twice": sum(1 for n in handed.values() if n > 1),
        "holder_differs_in_db": sum(1 for tid, w in holder.items()
                                    if tid not in trials or trials[tid].worker_id != w),
        "claimed_but_never_received": len(claimed_in_db - set(handed)),
        "measurements_missing": sum(1 for k in res.acked if k not in stored),
        "measurements_changed": sum(1 for k, v in res.acked.items()
                                    if k in stored and stored[k] != v),
        "completions_missing": sum(1 for tid in res.completed
                                   if trials.get(tid) is None
                                   or trials[tid].state != "completed"),
        "running_after_the_run": sum(1 for r in trials.values() if r.state == "running"),
        "server_errors": len(res.errors),
    }


def audit_ok(checks: dict[str, int]) -> bool:
    info = ("trials_handed_out", "measurements_acknowledged", "completions_acknowledged")
    return all(v == 0 for k, v in checks.items() if k not in info)


def _percentile(xs: Sequence[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def summarize(res: LoadResult) -> dict:
    """Requests/s and p50/p99/max latency (ms) per endpoint, plus totals."""
    rows = []
    for name in ENDPOINTS:
        xs = res.latencies.get(name, [])
        rows.append({"endpoint": name, "requests": len(xs),
                     "per_second": len(xs) / res.wall if res.wall else float("nan"),
                     "p50_ms": 1000 * _percentile(xs, 0.50),
                     "p99_ms": 1000 * _percentile(xs, 0.99),
                     "max_ms": 1000 * max(xs, default=float("nan")),
                     "mean_ms": 1000 * statistics.fmean(xs) if xs else float("nan")})
    no_work = sum(n for (name, status), n in res.statuses.items()
                  if name == "next-trial" and status == 204)
    return {"workers": res.workers, "wall_seconds": res.wall, "requests": res.requests,
            "requests_per_second": res.requests / res.wall if res.wall else float("nan"),
            "trials_completed": len(res.completed),
            "trials_per_second": len(res.completed) / res.wall if res.wall else float("nan"),
            "next_trial_204": no_work, "endpoints": rows,
            "statuses": {f"{n} {s}": c for (n, s), c in sorted(res.statuses.items())}}


def format_table(summary: dict) -> str:
    lines = [f"{'endpoint':14s} {'requests':>9s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} "
             f"{'max ms':>8s}"]
    for r in summary["endpoints"]:
        lines.append(f"{r['endpoint']:14s} {r['requests']:9d} {r['per_second']:8.1f} "
                     f"{r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['max_ms']:8.1f}")
    lines.append(f"{'all':14s} {summary['requests']:9d} {summary['requests_per_second']:8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--database-url", default=DEFAULT_ADMIN_URL,
                    help="where the fresh database is made (default: local PostgreSQL)")
    ap.add_argument("--workers", type=int, default=64, help="simulated workers")
    ap.add_argument("--seconds", type=float, default=120.0, help="how long to keep the load")
    ap.add_argument("--strategy", default="random",
                    help="random times the service itself; mfms-bo adds GP proposals")
    ap.add_argument("--domains", type=int, default=5)
    ap.add_argument("--checkpoints", type=int, default=8, help="measurements per trial")
    ap.add_argument("--server-processes", type=int, default=1, help="mfms serve --workers")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    with fresh_database(args.database_url) as url:
        dialect = url.split(":", 1)[0].split("+", 1)[0]
        with ServerProcess(url, processes=args.server_processes) as srv:
            study = httpx.post(f"{srv.url}/studies", timeout=60, json=study_body(
                domains=args.domains, checkpoints=args.checkpoints,
                strategy=args.strategy)).raise_for_status().json()
            res = run_load(srv.url, study["id"], workers=args.workers, seconds=args.seconds)
        checks = audit(url, study["id"], res)
    summary = summarize(res)
    print(f"soak: {args.workers} workers, {args.seconds:g} s, {dialect}, "
          f"{args.server_processes} server process(es), strategy {args.strategy}, "
          f"k={args.domains}, {args.checkpoints} checkpoints per trial, {os.cpu_count()} cores "
          "shared by server, database and load generator")
    print(format_table(summary))
    print(f"trials completed: {summary['trials_completed']} "
          f"({summary['trials_per_second']:.1f}/s); /next-trial 204 (no work yet): "
          f"{summary['next_trial_204']}")
    print("audit: " + ", ".join(f"{k} {v}" for k, v in checks.items()))
    for e in res.errors[:10]:
        print("  error:", e)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "config": vars(args) | {"database": dialect, "cores": os.cpu_count()},
            "summary": summary, "audit": checks, "errors": res.errors[:50]}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0 if audit_ok(checks) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
