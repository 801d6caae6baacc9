"""``bench/load.py``: the audit, the ratios, and a short run with ``--baseline`` that leaves
neither a worktree nor a database file behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]




def _row(load, rps: float, p50: float, p99: float, **checks: int) -> dict:
    base = {"handed_out_twice": 0, "measurements_missing": 0, "server_errors_5xx": 0,
            "refused_4xx": 0, "transport_errors": 0}
    return {"requests_per_second": rps, "checks": base | checks,
            "endpoints": {n: {"p50_ms": p50, "p99_ms": p99} for n in load.ENDPOINTS}}


def test_ratios_are_current_over_baseline(load) -> None:
    r = load.ratios(_row(load, 100.0, 10.0, 40.0), _row(load, 500.0, 2.0, 20.0))
    assert r["requests_per_second"] == pytest.approx(5.0)
    assert r["next-trial_p50_ms"] == pytest.approx(0.2)
    assert r["measurements_p99_ms"] == pytest.approx(0.5)


@pytest.mark.parametrize("check", ["handed_out_twice", "measurements_missing",
                                   "server_errors_5xx", "refused_4xx", "transport_errors"])
def test_any_error_fails_the_audit(load, check: str) -> None:
    assert load.audit_ok(_row(load, 1.0, 1.0, 1.0))
    assert not load.audit_ok(_row(load, 1.0, 1.0, 1.0, **{check: 1}))


def _worktrees() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], check=True,
                          capture_output=True, text=True).stdout


def test_baseline_run_on_sqlite(load, tmp_path: Path) -> None:
    db = tmp_path / "load.db"
    out = tmp_path / "load.json"
    before = _worktrees()
    rc = load.main(["--database-url", f"sqlite:///{db}", "--workers", "4", "--seconds", "1.5",
                    "--checkpoints", "2", "--baseline", "HEAD", "--rounds", "2",
                    "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["baseline"]["label"].startswith("baseline ")
    assert doc["ratio"]["requests_per_second"] > 0
    for row in (doc["baseline"], doc["current"]):
        assert row["runs"] == 2
        assert row["checks"]["trials_handed_out"] > 0
        assert row["checks"]["measurements_posted"] > 0
        assert load.audit_ok(row), row["errors"]
    assert _worktrees() == before  # the baseline's checkout is gone
    assert not list(tmp_path.glob("load.db*"))  # and so is each run's database
