"""``mfms bench``: suites, the report, the JSON with its commit and command, ``--from``."""

from __future__ import annotations

import json

import pytest

from mfms_bo.bench.suites import suite_problems
from mfms_cli.main import main
from tests.mfms_bo.bench.test_harness import PROBLEM_SRC


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
