"""The ``command`` backend end to end: the example script, failures, bad templates."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mfms_client.client import MFMSClient
from workers.agent import WorkerAgent
from workers.backends.command import CommandBackend

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_example.py"
TEMPLATE = (f"{sys.executable} {EXAMPLE} --mixture {{mixture_json}} --model-size "
            "{model_size} --steps {steps} --checkpoints {checkpoints} --out {trial_dir}")


def _study(api: MFMSClient, trials: int) -> int:
    return api.create_study(name="cmd", domains=["code", "web", "books"],
                            model_sizes=[20e6, 60e6], steps={"min": 100, "max": 1000},
                            target={"model_size": 150e6}, checkpoints=4,
                            strategy={"name": "random"}, budget={"trials": trials}).id


def test_example_script_runs_trials(api: MFMSClient, tmp_path) -> None:
    sid = _study(api, 2)
    agent = WorkerAgent(api, CommandBackend(TEMPLATE, tmp_path / "work"), "w", study_id=sid,
                        poll_min=0.01, poll_max=0.05, echo=lambda _: None)
    assert agent.run() == 2
    for t in api.list_trials(sid):
        assert t.state == "completed"
        assert [m.step for m in t.measurements] == t.checkpoints
        assert set(t.measurements[0].losses) == {"code", "web", "books"}
        assert t.cost == pytest.approx(1e-9 * t.model_size * t.steps)  # the script's cost
        assert (tmp_path / "work" / f"trial-{t.id}-1" / "mixture.json").exists()


def test_failing_command_fails_the_trial_with_stderr(api: MFMSClient, tmp_path) -> None:
    sid = _study(api, 1)
    script = tmp_path / "bad.py"
    script.write_text("import sys\nprint('{\"step\": 25, \"losses\": {\"code\": 3.0}}', "
                      "flush=True)\nsys.stderr.write('CUDA error: out of memory\\n')\n"
                      "sys.exit(3)\n")
    agent = WorkerAgent(api, CommandBackend(f"{sys.executable} {script}", tmp_path),
                        "w", study_id=sid, echo=lambda _: None)
    assert agent.run_trial(api.next_trial("w", study_id=sid)) is False
    t = api.list_trials(sid)[0]
    assert t.state == "failed" and "exited with code 3" in t.fail_reason
    assert "CUDA error: out of memory" in t.fail_reason
    assert [m.step for m in t.measurements] == [25]  # reported before dying: kept


def test_malformed_protocol_line_fails_the_trial(api: MFMSClient, tmp_path) -> None:
    sid = _study(api, 1)
    script = tmp_path / "odd.py"
    script.write_text("print('{\"step\": 5}')\n")
    agent = WorkerAgent(api, CommandBackend(f"{sys.executable} {script}", tmp_path),
                        "w", study_id=sid, echo=lambda _: None)
    agent.run_trial(api.next_trial("w", study_id=sid))
    t = api.list_trials(sid)[0]
    assert t.state == "failed" and "no 'losses' object" in t.fail_reason


def test_bad_templates_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match=r"unknown placeholder \{mixture\}"):
        CommandBackend("train.py --mix {mixture}")
    with pytest.raises(ValueError, match="empty"):
        CommandBackend("   ")


def test_readme_template_with_relative_paths_runs_from_the_start_directory(
        api: MFMSClient, tmp_path, monkeypatch) -> None:
    """The README's example, copied as is (a path relative to the repository root), works
    when the worker starts in the repository root: the command runs there, not in the
    trial's folder."""
    monkeypatch.chdir(EXAMPLE.parents[1])
    template = (f"{sys.executable} examples/train_example.py --mixture {{mixture_json}} "
                "--model-size {model_size} --steps {steps} --checkpoints {checkpoints} "
                "--out {trial_dir}")
    backend = CommandBackend(template, tmp_path / "work")
    monkeypatch.chdir(tmp_path)  # later changes of directory do not move the command
    sid = _study(api, 1)
    agent = WorkerAgent(api, backend, "w", study_id=sid, poll_min=0.01, poll_max=0.05,
                        echo=lambda _: None)
    assert agent.run() == 1
    (t,) = api.list_trials(sid)
    assert t.state == "completed", t.fail_reason
