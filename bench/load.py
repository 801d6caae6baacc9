"""Load benchmark of the service: N simulated workers against one server process.

The server runs as its own process (``mfms serve``), so the load generator does not share
its interpreter; workers are asyncio tasks, each looping claim -> K measurements ->
complete for ``--seconds``. Prints p50/p99 latency per endpoint and requests/s, checks
correctness afterwards (every trial handed out once, every posted measurement stored), and
writes JSON.

    .venv/bin/python bench/load.py --workers 32 --seconds 30              # PostgreSQL
    .venv/bin/python bench/load.py --database-url sqlite:///load.db       # SQLite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_database(url: str) -> tuple[str, callable]:
    """A new empty database (PostgreSQL) or file (SQLite) and its clean-up."""
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        path.unlink(missing_ok=True)
        return url, lambda: [Path(str(path) + s).unlink(missing_ok=True)
                             for s in ("", "-wal", "-shm")]
    name = f"mfms_load_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url.rsplit("/", 1)[0] + "/" + name, drop


def _percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


async def _worker(i: int, base: str, study_id: int, stop_at: float, lat: dict, handed: list,
                  posted: list, errors: list) -> None:
    wid = f"load-{i}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:

        async def call(name: str, path: str, body: dict) -> httpx.Response:
            t0 = time.perf_counter()
            r = await http.post(path, json=body)
            lat[name].append(time.perf_counter() - t0)
            if r.status_code >= 500:
                errors.append(f"{name} {r.status_code} {r.text[:200]}")
            return r

        while time.monotonic() < stop_at:
            r = await call("next-trial", "/next-trial", {"worker_id": wid, "study_id": study_id})
            if r.status_code == 204:
                await asyncio.sleep(0.05)
                continue
            if r.status_code != 200:
                errors.append(f"next-trial {r.status_code} {r.text[:200]}")
                continue
            a = r.json()
            handed.append(a["trial_id"])
            for step in a["checkpoints"]:
                losses = {d: 2.0 + 1.0 / step + w for d, w in a["mixture"].items()}
                r = await call("measurements", f"/trials/{a['trial_id']}/measurements",
                               {"step": step, "losses": losses, "worker_id": wid})
                if r.status_code in (200, 201):
                    posted.append((a["trial_id"], step))
            await call("complete", f"/trials/{a['trial_id']}/complete",
                       {"cost": 1.0, "worker_id": wid})


async def _drive(base: str, study_id: int, workers: int, seconds: float) -> dict:
    lat: dict[str, list[float]] = defaultdict(list)
    handed: list[int] = []
    posted: list[tuple[int, int]] = []
    errors: list[str] = []
    stop_at = time.monotonic() + seconds
    t0 = time.perf_counter()
    await asyncio.gather(*(_worker(i, base, study_id, stop_at, lat, handed, posted, errors)
                           for i in range(workers)))
    wall = time.perf_counter() - t0
    return {"lat": lat, "handed": handed, "posted": posted, "errors": errors, "wall": wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--database-url", default=DEFAULT_PG)
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--strategy", default="random",
                    help="random measures the service itself; mfms-bo adds GP proposals")
    ap.add_argument("--domains", type=int, default=5)
    ap.add_argument("--checkpoints", type=int, default=8)
    ap.add_argument("--server-workers", type=int, default=1, help="server processes")
    ap.add_argument("--json", default="bench/results/load.json")
    args = ap.parse_args(argv)

    url, cleanup = _fresh_database(args.database_url)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MFMS_DATABASE_URL": url, "MFMS_API_TOKEN": ""}
    env.pop("MFMS_API_TOKEN")
    # The server's log (an access line per request) goes to a file: a pipe nobody reads
    # fills up after a few seconds of load and blocks the server mid-request.
    log_path = Path(tempfile.mkstemp(prefix="mfms-load-server-", suffix=".log")[1])
    log_file = log_path.open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "mfms_cli", "serve", "--port", str(port), "--upgrade",
         "--log-level", "warning", "--workers", str(args.server_workers)],
        env=env, stdout=log_file, stderr=subprocess.STDOUT)
    failed = True
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("server did not start; its log ends:\n"
                                   + log_path.read_text(errors="replace")[-4000:])
            time.sleep(0.2)
        doms = [f"d{i}" for i in range(args.domains)]
        study = httpx.post(f"{base}/studies", json={
            "name": "load", "domains": doms, "model_sizes": [20e6, 60e6, 150e6],
            "steps": {"min": 1000, "max": 10000}, "target": {"model_size": 400e6},
            "checkpoints": args.checkpoints, "strategy": {"name": args.strategy}, "seed": 0},
            timeout=30).json()
        res = asyncio.run(_drive(base, study["id"], args.workers, args.seconds))
        server.terminate()
        server.wait(30)
        engine = create_engine(url)
        with engine.connect() as c:
            stored = {(int(a), int(b)) for a, b in c.execute(text(
                "SELECT trial_id, step FROM measurements"))}
        engine.dispose()
        failed = False
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(30)
        log_file.close()
        cleanup()  # the throwaway database goes, whatever happened
        if failed:
            print(f"server log kept at {log_path}", file=sys.stderr)
        else:
            log_path.unlink(missing_ok=True)

    lat = res["lat"]
    n_req = sum(len(v) for v in lat.values())
    rows = []
    for name in ("next-trial", "measurements", "complete"):
        xs = lat.get(name, [])
        rows.append({"endpoint": name, "requests": len(xs),
                     "p50_ms": 1000 * _percentile(xs, 0.5), "p99_ms": 1000 * _percentile(xs, 0.99),
                     "mean_ms": 1000 * statistics.fmean(xs) if xs else float("nan")})
    checks = {
        "trials_handed_out": len(res["handed"]),
        "handed_out_twice": len(res["handed"]) - len(set(res["handed"])),
        "measurements_posted": len(res["posted"]),
        "measurements_missing": len(set(res["posted"]) - stored),
        "server_errors_5xx": len(res["errors"]),
    }
    dialect = "postgresql" if url.startswith("postgresql") else "sqlite"
    print(f"load: {args.workers} workers, {args.server_workers} server process(es), "
          f"{args.seconds:g} s, {dialect}, strategy "
          f"{args.strategy}, k={args.domains}, {args.checkpoints} checkpoints per trial")
    print(f"{'endpoint':14s} {'requests':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'mean ms':>8s}")
    for r in rows:
        print(f"{r['endpoint']:14s} {r['requests']:9d} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} "
              f"{r['mean_ms']:8.1f}")
    print(f"throughput: {n_req / res['wall']:.0f} requests/s, "
          f"{len(set(res['handed'])) / res['wall']:.1f} trials/s")
    print("checks: " + ", ".join(f"{k} {v}" for k, v in checks.items()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "config": vars(args) | {"database": dialect}, "endpoints": rows,
            "requests_per_second": n_req / res["wall"], "checks": checks,
            "errors": res["errors"][:20]}, indent=1))
        print(f"wrote {args.json}")
    ok = checks["handed_out_twice"] == 0 and checks["measurements_missing"] == 0 \
        and checks["server_errors_5xx"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
