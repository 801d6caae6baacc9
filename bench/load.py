"""Load benchmark of the service: N simulated workers against ``mfms serve`` on a fresh database.

The server runs as its own process (``mfms serve``), so the load generator does not share
its interpreter; workers are asyncio tasks, each looping claim -> K measurements ->
complete for ``--seconds`` with no simulated training time, so every request is service
overhead. Prints p50/p99 latency per endpoint and requests/s, checks correctness
afterwards (every trial handed out once, every accepted measurement stored, no 5xx, no
refusal), and writes JSON.

``--baseline REF`` runs the same load against a checkout of ``REF`` first (a temporary
``git worktree``, its own server and database), then against the working tree, and prints
both rows and their ratios: on a machine shared with other jobs only numbers measured in
the same invocation compare.

    .venv/bin/python bench/load.py                                         # 64 workers, PostgreSQL
    .venv/bin/python bench/load.py --workers 64 --seconds 30 --baseline 2bd5fa7
    .venv/bin/python bench/load.py --database-url sqlite:///load.db        # SQLite

The workers speak HTTP/1.1 over one kept-alive connection each with a minimal client of
their own (below): a general-purpose client costs ~1.5 ms of CPU per request, which on a
small machine would measure the load generator instead of the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = ("next-trial", "measurements", "complete")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_database(url: str) -> tuple[str, Callable[[], None]]:
    """A new empty database (PostgreSQL, named ``mfms_load_*``) or file (SQLite) and the
    function that removes it again."""
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        path.unlink(missing_ok=True)

        def remove() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)

        return url, remove
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


class _Http:
    """One kept-alive HTTP/1.1 connection: JSON POST in, ``(status, body)`` out.

    Only what ``mfms serve`` answers is understood (Content-Length or chunked bodies,
    ``Connection: close``); a dropped connection is reopened on the next request.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._reader, self._writer
        assert reader is not None
        payload = json.dumps(body).encode()
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                     "Content-Type: application/json\r\n"
                     f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        try:
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionError("the server closed the connection")
            status = int(status_line.split(b" ", 2)[1])
            length, chunked, close = None, False, False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                key, _, value = line.partition(b":")
                key = key.strip().lower()
                if key == b"content-length":
                    length = int(value)
                elif key == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif key == b"connection":
                    close = b"close" in value.lower()
            if chunked:
                parts = []
                while size := int((await reader.readline()).split(b";")[0], 16):
                    parts.append(await reader.readexactly(size))
                    await reader.readline()
                await reader.readline()
                data = b"".join(parts)
            elif length is not None:
                data = await reader.readexactly(length)
            elif status == 204 or status < 200:
                data = b""
            else:
                data, close = await reader.read(), True
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def _worker(i: int, port: int, study_id: int, stop_at: float, out: dict) -> None:
    wid = f"load-{i}"
    http = _Http("127.0.0.1", port)
    lat = out["lat"]

    async def call(name: str, path: str, body: dict) -> tuple[int, bytes]:
        t0 = time.perf_counter()
        try:
            status, data = await asyncio.wait_for(http.post(path, body), 120)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            out["transport"].append(f"{name} {type(exc).__name__}: {exc}")
            return 0, b""
        lat[name].append(time.perf_counter() - t0)
        if status >= 500:
            out["errors"].append(f"{name} {status} {data[:200]!r}")
        elif status >= 400:
            out["refused"].append(f"{name} {status} {data[:200]!r}")
        return status, data

    try:
        while time.monotonic() < stop_at:
            status, data = await call("next-trial", "/next-trial",
                                      {"worker_id": wid, "study_id": study_id})
            if status == 204:
                await asyncio.sleep(0.05)
                continue
            if status != 200:
                await asyncio.sleep(0.05)
                continue
            a = json.loads(data)
            out["handed"].append(a["trial_id"])
            for step in a["checkpoints"]:
                losses = {d: 2.0 + 1.0 / step + w for d, w in a["mixture"].items()}
                status, _ = await call("measurements", f"/trials/{a['trial_id']}/measurements",
                                       {"step": step, "losses": losses, "worker_id": wid})
                if status in (200, 201):
                    out["posted"].append((a["trial_id"], step))
            await call("complete", f"/trials/{a['trial_id']}/complete",
                       {"cost": 1.0, "worker_id": wid})
    finally:
        http.close()


