"""``TorchBackend`` against a hand-built trial assignment."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mfms_client.schemas import TrialAssignment
from workers.backends import Backend
from workers.backends.torch_backend import TorchBackend

FAST = dict(batch_size=4, seq_len=64, eval_tokens=512, progress=False)


def _trial(mixture: dict[str, float], loss_domains: list[str]) -> TrialAssignment:
    return TrialAssignment(trial_id=7, study_id=1, mixture=mixture, model_size=2e5, steps=12,
                           checkpoints=[6, 12], lease_seconds=60.0,
                           lease_expires_at=datetime.now(UTC), attempt=1,
                           loss_domains=loss_domains)


def test_run_reports_the_study_domains(example_dir: Path, three_domains: list[str]) -> None:
    a, b, c = three_domains
    backend: Backend = TorchBackend(example_dir, device="cpu", **FAST)
    assert backend.name == "torch"
    reports: list = []
    cost = backend.run(_trial({a: 0.7, b: 0.3}, [a, b]), lambda *r: reports.append(r))
    assert [r[0] for r in reports] == [6, 12] and cost > 0
    assert all(set(r[1]) == {a, b} for r in reports)
    # A study that evaluates on other sets: exactly those names (the server rejects others),
    # leaving out the ones this data directory does not have.
    reports.clear()
    backend.run(_trial({a: 0.7, b: 0.3}, [c, "held-out-elsewhere"]),
                lambda *r: reports.append(r))
    assert all(set(r[1]) == {c} for r in reports)


def test_bad_setup_fails_at_start(tmp_path: Path, example_dir: Path) -> None:
    with pytest.raises(ValueError, match="no prepared domains"):
        TorchBackend(tmp_path)
    with pytest.raises(TypeError, match="unknown option"):
        TorchBackend(example_dir, batchsize=3)


def test_run_with_an_online_spec_refines_the_trial_mixture(example_dir: Path,
                                                          three_domains: list[str]) -> None:
    from workers.backends import BackendResult

    a, b, c = three_domains
    mixture = {a: 0.5, b: 0.3, c: 0.2}
    trial = _trial(mixture, [a, b, c]).model_copy(update={
        "steps": 24, "checkpoints": [12, 24],
        "online": {"method": "aioli", "update_steps": 12, "lp_rounds": 1, "lp_steps": 2,
                   "eta": 0.5}})
    reports: list = []
    out = TorchBackend(example_dir, device="cpu", controller_eval_tokens=128,
                       **FAST).run(trial, lambda *r: reports.append(r))
    assert isinstance(out, BackendResult) and out.cost > 0
    final = out.online["final_proportions"]
    assert set(final) == set(mixture) and abs(sum(final.values()) - 1) < 1e-9
    assert final != pytest.approx(mixture)  # Aioli started from the mixture and moved it
    assert set(out.online["average_proportions"]) == set(mixture)
    assert reports[-1][3] == final  # checkpoints carry the proportions in use
