"""Aioli and the simple controllers, driven by a synthetic linear mixing law."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mfms_bo.online import (
    Aioli,
    Static,
    Stratified,
    controller_from_spec,
    egd_step,
    normalize_interaction,
    smoothed_one_hot,
    unsmooth,
)

DOMAINS = ["code", "web", "books", "math"]


def run_linear_law(ctl, A: np.ndarray, steps: int, noise: float = 0.0, seed: int = 0,
                   start: int = 0, loss: np.ndarray | None = None) -> np.ndarray:
    """Train ``steps`` steps where each step lowers the losses by ``A @ p`` (+ noise)."""
    rng = np.random.default_rng(seed)
    L = np.full(A.shape[0], 5.0) if loss is None else loss
    for step in range(start, start + steps):
        if ctl.needs_losses(step):
            ctl.observe(step, dict(zip(ctl.domains, L, strict=True)))
        p = np.array(list(ctl.mixture(step).values()))
        L = L - A @ p - noise * rng.standard_normal(A.shape[0])
    return L


def random_interaction(k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1e-3 * (np.eye(k) * rng.uniform(2, 5, k) + rng.uniform(-0.3, 1.0, (k, k)))


@pytest.mark.parametrize("one_hot_factor", [1.0, 0.75, 0.5])
def test_learn_params_recovers_a_known_interaction_matrix(one_hot_factor: float) -> None:
    k = 4
    A = random_interaction(k, 1)
    ctl = Aioli(DOMAINS, update_steps=100, lp_rounds=4, lp_steps=4,
                one_hot_factor=one_hot_factor, seed=3)
    run_linear_law(ctl, A, 100, noise=2e-5)
    step, A_hat = ctl.interactions[0]
    assert step == ctl.sweep_steps == 4 * 4 * 4
    # Stated tolerance: 10% of A's largest entry with noise sd 2% of it per step.
    assert np.abs(np.array(A_hat) - A).max() < 0.1 * np.abs(A).max()


def test_learn_params_is_exact_without_noise() -> None:
    A = random_interaction(3, 7)
    ctl = Aioli(DOMAINS[:3], update_steps=50, lp_rounds=2, lp_steps=3, one_hot_factor=0.6)
    run_linear_law(ctl, A, 50)
    np.testing.assert_allclose(np.array(ctl.interactions[0][1]), A, rtol=1e-9, atol=1e-12)


def test_unsmooth_inverts_the_smoothed_probes() -> None:
    A = random_interaction(5, 2)
    S = np.stack([smoothed_one_hot(5, j, 0.7) for j in range(5)])
    np.testing.assert_allclose(unsmooth(A @ S.T, 0.7), A, atol=1e-14)


def test_egd_update_matches_the_formula() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.4])
    A = random_interaction(4, 5)
    q = egd_step(p, A, 0.7)
    expected = p * np.exp(0.7 * A.sum(axis=0))
    np.testing.assert_allclose(q, expected / expected.sum(), rtol=1e-12)
    # Huge steps do not overflow.
    assert np.isfinite(egd_step(p, A * 1e6, 1e3)).all()


def test_controller_update_is_the_egd_step_on_normalised_a() -> None:
    A = random_interaction(4, 9)
    ctl = Aioli(DOMAINS, eta=0.3, update_steps=80, lp_rounds=1, lp_steps=5,
                one_hot_factor=1.0)
    p0 = np.array(list(ctl.proportions.values()))
    run_linear_law(ctl, A, ctl.sweep_steps + 1)
    A_hat = np.array(ctl.interactions[0][1])
    expected = egd_step(p0, normalize_interaction(A_hat), 0.3 * 4)  # eta scaled by k
    np.testing.assert_allclose(list(ctl.proportions.values()), expected, rtol=1e-12)


def test_ema_form_is_relative_to_its_base() -> None:
    A = random_interaction(4, 4)
    ctl = Aioli(DOMAINS, eta=0.5, update_steps=40, lp_rounds=1, lp_steps=2,
                one_hot_factor=1.0, ema=0.3, eta_scale="none")
    run_linear_law(ctl, A, 120)  # three rounds
    As = [normalize_interaction(np.array(a)) for _, a in ctl.interactions]
    ema = As[0]
    for a in As[1:]:
        ema = 0.7 * a + 0.3 * ema
    np.testing.assert_allclose(list(ctl.proportions.values()),
                               egd_step(np.full(4, 0.25), ema, 0.5), rtol=1e-12)


def test_cumulative_updates_move_towards_the_domain_that_helps_everyone() -> None:
    k = 4
    A = 1e-3 * np.eye(k)
    A[:, 2] += 2e-3  # training on "books" lowers every loss
    ctl = Aioli(DOMAINS, eta=0.2, update_steps=100, lp_rounds=2, lp_steps=4)
    run_linear_law(ctl, A, 1000, noise=1e-5)
    p = ctl.proportions
    assert max(p, key=p.get) == "books"
    assert p["books"] > 0.6  # it moved well beyond the reference run's 0.24-0.27


@pytest.mark.parametrize("seed", range(5))
def test_proportions_always_stay_on_the_simplex(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 7))
    ctl = Aioli([f"d{i}" for i in range(k)], eta=float(rng.uniform(0.01, 5)),
                update_steps=k * 4 + 10, lp_rounds=1, lp_steps=4,
                one_hot_factor=float(rng.uniform(1.0 / k + 0.01, 1.0)),
                normalize_A=bool(rng.integers(2)), ema=[None, 0.3][int(rng.integers(2))],
                min_weight=0.01)
    A = rng.normal(0, 1e-2, (k, k))
    L = np.full(k, 5.0)
    for step in range(300):
        if ctl.needs_losses(step):
            ctl.observe(step, {d: float(v) for d, v in zip(ctl.domains, L, strict=True)})
        p = np.array(list(ctl.mixture(step).values()))
        assert np.all(p >= 0) and abs(p.sum() - 1) < 1e-12
        L = L - A @ p + rng.normal(0, 1e-3, k)
        q = np.array(list(ctl.proportions.values()))
        assert np.all(q >= 0.01 - 1e-12) and abs(q.sum() - 1) < 1e-12


def test_the_sweep_consumes_the_stated_steps() -> None:
    ctl = Aioli(DOMAINS, update_steps=100, lp_rounds=3, lp_steps=5, one_hot_factor=0.75,
                prior={"code": 0.4, "web": 0.3, "books": 0.2, "math": 0.1}, prior_steps=50)
    A = random_interaction(4, 0)
    L = np.full(4, 5.0)
    probes: list[int] = []
    for step in range(250):
        if ctl.needs_losses(step):
            ctl.observe(step, dict(zip(DOMAINS, L, strict=True)))
        w = ctl.mixture(step)
        if step < 50:
            assert w == {"code": 0.4, "web": 0.3, "books": 0.2, "math": 0.1}
        top = max(w.values())
        if step >= 50 and (step - 50) % 100 < 60:
            assert top == pytest.approx(0.75)
            probes.append(int(np.argmax(list(w.values()))))
        L = L - A @ np.array(list(w.values()))
    # 2 rounds after the prior, each with a sweep of 3 x 4 x 5 = 60 steps.
    assert len(probes) == 2 * 60
    first = probes[:60]
    assert sorted(first[::5]) == sorted([0, 1, 2, 3] * 3)  # every domain probed 3 times
    assert all(len(set(first[i:i + 5])) == 1 for i in range(0, 60, 5))  # 5 steps per probe
    assert len(ctl.interactions) == 2


def test_state_round_trips_and_resumes_identically() -> None:
    A = random_interaction(4, 11)
    kwargs = dict(eta=0.4, update_steps=60, lp_rounds=2, lp_steps=3, ema=0.2, seed=5)
    whole = Aioli(DOMAINS, **kwargs)
    L_whole = run_linear_law(whole, A, 200)

    first = Aioli(DOMAINS, **kwargs)
    L_half = run_linear_law(first, A, 110)  # stops mid-sweep of round 2
    state = json.loads(json.dumps(first.state_dict()))
    resumed = Aioli(DOMAINS, **kwargs)
    resumed.load_state_dict(state)
    L_resumed = run_linear_law(resumed, A, 90, start=110, loss=L_half)
    np.testing.assert_allclose(L_resumed, L_whole, rtol=0, atol=1e-12)
    assert resumed.proportions == whole.proportions
    assert resumed.trajectory == whole.trajectory
    with pytest.raises(ValueError, match="stratified"):
        Stratified(DOMAINS).load_state_dict(state)


def test_simple_controllers() -> None:
    s = Stratified(DOMAINS)
    assert s.mixture(0) == dict.fromkeys(DOMAINS, 0.25)
    assert not s.needs_losses(0)
    st = Static(["a", "b"], {"a": 0.3, "b": 0.7})
    assert st.mixture(10) == {"a": 0.3, "b": 0.7}
    assert st.average_proportions == {"a": 0.3, "b": 0.7}


def test_average_proportions_include_the_probes() -> None:
    ctl = Aioli(["a", "b"], update_steps=20, lp_rounds=1, lp_steps=5, one_hot_factor=1.0)
    for step in range(10):  # the whole sweep: 5 steps on a, 5 on b
        ctl.mixture(step)
    assert ctl.average_proportions == pytest.approx({"a": 0.5, "b": 0.5})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"eta": 0.0}, "eta must be"),
    ({"eta": -1.0}, "eta must be"),
    ({"eta": float("nan")}, "eta must be"),
    ({"update_steps": 10}, "LearnParams sweep"),
    ({"one_hot_factor": 0.2}, "one_hot_factor"),
    ({"prior": {"code": 0.5, "web": 0.6}}, "sum to 1"),
    ({"prior": {"code": -0.5, "web": 1.5}}, "must be >= 0"),
    ({"prior": {"cod": 1.0}}, "unknown domain"),
    ({"prior_steps": 10}, "needs a prior"),
    ({"ema": 1.5}, "ema"),
    ({"eta_scale": "sqrt"}, "eta_scale"),
])
def test_bad_configuration_is_a_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Aioli(DOMAINS, **kwargs)


def test_bad_observations_and_domains_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="at least one domain"):
        Aioli([])
    with pytest.raises(ValueError, match="unique"):
        Stratified(["a", "a"])
    ctl = Aioli(DOMAINS)
    good = dict.fromkeys(DOMAINS, 3.0)
    with pytest.raises(ValueError, match="unknown domain"):
        ctl.observe(0, {**good, "legal": 2.0})
    with pytest.raises(ValueError, match="missing"):
        ctl.observe(0, {"code": 1.0})
    with pytest.raises(ValueError, match="non-finite"):
        ctl.observe(0, {**good, "web": float("nan")})
    with pytest.raises(ValueError, match="step"):
        ctl.mixture(-1)


def test_controller_from_spec() -> None:
    mix = {"code": 0.1, "web": 0.2, "books": 0.3, "math": 0.4}
    ctl = controller_from_spec(DOMAINS, {"method": "aioli", "eta": 0.5, "update_steps": 100},
                               mixture=mix)
    assert isinstance(ctl, Aioli) and ctl.proportions == pytest.approx(mix)
    assert controller_from_spec(DOMAINS, {"method": "static"}, mixture=mix).proportions == \
        pytest.approx(mix)
    assert isinstance(controller_from_spec(DOMAINS, {"method": "stratified"}), Stratified)
    with pytest.raises(ValueError, match="online.method"):
        controller_from_spec(DOMAINS, {"method": "doremi"})
    with pytest.raises(ValueError, match="unknown option"):
        controller_from_spec(DOMAINS, {"method": "aioli", "etaa": 1})
    with pytest.raises(ValueError, match="eta must be"):
        controller_from_spec(DOMAINS, {"method": "aioli", "eta": "big"})
