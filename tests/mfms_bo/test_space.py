"""Tests for mfms_bo.space: validation, sampling, projection, fidelity encoding."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mfms_bo.errors import MFMSError, ValidationError
from mfms_bo.space import FidelitySpace, MixtureSpace, SearchSpace, project_to_simplex

HYP = settings(max_examples=40, deadline=None)


# -- hypothesis strategies ----------------------------------------------------------------
@st.composite
def feasible_bounds(draw, min_k: int = 2, max_k: int = 6):
    """Per-domain ``(lo, hi)`` with ``sum lo <= 1 <= sum hi``: built around a feasible point
    ``w`` as ``lo = a * w``, ``hi = w + b * (1 - w)`` with ``a, b`` in ``[0, 1]``."""
    k = draw(st.integers(min_k, max_k))
    raw = draw(st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k))
    if sum(raw) <= 1e-6:
        raw = [1.0] * k
    w = [r / sum(raw) for r in raw]
    unit = st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0))
    a = draw(st.lists(unit, min_size=k, max_size=k))
    b = draw(st.lists(unit, min_size=k, max_size=k))
    lo = [min(1.0, wi * ai) for wi, ai in zip(w, a, strict=True)]
    hi = [min(1.0, max(l_, wi + bi * (1.0 - wi))) for l_, wi, bi in zip(lo, w, b, strict=True)]
    return lo, hi


def _space_from(lo: list[float], hi: list[float]) -> MixtureSpace:
    doms = tuple(f"d{i}" for i in range(len(lo)))
    return MixtureSpace(doms, bounds={d: (l_, h) for d, l_, h in zip(doms, lo, hi, strict=True)})


# -- MixtureSpace: construction ----------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"domains": ("a",)}, "domains"),
        ({"domains": ()}, "domains"),
        ({"domains": ("a", "b", "a")}, "domains: names must be unique"),
        ({"domains": ("a", "")}, "domains: invalid domain name"),
        ({"domains": ("a", "b"), "bounds": {"z": (0.0, 1.0)}},
         "mixture_bounds: unknown domain 'z'"),
        ({"domains": ("a", "b"), "bounds": {"a": (0.6, 0.4)}}, r"mixture_bounds\['a'\]"),
        ({"domains": ("a", "b"), "bounds": {"a": (-0.1, 0.4)}}, r"mixture_bounds\['a'\]"),
        ({"domains": ("a", "b"), "bounds": {"b": (0.0, 1.5)}}, r"mixture_bounds\['b'\]"),
        ({"domains": ("a", "b"), "bounds": {"a": (float("nan"), 0.5)}}, r"mixture_bounds\['a'\]"),
        ({"domains": ("a", "b"), "bounds": {"a": (0.6, 1.0), "b": (0.5, 1.0)}},
         "lower bounds sum above 1"),
        ({"domains": ("a", "b", "c"), "bounds": {"a": (0, 0.3), "b": (0, 0.3), "c": (0, 0.3)}},
         "upper bounds sum below 1"),
    ],
)
def test_mixture_space_rejects_bad_construction(kwargs, match):
    with pytest.raises(ValidationError, match=match):
        MixtureSpace(**kwargs)


def test_validation_error_is_library_and_value_error():
    with pytest.raises(MFMSError):
        MixtureSpace(("a",))
    with pytest.raises(ValueError):
        MixtureSpace(("a",))


def test_mixture_space_defaults_and_bounds():
    ms = MixtureSpace(["x", "y", "z"], bounds={"y": (0.1, 0.5)})
    assert ms.domains == ("x", "y", "z") and ms.k == 3
    assert ms.lower.tolist() == [0.0, 0.1, 0.0]
    assert ms.upper.tolist() == [1.0, 0.5, 1.0]
    assert ms.lower.dtype == torch.float64


# -- MixtureSpace.validate -----------------------------------------------------------------
@pytest.fixture
def bounded() -> MixtureSpace:
    return MixtureSpace(("a", "b", "c"), bounds={"a": (0.1, 0.6)})


@pytest.mark.parametrize(
    "mixture, match",
    [
        ({"a": 0.3, "b": 0.3, "c": 0.3}, "mixture: weights must sum to 1"),
        ({"a": 0.5, "b": 0.7, "c": -0.2}, r"mixture\['c'\]: weights must be >= 0"),
        ({"a": float("nan"), "b": 0.5, "c": 0.5}, r"mixture\['a'\]: must be finite"),
        ({"a": 0.2, "b": float("inf"), "c": 0.0}, r"mixture\['b'\]: must be finite"),
        ({"a": 0.5, "b": 0.5, "zz": 0.0}, r"mixture: unknown domain\(s\) \['zz'\]"),
        ({"a": 0.05, "b": 0.5, "c": 0.45}, r"mixture\['a'\]=0.05 is outside its bounds"),
        ({"a": 0.7, "b": 0.3}, r"mixture\['a'\]=0.7 is outside its bounds"),
        ({"a": "x", "b": 0.5, "c": 0.5}, r"mixture\['a'\]: not a number"),
        ({"a": None, "b": 0.5, "c": 0.5}, r"mixture\['a'\]: not a number"),
    ],
)
def test_validate_rejects_bad_mixtures(bounded, mixture, match):
    with pytest.raises(ValidationError, match=match):
        bounded.validate(mixture)


def test_validate_names_the_field(bounded):
    with pytest.raises(ValidationError, match=r"^recommendation: weights must sum"):
        bounded.validate({"a": 0.5, "b": 0.1, "c": 0.1}, field_name="recommendation")
    with pytest.raises(ValidationError, match="recommendation: must be an object"):
        bounded.validate([0.5, 0.5], field_name="recommendation")  # type: ignore[arg-type]


def test_validate_accepts_partial_and_exact_bounds(bounded):
    w = bounded.validate({"a": 0.6, "b": 0.4})  # missing domain -> 0
    assert w.tolist() == pytest.approx([0.6, 0.4, 0.0])
    w = bounded.validate({"a": 0.1, "b": 0.45, "c": 0.45 + 5e-7})  # within the sum tolerance
    assert w.dtype == torch.float64 and w.shape == (3,)
    assert bounded.to_dict(w) == pytest.approx({"a": 0.1, "b": 0.45, "c": 0.45 + 5e-7})


# -- sampling and projection --------------------------------------------------------------
@HYP
@given(bounds=feasible_bounds(), seed=st.integers(0, 2**31 - 1),
       conc=st.sampled_from([0.2, 1.0, 5.0]))
def test_sample_feasible_for_random_bounds(bounds, seed, conc):
    lo, hi = bounds
    ms = _space_from(lo, hi)
    g = torch.Generator().manual_seed(seed)
    W = ms.sample(64, g, concentration=conc)
    assert W.shape == (64, ms.k)
    assert torch.isfinite(W).all()
    assert torch.all((W.sum(-1) - 1.0).abs() <= 1e-9)
    assert torch.all(W >= ms.lower - 1e-12)
    assert torch.all(W <= ms.upper + 1e-12)


def test_sample_unseeded_and_reproducible(mixtures3):
    W = mixtures3.sample(200)
    assert torch.allclose(W.sum(-1), torch.ones(200, dtype=torch.float64))
    assert (W >= 0).all()
    a = mixtures3.sample(5, torch.Generator().manual_seed(3))
    b = mixtures3.sample(5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # Dirichlet(1) on 3 coordinates: each marginal has mean 1/3.
    big = mixtures3.sample(4000, torch.Generator().manual_seed(0))
    assert torch.allclose(big.mean(0), torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.03)


@HYP
@given(bounds=feasible_bounds(), seed=st.integers(0, 2**31 - 1),
       scale=st.sampled_from([0.1, 1.0, 10.0]))
def test_project_to_simplex_exact_and_idempotent(bounds, seed, scale):
    lo, hi = (torch.tensor(b, dtype=torch.float64) for b in bounds)
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(32, lo.numel(), generator=g, dtype=torch.float64) * scale
    W = project_to_simplex(V, lo, hi)
    assert torch.all(W >= lo) and torch.all(W <= hi)  # bounds hold exactly
    assert torch.all((W.sum(-1) - 1.0).abs() <= 1e-9)
    W2 = project_to_simplex(W, lo, hi)
    assert torch.allclose(W2, W, atol=1e-9, rtol=0)


def test_project_is_euclidean_projection():
    """Unbounded simplex projection agrees with the sort-based closed form."""
    g = torch.Generator().manual_seed(1)
    V = torch.randn(50, 5, generator=g, dtype=torch.float64)
    lo, hi = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    W = project_to_simplex(V, lo, hi)
    # Duchi et al. (2008).
    U = torch.sort(V, dim=-1, descending=True).values
    css = U.cumsum(-1) - 1.0
    idx = torch.arange(1, 6, dtype=torch.float64)
    rho = ((U - css / idx) > 0).sum(-1, keepdim=True)
    theta = css.gather(-1, rho - 1) / rho
    expected = (V - theta).clamp(min=0)
    assert torch.allclose(W, expected, atol=1e-9)
    # A feasible point is its own projection.
    P = torch.tensor([[0.2, 0.3, 0.5, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(project_to_simplex(P, lo, hi), P, atol=1e-12)


# -- FidelitySpace -------------------------------------------------------------------------
def _fid(**kw) -> FidelitySpace:
    base = dict(model_sizes=(20e6, 60e6), steps_min=500, steps_max=4000,
                target_model_size=60e6, checkpoints=4)
    base.update(kw)
    return FidelitySpace(**base)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"model_sizes": ()}, "model_sizes"),
        ({"model_sizes": (20e6, float("nan"))}, "model_sizes"),
        ({"model_sizes": (20e6, 1e308)}, "model_sizes"),
        ({"model_sizes": (20e6, float("inf"))}, "model_sizes"),
        ({"model_sizes": (20e6, -1.0)}, "model_sizes"),
        ({"model_sizes": (20e6, 20e6)}, "model_sizes: duplicate"),
        ({"target_model_size": float("nan")}, "model_sizes"),
        ({"target_model_size": 1e308}, "model_sizes"),
        ({"target_model_size": 1e6}, "target.model_size"),
        ({"steps_max": 10**12}, "steps"),
        ({"steps_min": 0}, "steps"),
        ({"steps_min": 5000}, "steps"),
        ({"target_steps": 100}, "target.steps"),
        ({"target_steps": 10**12}, "target.steps"),
        ({"checkpoints": 0}, "checkpoints"),
        ({"checkpoints": 5000}, "checkpoints"),
    ],
)
def test_fidelity_space_rejects_bad_construction(kw, match):
    with pytest.raises(ValidationError, match=match):
        _fid(**kw)


def test_fidelity_space_normalises():
    f = _fid(model_sizes=[60e6, 20e6], target_model_size=1e9)
    assert f.model_sizes == (20e6, 60e6)
    assert f.target_steps == 4000
    assert f.largest_runnable == 60e6


@pytest.mark.parametrize(
    "size, steps, match",
    [
        (30e6, 1000, "model_size"),
        (float("nan"), 1000, "model_size"),
        (1e308, 1000, "model_size"),
        (20e6, 499, "steps"),
        (20e6, 4001, "steps"),
        (20e6, 10**12, "steps"),
        (20e6, -5, "steps"),
    ],
)
def test_fidelity_validate_rejects(size, steps, match):
    with pytest.raises(ValidationError, match=match):
        _fid().validate(size, steps)


@pytest.mark.parametrize("steps", [float("nan"), float("inf")])
def test_fidelity_validate_non_finite_steps(steps):
    with pytest.raises(ValidationError, match="steps"):
        _fid().validate(20e6, steps)


def test_fidelity_validate_accepts_ladder():
    f = _fid()
    for m in f.model_sizes:
        for z in (f.steps_min, 1234, f.steps_max):
            f.validate(m, z)


@HYP
@given(size_i=st.integers(0, 2), steps=st.integers(500, 4000))
def test_fidelity_encode_decode_round_trip(size_i, steps):
    f = _fid(model_sizes=(20e6, 60e6, 150e6), target_model_size=1e9, target_steps=8000)
    m = torch.tensor([f.model_sizes[size_i]], dtype=torch.float64)
    z = torch.tensor([float(steps)], dtype=torch.float64)
    F = f.encode(m, z)
    assert F.shape == (1, 2)
    assert torch.all(F >= 0) and torch.all(F <= 1)
    m2, z2 = f.decode(F)
    assert float(m2[0]) == pytest.approx(float(m[0]), rel=1e-9)
    assert float(z2[0]) == float(steps)  # steps come back as exact integers


def test_decode_rounds_steps(fidelities):
    F = fidelities.encode(torch.tensor([20e6]), torch.tensor([1234.4]))
    _, z = fidelities.decode(F)
    assert float(z[0]) == 1234.0


def test_target_beyond_ladder_encodes_beyond_largest():
    f = _fid(target_model_size=1e9, target_steps=8000)
    big = f.encode(torch.tensor([f.largest_runnable]), torch.tensor([float(f.steps_max)]))[0]
    t = f.target_encoding()
    assert t.shape == (2,)
    assert float(t[0]) >= float(big[0]) and float(t[1]) >= float(big[1])
    assert float(t[0]) == pytest.approx(1.0) and float(big[0]) < 1.0
    # The smallest runnable fidelity is the origin.
    low = f.encode(torch.tensor([20e6]), torch.tensor([500.0]))[0]
    assert low.tolist() == pytest.approx([0.0, 0.0], abs=1e-12)


def test_single_size_single_steps_encoding_is_finite():
    f = FidelitySpace(model_sizes=(1e8,), steps_min=1000, steps_max=1000, target_model_size=1e8)
    F = f.encode(torch.tensor([1e8]), torch.tensor([1000.0]))
    assert torch.isfinite(F).all()
    m, z = f.decode(F)
    assert float(m[0]) == pytest.approx(1e8) and float(z[0]) == 1000.0


@HYP
@given(steps=st.integers(1, 10**7), checkpoints=st.integers(1, 40))
def test_checkpoint_steps(steps, checkpoints):
    f = FidelitySpace(model_sizes=(1e7,), steps_min=1, steps_max=10**7,
                      target_model_size=1e7, checkpoints=checkpoints)
    cs = f.checkpoint_steps(steps)
    assert cs[-1] == steps
    assert all(isinstance(c, int) for c in cs)
    assert all(a < b for a, b in zip(cs, cs[1:], strict=False))
    assert 1 <= len(cs) <= checkpoints
    assert cs[0] >= 1
    if steps >= checkpoints:
        assert len(cs) == checkpoints


# -- SearchSpace ---------------------------------------------------------------------------
def test_search_space_encode_decode_round_trip(space3):
    g = torch.Generator().manual_seed(0)
    W = space3.mixtures.sample(10, g)
    m = torch.tensor([20e6, 60e6, 150e6, 20e6, 60e6, 150e6, 20e6, 60e6, 150e6, 20e6])
    z = torch.tensor([500.0, 4000.0, 1000.0, 2500.0, 777.0, 3999.0, 500.0, 501.0, 1200.0, 4000.0])
    X = space3.encode(W, m, z)
    assert X.shape == (10, space3.dim) and space3.dim == 5
    assert X.dtype == torch.float64
    W2, m2, z2 = space3.decode(X)
    assert torch.allclose(W2, W)
    assert torch.allclose(m2, m.double(), rtol=1e-9)
    assert torch.equal(z2, z.double())


def test_target_inputs(space3):
    W = space3.mixtures.sample(4, torch.Generator().manual_seed(1))
    X = space3.target_inputs(W)
    assert X.shape == (4, 5)
    assert torch.equal(X[:, :3], W)
    assert torch.allclose(X[:, 3:], space3.fidelities.target_encoding().expand(4, 2))


def test_objective_weights(mixtures3, fidelities):
    s = SearchSpace(mixtures3, fidelities)
    assert s.objective_weights == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    s = SearchSpace(mixtures3, fidelities, objective_weights={"a": 2, "b": 0})
    assert s.objective_weights == {"a": 2.0, "b": 0.0}
    with pytest.raises(ValidationError, match=r"objective_weights: unknown domain\(s\) \['q'\]"):
        SearchSpace(mixtures3, fidelities, objective_weights={"a": 1.0, "q": 1.0})
    for bad in ({"a": -1.0}, {"a": 0.0, "b": 0.0}, {"a": float("nan")}, {"a": float("inf")}):
        with pytest.raises(ValidationError, match="objective_weights"):
            SearchSpace(mixtures3, fidelities, objective_weights=bad)


def test_loss_domains(mixtures3, fidelities):
    s = SearchSpace(mixtures3, fidelities, objective_weights={"val1": 0.5, "val2": 0.5},
                    loss_domains=["val1", "val2", "val3"])
    assert s.loss_domains == ("val1", "val2", "val3")
    assert s.reported_domains == ("val1", "val2", "val3")
    s = SearchSpace(mixtures3, fidelities, loss_domains=("v1", "v2"))
    assert s.objective_weights == {"v1": 0.5, "v2": 0.5}
    # With separate loss domains, weights must name them, not the training domains.
    with pytest.raises(ValidationError, match="objective_weights"):
        SearchSpace(mixtures3, fidelities, objective_weights={"a": 1.0}, loss_domains=("v1",))
    assert SearchSpace(mixtures3, fidelities).reported_domains == ("a", "b", "c")


def test_candidates(mixtures3, fidelities):
    C = [[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]
    s = SearchSpace(mixtures3, fidelities, candidates=C)  # type: ignore[arg-type]
    assert isinstance(s.candidates, torch.Tensor) and s.candidates.dtype == torch.float64
    assert torch.equal(s.mixture_candidates(100), s.candidates)
    for bad in ([[0.5, 0.5]], torch.zeros(0, 3), [0.2, 0.3, 0.5]):
        with pytest.raises(ValidationError, match="candidates"):
            SearchSpace(mixtures3, fidelities, candidates=bad)  # type: ignore[arg-type]
    s = SearchSpace(mixtures3, fidelities)
    assert s.mixture_candidates(7).shape == (7, 3)


def test_infinite_target_size_rejected():
    with pytest.raises(ValidationError):
        _fid(target_model_size=math.inf)