async def _drive(port: int, study_id: int, workers: int, seconds: float) -> dict:
    out: dict[str, Any] = {"lat": defaultdict(list), "handed": [], "posted": [], "errors": [],
                           "refused": [], "transport": []}
    stop_at = time.monotonic() + seconds
    t0 = time.perf_counter()
    await asyncio.gather(*(_worker(i, port, study_id, stop_at, out) for i in range(workers)))
    out["wall"] = time.perf_counter() - t0
    return out


def _run(args: argparse.Namespace, source: Path, server_workers: int) -> dict[str, Any]:
    """One load run against ``server_workers`` server processes of the checkout at
    ``source``: the latencies, what was handed out and posted, and the audit."""
    url, cleanup = _fresh_database(args.database_url)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MFMS_DATABASE_URL": url, "PYTHONPATH": str(source)}
    for token in ("MFMS_API_TOKEN", "MFMS_ADMIN_TOKEN", "MFMS_WORKER_TOKEN"):
        env.pop(token, None)
    # The server's log (an access line per request) goes to a file: a pipe nobody reads
    # fills up after a few seconds of load and blocks the server mid-request.
    log_path = Path(tempfile.mkstemp(prefix="mfms-load-server-", suffix=".log")[1])
    log_file = log_path.open("wb")
    server: subprocess.Popen | None = None
    failed = True
    try:
        # Its own session: a Ctrl-C reaches this process only, which stops the server
        # itself and then drops the database.
        server = subprocess.Popen(
            [sys.executable, "-m", "mfms_cli", "serve", "--port", str(port), "--upgrade",
             "--log-level", "warning", "--workers", str(server_workers)],
            env=env, cwd=source, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 120
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
        res = asyncio.run(_drive(port, study["id"], args.workers, args.seconds))
        _stop(server)
        engine = create_engine(url)
        with engine.connect() as c:
            stored = {(int(a), int(b)) for a, b in c.execute(text(
                "SELECT trial_id, step FROM measurements"))}
        engine.dispose()
        failed = False
    finally:
        if server is not None:
            _stop(server)
        log_file.close()
        cleanup()  # the throwaway database goes, whatever happened
        if failed:
            print(f"server log kept at {log_path}", file=sys.stderr)
        else:
            log_path.unlink(missing_ok=True)
    res["checks"] = _checks(res, stored)
    return res


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def _checks(res: dict[str, Any], stored: set[tuple[int, int]]) -> dict[str, int]:
    return {
        "trials_handed_out": len(res["handed"]),
        "handed_out_twice": len(res["handed"]) - len(set(res["handed"])),
        "measurements_posted": len(res["posted"]),
        "measurements_missing": len(set(res["posted"]) - stored),
        "server_errors_5xx": len(res["errors"]),
        "refused_4xx": len(res["refused"]),
        "transport_errors": len(res["transport"]),
    }


def _row(label: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from one or more runs of the same server: latencies pooled, requests/s over
    their summed wall time, the audit summed."""
    lat = {name: [x for r in runs for x in r["lat"].get(name, [])] for name in ENDPOINTS}
    endpoints = {}
    for name, xs in lat.items():
        endpoints[name] = {
            "requests": len(xs), "p50_ms": 1000 * _percentile(xs, 0.5),
            "p99_ms": 1000 * _percentile(xs, 0.99),
            "mean_ms": 1000 * statistics.fmean(xs) if xs else float("nan")}
    checks = {k: sum(r["checks"][k] for r in runs) for k in runs[0]["checks"]}
    wall = sum(r["wall"] for r in runs)
    errors = [e for r in runs for e in r["errors"] + r["refused"] + r["transport"]]
    return {"label": label, "runs": len(runs),
            "requests_per_second": sum(len(v) for v in lat.values()) / wall,
            "trials_per_second": checks["trials_handed_out"] / wall, "endpoints": endpoints,
            "checks": checks, "errors": errors[:20]}


def audit_ok(row: dict[str, Any]) -> bool:
    """Nothing handed out twice, nothing accepted and lost, no error of any kind."""
    c = row["checks"]
    return all(c[k] == 0 for k in ("handed_out_twice", "measurements_missing",
                                   "server_errors_5xx", "refused_4xx", "transport_errors"))


def ratios(baseline: dict[str, Any], current: dict[str, Any]) -> dict[str, float]:
    """``current / baseline`` for requests/s and each endpoint's p50 and p99 (a latency
    ratio under 1 is faster)."""
    out = {"requests_per_second": current["requests_per_second"]
           / baseline["requests_per_second"]}
    for name in ENDPOINTS:
        for q in ("p50_ms", "p99_ms"):
            b, c = baseline["endpoints"][name][q], current["endpoints"][name][q]
            out[f"{name}_{q}"] = c / b if b and b == b and c == c else float("nan")
    return out


def _format(rows: list[dict[str, Any]], ratio: dict[str, float] | None) -> str:
    head = (f"{'':24s} {'req/s':>7s} {'trials/s':>8s} " + " ".join(
        f"{name + ' p50/p99 ms':>25s}" for name in ENDPOINTS)
        + "  twice missing 5xx 4xx transport")
    lines = [head]
    for r in rows:
        c = r["checks"]
        lines.append(
            f"{r['label'][:24]:24s} {r['requests_per_second']:7.0f} "
            f"{r['trials_per_second']:8.1f} " + " ".join(
                f"{e['p50_ms']:12.1f} / {e['p99_ms']:8.1f}" for e in r["endpoints"].values())
            + f"  {c['handed_out_twice']:5d} {c['measurements_missing']:7d} "
              f"{c['server_errors_5xx']:3d} {c['refused_4xx']:3d} {c['transport_errors']:9d}")
    if ratio is not None:
        lines.append(
            f"{'ratio current/baseline':24s} {ratio['requests_per_second']:6.2f}x {'':8s} "
            + " ".join(f"{ratio[f'{n}_p50_ms']:11.3f}x / {ratio[f'{n}_p99_ms']:7.3f}x"
                       for n in ENDPOINTS))
    return "\n".join(lines)


def _git(*argv: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *argv], check=True, capture_output=True,
                          text=True).stdout.strip()


def _with_baseline(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the baseline's server from a temporary worktree of ``args.baseline`` and the
    working tree's, ``args.rounds`` times each in alternating order (baseline first in odd
    rounds, second in even ones), so a load from other jobs that comes and goes hits both
    alike; the worktree is removed whatever happens."""
    sha = _git("rev-parse", "--verify", f"{args.baseline}^{{commit}}")
    path = Path(tempfile.gettempdir()) / f"load-baseline-{sha[:12]}-{os.getpid()}"
    head = _git("rev-parse", "--short=7", "HEAD")
    base_workers = args.baseline_server_workers or args.server_workers
    _git("worktree", "add", "--detach", str(path), sha)
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "current": []}
    try:
        for r in range(args.rounds):
            order = ["baseline", "current"] if r % 2 == 0 else ["current", "baseline"]
            for which in order:
                if which == "baseline":
                    runs[which].append(_run(args, path, base_workers))
                else:
                    runs[which].append(_run(args, ROOT, args.server_workers))
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                       capture_output=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True)
    return (_row(f"baseline {sha[:7]} x{base_workers}", runs["baseline"]),
            _row(f"current {head} x{args.server_workers}", runs["current"]))


