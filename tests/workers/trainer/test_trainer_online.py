"""Online mixing inside the built-in trainer: the controller steers every batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from mfms_bo.online import Aioli, Static
from workers.trainer.train import MixtureBatches, train_trial

FAST = dict(batch_size=4, seq_len=64, eval_tokens=1024, progress=False,
            controller_eval_tokens=256)


def test_aioli_in_the_trainer_probes_updates_and_reports(example_dir: Path,
                                                         three_domains: list[str]) -> None:
    mixture = dict(zip(three_domains, [0.5, 0.3, 0.2], strict=True))
    ctl = Aioli(three_domains, eta=0.5, update_steps=20, lp_rounds=1, lp_steps=2,
                prior=mixture)
    served: list[dict[str, float]] = []
    original = ctl.mixture

    def spy(step: int) -> dict[str, float]:
        served.append(original(step))
        return served[-1]

    ctl.mixture = spy  # type: ignore[method-assign]
    reports: list[tuple] = []
    stats: dict[str, float] = {}
    train_trial(example_dir, mixture, 1e5, 40, [0, 20, 40], lambda *r: reports.append(r),
                controller=ctl, stats=stats, **FAST)
    assert len(served) == 40
    # Two rounds: each begins with a 6-step sweep (1 x 3 domains x 2 steps) of one-hots.
    assert all(max(w.values()) == pytest.approx(0.75) for w in served[0:6] + served[20:26])
    assert len(ctl.interactions) == 2  # LearnParams ran in both rounds
    assert [s for s, _ in ctl.trajectory] == [0, 6, 26]
    # Checkpoint reports carry the controller's proportions.
    assert all(len(r) == 4 and set(r[3]) == set(three_domains) for r in reports)
    assert reports[-1][3] == ctl.proportions
    assert ctl.proportions != pytest.approx(mixture)  # it moved
    assert stats["controller_eval_seconds"] > 0 and stats["train_seconds"] > 0


def test_static_controller_equals_the_plain_run(example_dir: Path,
                                                three_domains: list[str]) -> None:
    mixture = dict(zip(three_domains, [0.2, 0.3, 0.5], strict=True))
    plain: list = []
    train_trial(example_dir, mixture, 1e5, 6, [6], lambda *r: plain.append(r), seed=1,
                **FAST)
    online: list = []
    train_trial(example_dir, mixture, 1e5, 6, [6], lambda *r: online.append(r), seed=1,
                controller=Static(three_domains, mixture), **FAST)
    assert online[0][1] == plain[0][1]


def test_controller_over_unknown_domains_is_a_clear_error(example_dir: Path,
                                                         three_domains: list[str]) -> None:
    a, b = three_domains[:2]
    with pytest.raises(ValueError, match="not in the trial's mixture"):
        train_trial(example_dir, {a: 1.0}, 1e5, 2, [2], lambda *r: None,
                    controller=Static([a, b], {a: 0.5, b: 0.5}), **FAST)
    with pytest.raises(ValueError, match="no prepared data"):
        train_trial(example_dir, {a: 1.0, "web": 0.0}, 1e5, 2, [2], lambda *r: None,
                    controller=Static([a, "web"], {a: 1.0, "web": 0.0}), **FAST)


def test_set_weights_switches_the_mixture_exactly() -> None:
    import numpy as np

    tokens = {d: np.full(5_000, i, dtype=np.uint16) for i, d in enumerate("abc")}
    batches = MixtureBatches(tokens, {"a": 1.0, "b": 1.0, "c": 1.0}, 8, 16, 0)
    batches.set_weights({"a": 0.75, "b": 0.25, "c": 0.0})
    x, _ = batches.next_batch()
    assert np.bincount(x[:, 0].numpy(), minlength=3).tolist() == [6, 2, 0]
    with pytest.raises(ValueError, match="no training data"):
        batches.set_weights({"z": 1.0})
