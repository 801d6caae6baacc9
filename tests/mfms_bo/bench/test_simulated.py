"""The simulated problems' noise must be reproducible across processes (benchmarks run in
worker processes and are compared across runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_SNIPPET = (
    "import json; from mfms_bo.bench.problems import simulated_problems; "
    "p = simulated_problems()['sim-k3']; "
    "print(json.dumps(p.evaluate({d: 1 / 3 for d in p.domains}, 20e6, 4000, seed=7)))"
)


def _evaluate_in_process(hash_seed: str) -> list:
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", _SNIPPET], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def test_evaluate_is_identical_across_processes() -> None:
    assert _evaluate_in_process("1") == _evaluate_in_process("2")