def _terminate_as_interrupt(signum: int, _frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so every `finally` above stops its server, drops its
    # database and removes its worktree.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--database-url", default=DEFAULT_PG)
    ap.add_argument("--workers", type=int, default=64, help="simulated workers")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--strategy", default="random",
                    help="random measures the service itself; mfms-bo adds GP proposals")
    ap.add_argument("--domains", type=int, default=5)
    ap.add_argument("--checkpoints", type=int, default=8)
    ap.add_argument("--server-workers", type=int, default=1, help="server processes")
    ap.add_argument("--baseline", metavar="REF",
                    help="also run a checkout of this git commit first and print the ratios")
    ap.add_argument("--baseline-server-workers", type=int, metavar="N",
                    help="server processes for the baseline (default: --server-workers)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of each server (alternating with the baseline's), pooled")
    ap.add_argument("--json", default="bench/results/load.json")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)

    if args.baseline:
        baseline, current = _with_baseline(args)
        rows, ratio = [baseline, current], ratios(baseline, current)
    else:
        head = _git("rev-parse", "--short=7", "HEAD")
        current = _row(f"current {head} x{args.server_workers}",
                       [_run(args, ROOT, args.server_workers) for _ in range(args.rounds)])
        rows, baseline, ratio = [current], None, None
    dialect = "postgresql" if args.database_url.startswith("postgresql") else "sqlite"
    print(f"load: {args.workers} workers, {args.rounds} x {args.seconds:g} s per server, "
          f"{dialect}, strategy "
          f"{args.strategy}, k={args.domains}, {args.checkpoints} checkpoints per trial "
          "(xN: server processes)")
    print(_format(rows, ratio))
    for r in rows:
        for e in r["errors"][:5]:
            print(f"  {r['label']}: {e}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "config": vars(args) | {"database": dialect}, "current": current,
            "baseline": baseline, "ratio": ratio}, indent=1))
        print(f"wrote {args.json}")
    return 0 if all(audit_ok(r) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
