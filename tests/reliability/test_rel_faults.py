"""Faults on PostgreSQL: a worker and the server killed with SIGKILL, the database going
away (refusing, then silent, then in the middle of a proposal), two servers sharing one
database. Nothing acknowledged may be lost.

"Acknowledged" is what a client got a 2xx for; the clients here record it
(``RecordingClient``) and the tests compare it with the database afterwards. The database
outages go through ``TcpProxy`` (below), never the real PostgreSQL cluster, which other
test sessions on the machine share.

Already covered elsewhere, and not repeated here:

* ``tests/workers/test_worker_processes.py``: the real ``mfms worker`` CLI killed with
  SIGKILL mid-trial (SQLite); another worker finishes its re-queued spec.
* ``tests/server/test_leases.py``: lease expiry keeps the partial curve and re-queues, on
  SQLite and PostgreSQL, the attempts bound included.
* ``tests/server/test_concurrency.py``: 16 threads hammering ``/next-trial``, and two
  server instances on one database with no double claim and no duplicate proposal.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from bench.soak import ServerProcess, audit, audit_ok, losses_for, run_load, study_body
from mfms_client.client import MFMSClient
from mfms_client.schemas import TrialAssignment, TrialPublic
from tests.polling import wait_until
from tests.server.conftest import LiveServer, make_settings
from workers.agent import WorkerAgent

ROOT = Path(__file__).resolve().parents[2]


# -- clients that remember what the server acknowledged ------------------------------------
class Ledger:
    """What the server acknowledged, across threads: claims and measurements (2xx only)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.claims: list[tuple[int, str]] = []
        self.acked: dict[tuple[int, int], dict[str, float]] = {}


class RecordingClient(MFMSClient):
    def __init__(self, url: str, ledger: Ledger, worker_id: str) -> None:
        super().__init__(url, timeout=30)
        self.ledger = ledger
        self.worker_id = worker_id

    def next_trial(self, *args, **kwargs) -> TrialAssignment | None:
        a = super().next_trial(*args, **kwargs)
        if a is not None:
            with self.ledger.lock:
                self.ledger.claims.append((a.trial_id, self.worker_id))
        return a

    def post_measurement(self, trial_id: int, step: int, losses, *args, **kwargs):
        out = super().post_measurement(trial_id, step, losses, *args, **kwargs)
        with self.ledger.lock:
            self.ledger.acked[(trial_id, int(step))] = dict(losses)
        return out


class PacedBackend:
    """A trial that takes ``pause`` seconds per checkpoint and reports exact losses."""

    name = "paced"

    def __init__(self, pause: float) -> None:
        self.pause = pause

    def run(self, trial: TrialAssignment, report) -> float:
        for step in trial.checkpoints:
            time.sleep(self.pause)
            report(step, losses_for(trial.trial_id, step, trial.loss_domains), 1.0)
        return 1.0


class Fleet:
    """``n`` real worker agents (retries with backoff, buffered measurements) in threads."""

    def __init__(self, url: str, study_id: int, n: int, pause: float = 0.1) -> None:
        self.ledger = Ledger()
        self.agents = [WorkerAgent(RecordingClient(url, self.ledger, f"agent-{i}"),
                                   PacedBackend(pause), f"agent-{i}", study_id=study_id,
                                   poll_min=0.1, poll_max=1.0, echo=lambda _line: None)
                       for i in range(n)]
        self.threads = [threading.Thread(target=a.run, daemon=True) for a in self.agents]

    def __enter__(self) -> Fleet:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for a in self.agents:
            a.stop()
        for t in self.threads:
            t.join(60)
        for a in self.agents:
            a.client.close()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "agents still running"


def _assert_nothing_lost(ledger: Ledger, trials: list[TrialPublic]) -> None:
    stored = {(t.id, m.step): m.losses for t in trials for m in t.measurements}
    missing = [k for k in ledger.acked if k not in stored]
    changed = [k for k, v in ledger.acked.items() if k in stored and stored[k] != v]
    assert not missing and not changed, (missing[:5], changed[:5])
    ids = [tid for tid, _ in ledger.claims]
    assert len(ids) == len(set(ids)), "a trial was handed out twice"
    holder = {t.id: t.worker_id for t in trials}
    assert all(holder[tid] == w for tid, w in ledger.claims)


