"""64 simulated workers against one server process on PostgreSQL: correctness under load.

The load generator and the audit are ``bench/soak.py``'s (the soak script is the long run
that reports latency and throughput; this test asserts correctness only). The server runs
as its own ``mfms serve`` process on a fresh database, with the ``random`` strategy so the
service, not the GP, is what is loaded. Afterwards the database is compared with what the
clients were acknowledged:

* every trial id was handed out exactly once (to one worker; the database names the same
  worker), and the database holds no claim that no client received;
* every measurement a worker got a 2xx for is stored, with bit-identical losses;
* every acknowledged completion is stored; no trial is left running;
* no 5xx answer and no transport error.
"""

from __future__ import annotations

import httpx

from bench.soak import ServerProcess, audit, audit_ok, run_load, study_body, summarize

WORKERS = 64
SECONDS = 10.0


def test_64_workers_one_server_nothing_lost_nothing_doubled(pg_database: str) -> None:
    with ServerProcess(pg_database) as srv:
        study = httpx.post(f"{srv.url}/studies", json=study_body(checkpoints=4),
                           timeout=60).raise_for_status().json()
        res = run_load(srv.url, study["id"], workers=WORKERS, seconds=SECONDS)
        log = srv.log_tail()
    checks = audit(pg_database, study["id"], res)
    summary = summarize(res)
    assert not res.errors, (res.errors[:5], log)
    assert audit_ok(checks), (checks, log)
    # the run did real work (sized loosely: the machine's 2 cores are shared), and every
    # trial handed out was finished
    assert len({a.worker_id for a in res.assignments}) >= WORKERS // 2, summary["statuses"]
    assert checks["trials_handed_out"] >= WORKERS // 2
    assert checks["completions_acknowledged"] == checks["trials_handed_out"]
    assert checks["measurements_acknowledged"] == 4 * checks["trials_handed_out"]
