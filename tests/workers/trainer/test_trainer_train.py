"""The training loop for real, at the tiny preset on a CPU, and its sampling and schedule."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from workers.trainer.train import (
    EVAL_TOKENS_MAX,
    EVAL_TOKENS_MIN,
    MixtureBatches,
    default_eval_tokens,
    lr_at,
    train_trial,
    warmup_steps,
)

FAST = dict(batch_size=4, seq_len=64, eval_tokens=1024, progress=False)


def test_batches_follow_the_mixture_per_batch_and_over_time() -> None:
    weights = {"a": 0.55, "b": 0.3, "c": 0.12, "d": 0.03, "e": 0.0}
    tokens = {d: np.full(10_000, i, dtype=np.uint16) for i, d in enumerate(weights)}
    batches = MixtureBatches(tokens, weights, batch_size=8, seq_len=16, seed=0)
    w = np.array([0.55, 0.3, 0.12, 0.03])
    seen = np.zeros(4)
    for n in range(1, 201):
        x, y = batches.next_batch()
        assert x.shape == y.shape == (8, 16) and (x[:, 1:] == y[:, :-1]).all()
        counts = np.bincount(x[:, 0].numpy(), minlength=5)
        assert counts[4] == 0  # weight 0: never trained on
        assert (np.abs(counts[:4] - 8 * w) < 1).all()  # floor or ceiling of each quota
        seen += counts[:4]
        assert (np.abs(seen - n * 8 * w) <= 1.5).all()  # the 3% domain gets its 3%
    assert seen[3] == pytest.approx(0.03 * 1600, abs=1)


def test_domains_repeat_only_when_exhausted_and_say_so(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    tokens = {"a": np.arange(5 * 4 + 1, dtype=np.uint16)}  # exactly 5 windows of 4
    batches = MixtureBatches(tokens, {"a": 1.0}, batch_size=5, seq_len=4, seed=0)
    with caplog.at_level(logging.INFO, logger="mfms.trainer"):
        first = sorted(batches.next_batch()[0][:, 0].tolist())
        assert first == [0, 4, 8, 12, 16] and not caplog.records  # each window once
        batches.next_batch()
        batches.next_batch()
    assert len([r for r in caplog.records if "repeating" in r.message]) == 2  # once a pass


def test_schedule() -> None:
    assert warmup_steps(5) == 1 and warmup_steps(300) == 30 and warmup_steps(10**6) == 1000
    lrs = [lr_at(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1) and max(lrs) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))


def test_train_trial_learns_every_domain(example_dir: Path, three_domains: list[str]) -> None:
    a, b, c = three_domains
    mixture = {a: 0.6, b: 0.4, c: 0.0}  # c is not trained on but still evaluated
    reports: list[tuple[int, dict[str, float], float | None]] = []
    cost = train_trial(example_dir, mixture, 1e5, 80, [0, 40, 80],
                       lambda *r: reports.append(r), **FAST)
    assert [r[0] for r in reports] == [0, 40, 80]
    assert all(set(losses) == {a, b, c} for _, losses, _ in reports)
    for d in mixture:
        assert reports[-1][1][d] < reports[0][1][d] - 0.5, d
    costs = [r[2] for r in reports]
    assert 0 < costs[0] < costs[1] < costs[2] <= cost


def test_train_trial_is_reproducible(example_dir: Path, three_domains: list[str]) -> None:
    mixture = dict(zip(three_domains, [0.2, 0.3, 0.5], strict=True))

    def run() -> dict[str, float]:
        out: list = []
        train_trial(example_dir, mixture, 1e5, 4, [4], lambda *r: out.append(r), seed=3,
                    **FAST)
        return out[0][1]

    assert run() == run()


def test_missing_domain_is_a_clear_error(example_dir: Path, three_domains: list[str]) -> None:
    a = three_domains[0]
    with pytest.raises(ValueError, match=rf"'web' has weight 0.5 .*domains there: .*{a}"):
        train_trial(example_dir, {a: 0.5, "web": 0.5}, 1e5, 2, [2], lambda *r: None, **FAST)
    # Weight 0 and no data: nothing to train or evaluate, so it is just not reported.
    out: list = []
    train_trial(example_dir, {a: 1.0, "web": 0.0}, 1e5, 2, [2], lambda *r: out.append(r),
                **FAST)
    assert set(out[0][1]) == {a}
    with pytest.raises(ValueError, match="checkpoints"):
        train_trial(example_dir, {a: 1.0}, 1e5, 2, [3], lambda *r: None, **FAST)


def test_default_eval_tokens_scale_with_the_run() -> None:
    """A short run evaluates little (the floor), a long one the cap, and in between a
    quarter of the tokens trained between checkpoints, shared by the domains."""

    assert default_eval_tokens(200, 4, 32 * 512, 5) == int(0.25 * 50 * 32 * 512 / 5)
    assert default_eval_tokens(20, 4, 4 * 64, 3) == EVAL_TOKENS_MIN
    assert default_eval_tokens(100_000, 8, 32 * 512, 2) == EVAL_TOKENS_MAX
    assert EVAL_TOKENS_MIN < default_eval_tokens(200, 4, 32 * 512, 5) < EVAL_TOKENS_MAX


def test_progress_bar_says_when_it_evaluates(example_dir, capsys) -> None:
    """The bar's label reads 'evaluating' while a checkpoint is evaluated, so a long
    evaluation is not mistaken for a frozen run."""
    steps: list[int] = []
    train_trial(example_dir, {"python": 0.5, "prose": 0.5}, 1e6, 4, [0, 4],
                lambda step, losses, cost, *rest: steps.append(step),
                device="cpu", batch_size=2, seq_len=32, eval_tokens=256, compile=False,
                progress=True)
    err = capsys.readouterr().err
    assert "evaluating" in err and steps == [0, 4]