# -- 1. a worker process killed with SIGKILL -----------------------------------------------
_DOOMED_WORKER = """
import sys, time
from mfms_client.client import MFMSClient
from workers.agent import WorkerAgent

class Stalls:
    name = "stalls"
    def run(self, trial, report):
        for step in trial.checkpoints:
            report(step, {d: 3.0 - step / trial.steps for d in trial.loss_domains}, 1.0)
            time.sleep(0.2 if step == trial.checkpoints[0] else 600)
        return 1.0

WorkerAgent(MFMSClient(sys.argv[1]), Stalls(), "doomed", study_id=int(sys.argv[2])).run()
"""


def test_worker_killed_mid_trial_spec_requeued_partial_curve_kept(pg_database: str) -> None:
    """A worker agent process (heartbeating every lease/3) is SIGKILLed after reporting two
    checkpoints: its lease lapses, the trial is abandoned with both measurements kept, the
    same spec is re-queued as attempt 2, and the study completes from it."""
    settings = make_settings(pg_database, background=True, maintenance_interval_seconds=0.3,
                             lease_seconds=2.0)
    with LiveServer(settings) as srv:
        api = MFMSClient(srv.url)
        s = api.create_study(study_body(strategy="random", budget_trials=1, checkpoints=4))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        worker = subprocess.Popen([sys.executable, "-c", _DOOMED_WORKER, srv.url, str(s.id)],
                                  env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            victim = wait_until(
                lambda: next((t for t in api.list_trials(s.id)
                              if t.worker_id == "doomed" and len(t.measurements) == 2), None),
                60, "two reported checkpoints")
            time.sleep(2.5)  # beyond one lease: the heartbeats keep it
            assert api.get_trial(victim.id).state == "running"
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(30)
        lost = wait_until(lambda: (t := api.get_trial(victim.id)).state == "abandoned" and t,
                          30, "the lease to lapse")
        assert "lease expired" in lost.fail_reason and "doomed" in lost.fail_reason
        assert [(m.step, m.losses) for m in lost.measurements] == \
            [(m.step, m.losses) for m in victim.measurements]  # the partial curve is kept
        again = api.next_trial("rescuer", study_id=s.id)
        assert again is not None and again.attempt == 2
        retry = api.get_trial(again.trial_id)
        assert retry.retry_of == victim.id
        assert (retry.mixture, retry.model_size, retry.steps, retry.checkpoints) == \
            (victim.mixture, victim.model_size, victim.steps, victim.checkpoints)
        for step in again.checkpoints:
            api.post_measurement(again.trial_id, step,
                                 losses_for(again.trial_id, step, again.loss_domains),
                                 worker_id="rescuer")
        api.complete_trial(again.trial_id, cost=1.0, worker_id="rescuer")
        study = api.get_study(s.id)
        assert study.state == "completed"
        assert study.counts["completed"] == 1 and study.counts["abandoned"] == 1


# -- 2. the server process killed with SIGKILL ---------------------------------------------
def test_server_killed_mid_study_restarts_and_loses_nothing(pg_database: str) -> None:
    """``mfms serve`` (3 s leases) is SIGKILLed while 3 agents are mid-trial and restarted on
    the same database and port. The agents ride it out (their retries and buffers); leases
    that lapsed while it was down are reaped and re-run. Afterwards every trial seen before
    the kill is still there unchanged (finished ones identical, measurements a superset),
    every acknowledged measurement is stored, and the study completes its budget.

    A kill that lands while the server is proposing leaves the study's proposer lock held
    by the dead process until ``proposal_lock_seconds`` pass (30 s by default; a live
    holder renews it during a long GP fit): the study gets no new proposals until then.
    The lock here is 4 s to keep the test short."""
    budget = 8
    srv = ServerProcess(pg_database, lease_seconds=3, maintenance_interval_seconds=0.5,
                        next_trial_wait_seconds=1, proposal_lock_seconds=4)
    with srv:
        api = MFMSClient(srv.url, retries=5)
        s = api.create_study(study_body(strategy="random", budget_trials=budget,
                                        checkpoints=4))
        with Fleet(srv.url, s.id, n=3, pause=0.1) as fleet:
            wait_until(lambda: api.get_study(s.id).counts["completed"] >= 3
                       and any(t.state == "running" and t.measurements
                               for t in api.list_trials(s.id)), 60, "a study in full swing")
            before = api.list_trials(s.id)
            srv.kill()
            time.sleep(0.5)
            srv.start()
            wait_until(lambda: api.get_study(s.id).state == "completed", 120,
                       "the study to complete after the restart")
            fleet.join(60)
            after = api.list_trials(s.id)
            study = api.get_study(s.id)
    now = {t.id: t for t in after}
    for t in before:
        assert t.id in now, f"trial {t.id} vanished"
        a = now[t.id]
        assert (a.mixture, a.model_size, a.steps, a.checkpoints, a.attempt, a.created_at) == \
            (t.mixture, t.model_size, t.steps, t.checkpoints, t.attempt, t.created_at)
        if t.state not in ("queued", "running"):  # finished trials never change
            assert a.model_dump() == t.model_dump()
        was = {(m.step, tuple(sorted(m.losses.items()))) for m in t.measurements}
        assert was <= {(m.step, tuple(sorted(m.losses.items()))) for m in a.measurements}
    _assert_nothing_lost(fleet.ledger, after)
    assert study.counts["completed"] == budget and study.counts["running"] == 0
    print(f"\nserver SIGKILL: {len(before)} trials before, {len(after)} after "
          f"({study.counts['abandoned']} in flight re-run), {len(fleet.ledger.acked)} "
          "acknowledged measurements, all stored")
    for t in after:
        if t.state == "abandoned":  # in flight when the server died, its lease lapsed
            assert any(r.retry_of == t.id for r in after)


# -- 3. the database goes away -------------------------------------------------------------
class TcpProxy:
    """127.0.0.1:<port> -> PostgreSQL, in a thread; ``stop()`` is a database outage.

    The tests must not stop the real PostgreSQL cluster (other test sessions on this
    machine use it), so the server under test reaches it through this proxy instead.
    ``stop()`` closes the listening socket (new connections are refused, as from a stopped
    database) and every proxied connection (open sessions drop mid-query, as when a database
    restarts); ``start()`` listens again on the same port, as a database that came back.
    ``start(silent=True)`` accepts connections and never answers: a database behind a
    network partition, which only a client-side timeout can turn into an error.
    ``stall()`` stops forwarding bytes both ways on the open (pooled) connections without
    closing them, and holds new ones unanswered: a hung database whose kernel still
    acknowledges every packet, so neither TCP keepalives nor ``tcp_user_timeout`` fire;
    ``resume()`` forwards again, the queued bytes included.
    """

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._peers: dict[socket.socket, socket.socket] = {}
        self._held: list[socket.socket] = []  # accepted while silent, never answered
        self._silent = False
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    def url_for(self, database_url: str) -> str:
        """``database_url`` with its host:port replaced by the proxy's."""
        head, tail = database_url.split("@", 1)
        return f"{head}@127.0.0.1:{self.port}/{tail.split('/', 1)[1]}"

    def start(self, silent: bool = False) -> None:
        self._silent = silent
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(64)
        lst.setblocking(False)
        with self._lock:
            self._listener = lst
            self._sel.register(lst, selectors.EVENT_READ)

    def stall(self) -> None:
        with self._lock:
            self._silent = True
            for sock in self._peers:
                self._sel.unregister(sock)

    def resume(self) -> None:
        with self._lock:
            self._silent = False
            for sock in self._peers:
                self._sel.register(sock, selectors.EVENT_READ)
            for sock in self._held:  # their clients gave up on them long ago
                sock.close()
            self._held.clear()

    def stop(self) -> None:
        """Refuse new connections and cut every open one."""
        with self._lock:
            if self._listener is not None:
                self._sel.unregister(self._listener)
                self._listener.close()
                self._listener = None
            for sock in list(self._peers):
                self._drop(sock)
            for sock in self._held:
                sock.close()
            self._held.clear()

    def close(self) -> None:
        self.stop()
        self._closing = True
        self._wake_w.send(b"x")
        self._thread.join(10)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    @property
    def connections(self) -> int:
        return len(self._peers) // 2

    def _drop(self, sock: socket.socket) -> None:  # caller holds the lock
        other = self._peers.pop(sock, None)
        for s in (sock, other):
            if s is None:
                continue
            self._peers.pop(s, None)
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _loop(self) -> None:
        while not self._closing:
            for key, _ in self._sel.select(timeout=0.2):
                sock = key.fileobj
                with self._lock:
                    if sock is self._wake_r:
                        sock.recv(64)
                    elif sock is self._listener:
                        self._accept()
                    elif sock in self._peers:
                        self._pump(sock)

    def _accept(self) -> None:  # caller holds the lock
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        if self._silent:
            self._held.append(client)
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        for s in (client, server):
            s.setblocking(True)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peers[client], self._peers[server] = server, client
        self._sel.register(client, selectors.EVENT_READ)
        self._sel.register(server, selectors.EVENT_READ)

    def _pump(self, sock: socket.socket) -> None:  # caller holds the lock
        try:
            data = sock.recv(65536)
            if data:
                self._peers[sock].sendall(data)
                return
        except OSError:
            pass
        self._drop(sock)


def test_database_outage_is_503_then_recovers_without_restart(pg_database: str) -> None:
    """The server reaches PostgreSQL through ``TcpProxy``; the database goes away three
    times: refusing connections (3 s), silent (accepting and never answering, as behind a
    network partition), and stalled (the pooled connections stay open but no byte moves
    either way, new ones are never answered). Meanwhile every route answers 503 with a
    message saying the database is unavailable and a Retry-After header, within seconds (no
    hang, no 500); each time the server recovers by itself when the database is back (its
    pool reconnects, or the stalled connections move again); 3 agents working through the
    outages lose nothing and the study completes."""
    proxy = TcpProxy()
    proxy.start()
    budget = 8
    # MFMS_DATABASE_TIMEOUT_SECONDS: 1 s here (the default is 5 s), which makes the connect
    # timeout 2 s (libpq's least) and a statement or round trip give up after 1-1.5 s.
    timeout = 1.0
    settings = make_settings(proxy.url_for(pg_database), database_timeout_seconds=timeout,
                             background=True, maintenance_interval_seconds=0.3,
                             lease_seconds=10, next_trial_wait_seconds=1)
    try:
        with LiveServer(settings) as srv:
            api = MFMSClient(srv.url)
            s = api.create_study(study_body(strategy="random", budget_trials=budget,
                                            checkpoints=4))
            probes = [("GET", "/healthz", None), ("GET", "/studies", None),
                      ("GET", f"/studies/{s.id}/trials", None),
                      ("POST", "/next-trial", {"worker_id": "probe", "study_id": s.id}),
                      ("POST", "/trials/1/heartbeat", {"worker_id": "probe"})]
            with Fleet(srv.url, s.id, n=3, pause=0.1) as fleet, \
                    httpx.Client(base_url=srv.url, timeout=30) as http:
                for outage, done in (("refusing", 2), ("silent", 3), ("stalled", 4)):
                    wait_until(lambda done=done: api.get_study(s.id).counts["completed"] >= done,
                               60, f"{done} trials done")
                    assert proxy.connections > 0
                    if outage == "stalled":
                        pooled = proxy.connections
                        proxy.stall()
                    else:
                        proxy.stop()
                    if outage == "silent":
                        proxy.start(silent=True)
                    down_at = time.monotonic()
                    slowest = 0.0
                    # healthz and a read: a stalled pooled connection used to hold them for
                    # as long as the stall lasted
                    for method, path, body in (probes if outage == "refusing" else
                                               probes[::3] if outage == "silent" else
                                               probes[:3:2]):
                        t0 = time.monotonic()
                        r = http.request(method, path, json=body, timeout=timeout + 5)
                        took = time.monotonic() - t0
                        assert r.status_code == 503, (path, r.status_code, r.text)
                        assert r.json()["detail"].startswith("database unavailable") or \
                            r.json()["detail"].startswith("database connection lost"), r.text
                        assert int(r.headers["retry-after"]) > 0
                        # a stalled pooled connection: the round trip (T + 0.5 s), then the
                        # pre-ping's reconnect meets the connect timeout (2 s)
                        assert took < timeout + 3.0, (path, took)
                        slowest = max(slowest, took)
                    time.sleep(max(0.0, 3.0 - (time.monotonic() - down_at)))
                    if outage == "stalled":
                        proxy.resume()
                    else:
                        proxy.stop()
                        proxy.start()
                    back_at = time.monotonic()
                    wait_until(lambda: http.get("/healthz").status_code == 200, 15,
                               "the server to reconnect by itself")
                    print(f"\n{outage} database"
                          f"{f' ({pooled} pooled connections)' if outage == 'stalled' else ''}"
                          f": 503 within {slowest:.2f} s, healthy again "
                          f"{time.monotonic() - back_at:.2f} s after it returned")
                wait_until(lambda: api.get_study(s.id).state == "completed", 90,
                           "the study to complete after the outages")
                fleet.join(60)
                trials = api.list_trials(s.id)
                study = api.get_study(s.id)
    finally:
        proxy.close()
    _assert_nothing_lost(fleet.ledger, trials)
    assert study.counts["completed"] == budget
    # every checkpoint of every completed trial was delivered, outages or not
    for t in trials:
        if t.state == "completed":
            assert [m.step for m in t.measurements] == t.checkpoints, t.id


def test_postgres_connections_time_out_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without timeouts in the URL the server still sets them, all from one setting (the
    default 5 s, or ``database_timeout_seconds``): the connect timeout, the server's
    ``statement_timeout`` and TCP keepalives, so a silent database cannot hold requests
    for minutes. What the URL sets itself is kept."""
    from server import db as server_db
    from server.db import CONNECT_TIMEOUT_SECONDS, Database

    seen: dict = {}

    def capture(*_args, **cparams) -> None:
        seen.update(cparams)
        raise ConnectionAbortedError("captured")

    monkeypatch.setattr(server_db._TimedConnection, "connect", capture)

    for url, timeout, want in (
            ("postgresql://u@127.0.0.1:9/x", None,
             {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "keepalives": 1,
              "keepalives_idle": 5, "keepalives_count": 3, "tcp_user_timeout": 10000,
              "options": "-c statement_timeout=5000"}),
            ("postgresql://u@127.0.0.1:9/x?connect_timeout=7", 1.5,
             {"connect_timeout": "7", "keepalives_idle": 2, "keepalives_interval": 1,
              "options": "-c statement_timeout=1500"}),
            ("postgresql://u@127.0.0.1:9/x?options=-c%20work_mem%3D8MB", 0.5,
             {"connect_timeout": 2, "options": "-c work_mem=8MB -c statement_timeout=500"})):
        seen.clear()
        db = Database(url) if timeout is None else Database(url, timeout=timeout)
        with pytest.raises(Exception, match="captured"):
            db.engine.connect()
        db.dispose()
        assert 0 < CONNECT_TIMEOUT_SECONDS <= 10
        assert {k: seen.get(k) for k in want} == want, seen


def test_outage_mid_proposal_does_not_stall_the_study(pg_database: str) -> None:
    """The database goes away while the server is proposing: the proposer lock it took
    cannot be released then. It must be released once the database is back, not left to
    lapse after ``proposal_lock_seconds`` (30 s by default), a stall of every worker."""
    from fastapi.testclient import TestClient

    from server.app import create_app

    proxy = TcpProxy()
    proxy.start()
    app = create_app(make_settings(proxy.url_for(pg_database), next_trial_wait_seconds=0))
    proposer = app.state.proposer
    propose = proposer._propose

    def propose_then_lose_the_database(*args, **kwargs):
        proxy.stop()
        return propose(*args, **kwargs)

    try:
        with TestClient(app) as http:
            api = MFMSClient(http=http)
            s = api.create_study(study_body(strategy="random", checkpoints=2))
            proposer._propose = propose_then_lose_the_database
            r = http.post("/next-trial", json={"worker_id": "w", "study_id": s.id})
            assert r.status_code == 503 and r.headers["retry-after"], r.text
            proposer._propose = propose
            proxy.start()
            t0 = time.monotonic()
            a = api.next_trial("w", study_id=s.id)
            assert a is not None, "no proposal after the outage: the proposer lock is stuck"
            assert time.monotonic() - t0 < 5
    finally:
        proxy.close()


# -- 4. two server processes, one database -------------------------------------------------
def test_two_servers_one_database_under_load(pg_database: str) -> None:
    """Two server instances (own pool, proposer, maintenance thread) on one PostgreSQL
    database, 16 workers spread over both: the soak audit holds (no trial handed out twice,
    no acknowledged measurement or completion missing, no 5xx) and no proposal was queued
    twice. ``tests/server/test_concurrency.py`` covers the same on SQLite too."""
    settings = dict(background=True, maintenance_interval_seconds=0.3)
    with LiveServer(make_settings(pg_database, **settings)) as a, \
            LiveServer(make_settings(pg_database, **settings)) as b:
        study = MFMSClient(a.url).create_study(study_body(strategy="random", checkpoints=4))
        res = run_load([a.url, b.url], study.id, workers=16, seconds=4.0)
        trials = MFMSClient(b.url).list_trials(study.id)
    checks = audit(pg_database, study.id, res)
    assert audit_ok(checks), checks
    assert checks["trials_handed_out"] >= 8
    specs = [(tuple(sorted(t.mixture.items())), t.model_size, t.steps) for t in trials]
    assert len(specs) == len(set(specs))
    # both servers handed out work (workers soak-0, -2, ... use a; soak-1, -3, ... use b)
    served = {int(a.worker_id.split("-")[1]) % 2 for a in res.assignments}
    assert served == {0, 1}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
