"""``mfms bench``: suites, the report, the JSON with its commit and command, ``--from``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mfms_bo.bench.suites import suite_problems
from mfms_cli.main import main
from tests.mfms_bo.bench.test_harness import PROBLEM_SRC


def test_bench_lists_every_strategy_without_importing_torch():
    """The CLI spells the strategy names out so that building its parser stays torch-free
    (``mfms worker`` or ``mfms study`` start in well under a second); the list must still be
    the library's."""
    from mfms_bo.strategies import STRATEGIES
    from mfms_cli.bench import _ALL_STRATEGIES

    assert sorted(_ALL_STRATEGIES) == sorted(STRATEGIES)
    code = ("import sys, mfms_cli.main as m; m.build_parser(); "
            "print(sorted(k for k in ('torch', 'botorch', 'sqlalchemy', 'fastapi') "
            "if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_suites():
    standard = suite_problems("standard")
    assert {"regmix-60m", "mixinglaws-5mix", "mixinglaws-redpajama"} <= set(standard)
    assert sum(p.startswith("scale-") for p in standard) >= 4
    assert suite_problems("easy") == ["sim-k3", "sim-k5", "sim-k6-extrap", "sim-k8-extrap"]
    with pytest.raises(ValueError, match="unknown suite 'nope'; known: \\['easy', 'standard'\\]"):
        suite_problems("nope")


def test_bench_writes_report_json_and_plot_and_rebuilds_from_json(tmp_path, capsys):
    src = tmp_path / "mfms_cli_problem.py"
    src.write_text(PROBLEM_SRC)
    out = tmp_path / "runs.json"
    argv = ["bench", "--problem", f"{src}:PROBLEM", "--strategies", "uniform,random",
            "--seeds", "3", "--workers", "1", "--budget", "0.05", "--json", str(out),
            "--report", str(tmp_path / "table.md"), "--plot", str(tmp_path / "gap.png")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| tiny | uniform |" in printed and "| tiny | random |" in printed
    doc = json.loads(out.read_text())
    assert doc["command"].startswith("mfms bench") and "commit" in doc
    assert {r["strategy"] for r in doc["runs"]} == {"uniform", "random"}
    assert len(doc["runs"]) == 6
    random_run = next(r for r in doc["runs"] if r["strategy"] == "random")
    assert random_run["trials"] and random_run["budget"] == 0.05
    assert (tmp_path / "table.md").read_text().strip() in printed
    assert (tmp_path / "gap.png").stat().st_size > 1000
    # The same tables from the saved runs, without running anything.
    assert main(["bench", "--from", str(out), "--report", str(tmp_path / "again.md")]) == 0
    assert (tmp_path / "again.md").read_text() == (tmp_path / "table.md").read_text()


def test_first_seed_extends_a_table_with_the_same_runs(tmp_path, capsys):
    """``--first-seed 2 --seeds 1`` is seed 2 of a ``--seeds 3`` table, run for run: a table
    can grow by seeds without rerunning those it has."""
    src = tmp_path / "mfms_cli_problem.py"
    src.write_text(PROBLEM_SRC)

    def runs(*extra: str) -> list[dict]:
        out = tmp_path / f"runs{len(extra)}.json"
        argv = ["bench", "--problem", f"{src}:PROBLEM", "--strategies", "random",
                "--workers", "1", "--budget", "0.05", "--json", str(out), *extra]
        assert main(argv) == 0
        return json.loads(out.read_text())["runs"]

    three = runs("--seeds", "3")
    extra = runs("--seeds", "1", "--first-seed", "2")
    assert [r["seed"] for r in three] == [0, 1, 2] and [r["seed"] for r in extra] == [2]
    assert extra[0]["trials"] == three[2]["trials"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["bench", "--problem", f"{src}:PROBLEM", "--first-seed", "-1"])
    assert "first-seed" in capsys.readouterr().err


def test_from_joins_seeds_run_apart_and_refuses_a_run_twice(tmp_path, capsys):
    """Seeds run apart with ``--first-seed`` join into the table of one ``--seeds`` run, and
    ``--json`` writes the joined runs; a run two files both hold (two configurations under
    one strategy name, most likely) is refused rather than counted twice."""
    src = tmp_path / "mfms_cli_problem.py"
    src.write_text(PROBLEM_SRC)
    base = ["bench", "--problem", f"{src}:PROBLEM", "--strategies", "random", "--workers", "1",
            "--budget", "0.05"]
    assert main([*base, "--seeds", "3", "--json", str(tmp_path / "all.json"),
                 "--report", str(tmp_path / "all.md")]) == 0
    assert main([*base, "--seeds", "2", "--json", str(tmp_path / "a.json")]) == 0
    assert main([*base, "--seeds", "1", "--first-seed", "2", "--json",
                 str(tmp_path / "b.json")]) == 0
    capsys.readouterr()
    assert main(["bench", "--from", str(tmp_path / "a.json"), "--from", str(tmp_path / "b.json"),
                 "--report", str(tmp_path / "joined.md"),
                 "--json", str(tmp_path / "joined.json")]) == 0
    assert (tmp_path / "joined.md").read_text() == (tmp_path / "all.md").read_text()
    joined = json.loads((tmp_path / "joined.json").read_text())
    whole = json.loads((tmp_path / "all.json").read_text())
    assert [r["seed"] for r in joined["runs"]] == [0, 1, 2]
    assert [r["trials"] for r in joined["runs"]] == [r["trials"] for r in whole["runs"]]
    assert joined["commit"] == whole["commit"]
    with pytest.raises(SystemExit, match="seed 0 is in both"):
        main(["bench", "--from", str(tmp_path / "a.json"), "--from", str(tmp_path / "all.json")])


def test_a_stopped_benchmark_keeps_the_runs_it_finished(tmp_path, capsys, monkeypatch):
    """``--json`` is saved after every run, so a suite stopped part-way (a killed job, a
    lost machine) keeps what it finished, and ``--from`` reports on it."""
    from mfms_bo.bench import harness

    src = tmp_path / "mfms_cli_problem.py"
    src.write_text(PROBLEM_SRC)
    out = tmp_path / "runs.json"
    real_run_job = harness._run_job
    calls = []

    def stop_at_the_third(job):
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_run_job(job)

    monkeypatch.setattr(harness, "_run_job", stop_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        main(["bench", "--problem", f"{src}:PROBLEM", "--strategies", "random", "--workers",
              "1", "--budget", "0.05", "--seeds", "4", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert [r["seed"] for r in saved["runs"]] == [0, 1]
    assert saved["summary"] is None and saved["command"].startswith("mfms bench")
    assert not (tmp_path / "runs.json.tmp").exists()
    monkeypatch.setattr(harness, "_run_job", real_run_job)
    capsys.readouterr()
    assert main(["bench", "--from", str(out)]) == 0
    assert "random" in capsys.readouterr().out
