"""``bench/recommendation_replay.py``: a saved run's searches replayed under other
recommendation rules, with the surrogate the run was made with."""

from __future__ import annotations

from mfms_bo.bench.harness import load_problem, run_one


def test_replay_scores_each_rule_on_the_run_s_own_trials(replay_module, monkeypatch):
    """Every replayed fit scores each risk on the trials the run made, and the strategy is
    rebuilt with the options the run had plus the problem's own (a table's prior)."""
    run = run_one(load_problem("sim-k3"), "mfms-bo", 0, budget=float("inf"), max_trials=9)
    saved = run.to_json()
    built: list[dict] = []
    real = replay_module.make_strategy

    def spy(name, space, seed, options=None):
        built.append(options or {})
        return real(name, space, seed=seed, options=options)

    monkeypatch.setattr(replay_module, "make_strategy", spy)
    options = {"surrogate": {"mean": "scaling_law"}}
    rules = [(0.0, "absolute"), (1.0, "best_run"), (1.0, "incumbent")]
    curves = replay_module.replay(saved, rules, every=4, options=options)
    assert built == [options]
    costs = [t["cumulative_cost"] for t in saved["trials"]]
    for curve in curves:
        # fits at trials 0, 4 and 8 (the last) where the surrogate can be fitted
        assert [c for c, _ in curve] == [costs[i] for i in (0, 4, 8)][-len(curve):]
        assert len(curve) >= 2
        assert all(v >= run.optimum - 1e-9 for _, v in curve)
