"""``command``: run the user's own training script for each trial.

The template is split like a shell command line (``shlex``) and each word is formatted with
the trial's values, so a JSON mixture never needs quoting. Placeholders:

``{mixture_json}`` ``{mixture_file}`` ``{model_size}`` ``{steps}`` ``{checkpoints}`` (comma
separated) ``{checkpoints_json}`` ``{trial_dir}`` ``{trial_id}`` ``{study_id}`` ``{attempt}``

The script prints one JSON line per checkpoint on stdout::

    {"step": 1000, "losses": {"code": 2.31, "web": 2.87}}

optionally with ``"cost"`` (GPU-seconds so far); a line ``{"cost": 5400}`` sets the final
cost (default: wall seconds x ``gpus``). Any other output passes through to the worker's
log. A non-zero exit fails the trial with the tail of stderr as the reason.

The command runs in the directory the worker was started in, so the paths a user types
(``python examples/train_example.py``, ``--data data/``) mean what they mean in their shell;
``{trial_dir}`` (absolute, also ``$MFMS_TRIAL_DIR``) is where a trial writes its files.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import string
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from mfms_client.schemas import TrialAssignment
from workers.backends import Report

__all__ = ["CommandBackend", "PLACEHOLDERS"]

log = logging.getLogger("mfms.worker.command")

PLACEHOLDERS = ("mixture_json", "mixture_file", "model_size", "steps", "checkpoints",
                "checkpoints_json", "trial_dir", "trial_id", "study_id", "attempt")


class CommandBackend:
    name = "command"

    def __init__(self, template: str, work_dir: str | Path = "mfms-trials", gpus: float = 1.0,
                 kill_grace_seconds: float = 10.0) -> None:
        self.words = shlex.split(template)
        if not self.words:
            raise ValueError("--command: empty command template")
        for word in self.words:
            for _, field, _, _ in string.Formatter().parse(word):
                if field is not None and field not in PLACEHOLDERS:
                    raise ValueError(f"--command: unknown placeholder {{{field}}}; known: "
                                     + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS))
        self.domains: tuple[str, ...] | None = None  # a user's script: any study
        self.start_dir = Path.cwd()
        self.work_dir = (self.start_dir / work_dir).resolve()
        self.gpus = float(gpus)
        self.kill_grace_seconds = kill_grace_seconds

    def argv(self, trial: TrialAssignment, trial_dir: Path) -> list[str]:
        mixture_file = trial_dir / "mixture.json"
        values = {
            "mixture_json": json.dumps(trial.mixture), "mixture_file": str(mixture_file),
            "model_size": f"{trial.model_size:.0f}", "steps": str(trial.steps),
            "checkpoints": ",".join(str(c) for c in trial.checkpoints),
            "checkpoints_json": json.dumps(trial.checkpoints), "trial_dir": str(trial_dir),
            "trial_id": str(trial.trial_id), "study_id": str(trial.study_id),
            "attempt": str(trial.attempt),
        }
        return [w.format(**values) for w in self.words]

    def run(self, trial: TrialAssignment, report: Report) -> float:
        trial_dir = (self.work_dir / f"trial-{trial.trial_id}-{trial.attempt}").resolve()
        trial_dir.mkdir(parents=True, exist_ok=True)
        (trial_dir / "mixture.json").write_text(json.dumps(trial.mixture))
        argv = self.argv(trial, trial_dir)
        log.info("trial %d: %s", trial.trial_id, shlex.join(argv))
        env = {**os.environ, "MFMS_TRIAL_ID": str(trial.trial_id),
               "MFMS_STUDY_ID": str(trial.study_id), "MFMS_TRIAL_DIR": str(trial_dir)}
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, bufsize=1, cwd=self.start_dir, env=env)
        except OSError as exc:
            raise RuntimeError(f"cannot start {argv[0]!r}: {exc}") from exc
        tail: deque[str] = deque(maxlen=40)
        err = threading.Thread(target=_pass_through, args=(proc.stderr, tail), daemon=True)
        err.start()
        cost: float | None = None
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                parsed = _protocol_line(line)
                if parsed is None:
                    sys.stdout.write(line)
                    continue
                if "step" in parsed:
                    report(int(parsed["step"]), dict(parsed["losses"]), parsed.get("cost"))
                elif "cost" in parsed:
                    cost = float(parsed["cost"])
        except BaseException:
            self._terminate(proc)
            raise
        rc = proc.wait()
        err.join(5)
        if rc != 0:
            raise RuntimeError(f"command exited with code {rc}; stderr tail:\n"
                               + "".join(tail)[-2000:])
        return cost if cost is not None else (time.monotonic() - t0) * self.gpus

    def _terminate(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.kill_grace_seconds)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _protocol_line(line: str) -> dict | None:
    """A protocol message, or None for ordinary output. A JSON object that looks like a
    message but is malformed is an error, not silently passed through."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not ({"step", "cost"} & obj.keys()):
        return None
    if "step" in obj and not isinstance(obj.get("losses"), dict):
        raise ValueError(f"protocol line has 'step' but no 'losses' object: {text[:200]}")
    return obj


def _pass_through(stream, tail: deque) -> None:
    for line in stream:
        tail.append(line)
        sys.stderr.write(line)
