"""Bad input: the API fuzzed from its own OpenAPI schema, the library validators under
hypothesis, and absurd requests over real HTTP.

1. Schemathesis (4.x Python API, ``schemathesis.openapi.from_asgi``) generates schema-valid
   and schema-violating requests for every operation and sends them to the ASGI app
   in-process, on SQLite seeded with a study, a running trial with measurements and a
   completed one (real ids, so requests get past the 404s). Checks: no 5xx, and every answer
   conforms to the schema - status code documented, body valid against its response schema,
   content type and headers as declared, schema-violating requests refused with a 4xx.
   Left out: ``positive_data_acceptance`` (a schema-valid request may still be refused: the
   schema cannot say "domain names are not blank" or what an export document holds), and
   string *formats* in responses: every timestamp is naive UTC without an offset, which the
   schema's ``date-time`` (RFC 3339) does not allow - a known gap of the contract, kept as
   is because clients already parse these values as naive datetimes.
   Bounded (``MAX_EXAMPLES`` per operation, no deadline) and derandomised, so a CI run is
   reproducible; ``MFMS_FUZZ_EXAMPLES`` raises the count for a longer local run.
2. Hypothesis properties of ``MixtureSpace.validate``, ``FidelitySpace.validate`` and
   ``validate_losses``: valid inputs are accepted (and round-trip exactly), each kind of bad
   one is rejected with ``mfms_bo.errors.ValidationError`` naming the field.
3. Absurd requests to a live server: each is a clear 4xx, promptly, with bounded memory.
"""

from __future__ import annotations

import math
import os
import re
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from mfms_bo.errors import ValidationError
from mfms_bo.space import FidelitySpace, MixtureSpace
from mfms_bo.trials import validate_losses
from mfms_client.client import MFMSClient
from server import migrate
from server.app import create_app
from tests.server.conftest import LiveServer, fake_losses, make_settings, study_body

MAX_EXAMPLES = int(os.environ.get("MFMS_FUZZ_EXAMPLES", "20"))
SEED = 20240607

# The operations, read from the schema itself (no database is touched to build it).
_SPEC = create_app(make_settings("sqlite://")).openapi()
OPERATIONS = [f"{method.upper()} {path}" for path, ops in _SPEC["paths"].items()
              for method in ops]
TALLY: Counter = Counter()  # (operation, status) -> requests sent


# -- 1. schemathesis ----------------------------------------------------------------------
def _uniform_tuples_as_items(node):
    """The schema with each ``prefixItems`` tuple whose members all share one schema (our
    ``(lo, hi)`` bounds and credible intervals, two numbers) written as the equivalent
    ``items`` + ``minItems == maxItems``. Schemathesis 4.x rewrites ``prefixItems`` into a
    Draft-4 tuple and then rejects its own rewrite as an invalid response schema
    (schemathesis issues #3842 and #4099); the server's schema is valid OpenAPI 3.1."""
    if isinstance(node, list):
        return [_uniform_tuples_as_items(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _uniform_tuples_as_items(v) for k, v in node.items()}
    prefix = out.get("prefixItems")
    if prefix and all(p == prefix[0] for p in prefix) and "items" not in out \
            and out.get("minItems") == out.get("maxItems") == len(prefix):
        out["items"] = out.pop("prefixItems")[0]
    return out


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/fuzz.db"
    migrate.upgrade(url)
    app = create_app(make_settings(url, next_trial_wait_seconds=0))
    from fastapi.testclient import TestClient

    with TestClient(app) as http:  # runs the lifespan (schema check) and seeds real ids
        api = MFMSClient(http=http)
        study = api.create_study(study_body(strategy={"name": "random"}, seed=0,
                                            budget={"trials": 50}))
        done = api.next_trial("seed-done", study_id=study.id)
        for step in done.checkpoints:
            api.post_measurement(done.trial_id, step, fake_losses(done.mixture, step))
        api.complete_trial(done.trial_id, cost=1.0)
        running = api.next_trial("seed-running", study_id=study.id)
        api.post_measurement(running.trial_id, running.checkpoints[0],
                             fake_losses(running.mixture, running.checkpoints[0]))
        ids = {"study_id": study.id, "trial_id": running.trial_id}
        config = schemathesis.Config.from_dict({
            "seed": SEED,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True,
                           "database": "none"},
            "checks": {"positive_data_acceptance": {"enabled": False},
                       # timestamps are naive UTC ("2026-01-01T12:00:00.5", no offset);
                       # RFC 3339 "date-time" wants one: see the module docstring
                       "response_schema_conformance": {"validate-formats": False}},
        })
        schema = schemathesis.openapi.from_dict(_uniform_tuples_as_items(app.openapi()),
                                                config=config)
        schema.app = app  # what from_asgi does: cases are sent to the app in-process
        yield schema, ids
    total = sum(TALLY.values())
    by_class = Counter()
    for (_, status), n in TALLY.items():
        by_class[f"{status // 100}xx"] += n
    print(f"\nfuzzed {total} requests over {len(OPERATIONS)} operations: {dict(by_class)}")


@pytest.mark.parametrize("label", OPERATIONS)
def test_fuzz_operation_no_5xx_and_schema_conformant(fuzzed: tuple, label: str) -> None:
    schema, ids = fuzzed
    method, path = label.split(" ", 1)
    op = schema[path][method]
    fixed = {k: v for k, v in ids.items() if "{" + k + "}" in path}
    strategies = [op.as_strategy(GenerationMode.POSITIVE),
                  op.as_strategy(GenerationMode.NEGATIVE)]
    if fixed:  # half the schema-valid requests aim at ids that exist
        strategies.append(op.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed))

    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies))
    def check(case) -> None:
        response = case.call()
        TALLY[(label, response.status_code)] += 1
        assert response.status_code < 500, (response.status_code, response.text[:500])
        case.validate_response(response)

    check()


# -- 2. the library's validators ----------------------------------------------------------
HYP = settings(max_examples=60, deadline=None, derandomize=True, database=None)
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                max_size=12).filter(lambda s: s.strip() != "")


@st.composite
def mixture_case(draw) -> tuple[MixtureSpace, dict[str, float]]:
    """A space of 2-8 domains and a valid mixture on it (some weights exactly 0)."""
    doms = draw(st.lists(names, min_size=2, max_size=8, unique=True))
    raw = draw(st.lists(st.one_of(st.just(0.0), st.floats(1e-6, 1e6)),
                        min_size=len(doms), max_size=len(doms)))
    if sum(raw) == 0:
        raw[0] = 1.0
    total = math.fsum(raw)
    return MixtureSpace(tuple(doms)), {d: r / total for d, r in zip(doms, raw, strict=True)}


@HYP
@given(case=mixture_case())
def test_valid_mixtures_accepted_and_round_trip(case) -> None:
    space, mixture = case
    w = space.validate(mixture)
    assert space.to_dict(w) == mixture  # exact: validation never rescales
    assert space.validate(space.to_dict(w)).tolist() == w.tolist()
    partial = {d: v for d, v in mixture.items() if v > 0}  # absent domains weigh 0
    assert space.to_dict(space.validate(partial)) == mixture


@HYP
@given(case=mixture_case(), factor=st.one_of(st.floats(0.0, 0.999), st.floats(1.001, 1e6)))
def test_mixtures_not_summing_to_one_rejected(case, factor: float) -> None:
    space, mixture = case
    with pytest.raises(ValidationError, match="mixture"):
        space.validate({d: v * factor for d, v in mixture.items()})


@HYP
@given(case=mixture_case(), i=st.integers(0, 7),
       bad=st.sampled_from([-1e-3, -1.0, -1e308, math.nan, math.inf, -math.inf]))
def test_negative_and_non_finite_weights_rejected(case, i: int, bad: float) -> None:
    space, mixture = case
    d = space.domains[i % space.k]
    with pytest.raises(ValidationError, match=re.escape(f"mixture[{d!r}]")):
        space.validate({**mixture, d: bad})


@HYP
@given(case=mixture_case(), extra=names)
def test_unknown_domains_rejected(case, extra: str) -> None:
    space, mixture = case
    if extra in space.domains:
        return
    with pytest.raises(ValidationError, match="unknown domain"):
        space.validate({**mixture, extra: 0.0})


@HYP
@given(k=st.integers(2, 6), cap=st.floats(0.2, 0.9), seed=st.integers(0, 2**31 - 1))
def test_bounds_enforced(k: int, cap: float, seed: int) -> None:
    """With every weight capped at ``cap``, samples are accepted; moving mass onto one
    domain beyond its cap is rejected, naming that domain."""
    import torch

    cap = max(cap, 1.0 / k + 1e-3)
    doms = tuple(f"d{i}" for i in range(k))
    space = MixtureSpace(doms, bounds={d: (0.0, cap) for d in doms})
    w = space.sample(1, torch.Generator().manual_seed(seed))[0]
    ok = space.to_dict(w)
    space.validate(ok)
    over = {d: 0.0 for d in doms}
    over["d0"] = min(1.0, cap + 0.05)
    over["d1"] = 1.0 - over["d0"]
    if over["d0"] > cap + 1e-9:
        with pytest.raises(ValidationError, match=r"mixture\['d0'\].*outside its bounds"):
            space.validate(over)


LADDER = (20e6, 60e6, 150e6)
FID = FidelitySpace(model_sizes=LADDER, steps_min=500, steps_max=4000, target_model_size=1e9)


@HYP
@given(size=st.one_of(st.sampled_from(LADDER), st.floats(allow_nan=True, allow_infinity=True),
                      st.sampled_from([m * (1 + 1e-12) for m in LADDER] + [1e308, 0.0, -20e6])),
       steps=st.one_of(st.integers(-10**12, 10**12), st.integers(400, 4100),
                       st.floats(allow_nan=True, allow_infinity=True)))
def test_fidelity_validate_accepts_exactly_the_ladder_and_range(size: float, steps) -> None:
    whole = isinstance(steps, int) or (math.isfinite(steps) and steps == int(steps))
    valid = size in LADDER and whole and 500 <= steps <= 4000
    if valid:
        FID.validate(size, steps)
    else:
        with pytest.raises(ValidationError, match="model_size|steps"):
            FID.validate(size, steps)


@HYP
@given(losses=st.dictionaries(st.sampled_from(["code", "web", "books", "nope", ""]),
                              st.floats(allow_nan=True, allow_infinity=True), max_size=5))
def test_validate_losses_accepts_exactly_known_finite_non_negative(losses) -> None:
    known = ("code", "web", "books")
    valid = bool(losses) and all(k in known and math.isfinite(v) and v >= 0
                                 for k, v in losses.items())
    if valid:
        assert validate_losses(losses, known) == losses
    else:
        with pytest.raises(ValidationError, match="losses"):
            validate_losses(losses, known)


# -- 3. absurd requests over HTTP ---------------------------------------------------------
@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, dict]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('absurd')}/absurd.db"
    migrate.upgrade(url)
    with LiveServer(make_settings(url, next_trial_wait_seconds=0)) as srv:
        api = MFMSClient(srv.url)
        s = api.create_study(study_body(strategy={"name": "random"}, seed=0))
        a = api.next_trial("w", study_id=s.id)
        yield srv.url, s.id, {"trial_id": a.trial_id, "mixture": a.mixture}


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def _absurd(study_id: int, trial: dict) -> list[tuple[str, str, dict]]:
    t = trial["trial_id"]
    study = study_body(strategy={"name": "random"})
    return [
        ("model_size 1e308", f"/studies/{study_id}/trials",
         {"json": {"mixture": trial["mixture"], "model_size": 1e308, "steps": 1000}}),
        ("ladder with 1e308", "/studies", {"json": {**study, "model_sizes": [20e6, 1e308]}}),
        ("steps 10**12", "/studies",
         {"json": {**study, "steps": {"min": 1, "max": 10**12}}}),
        ("measurement at step 10**12", f"/trials/{t}/measurements",
         {"json": {"step": 10**12, "losses": {"code": 1.0}}}),
        ("10**4 domains", "/studies",
         {"json": {**study, "domains": [f"d{i}" for i in range(10**4)]}}),
        ("losses with 10**4 keys", f"/trials/{t}/measurements",
         {"json": {"step": 1, "losses": {f"k{i}": 1.0 for i in range(10**4)}}}),
        ("5 MB body", "/studies",
         {"content": b" " * (5 * 2**20), "headers": {"content-type": "application/json"}}),
        ("5 MB body streamed without a length", "/studies",
         {"content": (b" " * 2**16 for _ in range(80)),
          "headers": {"content-type": "application/json"}}),
        ("JSON nested 100000 deep", "/studies",
         {"content": _nested(100_000), "headers": {"content-type": "application/json"}}),
        ("arrays nested 400000 deep", "/next-trial",
         {"content": b"[" * 400_000 + b"]" * 400_000,
          "headers": {"content-type": "application/json"}}),
        ("an integer of 5000 digits", "/next-trial",
         {"content": b'{"worker_id": "w", "study_id": ' + b"9" * 5000 + b"}",
          "headers": {"content-type": "application/json"}}),
        ("study id beyond 64 bits", "/next-trial",
         {"json": {"worker_id": "w", "study_id": 2**64}}),
        ("NaN and Infinity literals", f"/trials/{t}/measurements",
         {"content": b'{"step": 1, "losses": {"code": NaN, "web": Infinity}}',
          "headers": {"content-type": "application/json"}}),
        ("not UTF-8", "/studies",
         {"content": b"\xff\xfe\x00{", "headers": {"content-type": "application/json"}}),
    ]


def test_absurd_requests_are_clear_4xx_with_bounded_memory(live: tuple) -> None:
    base, study_id, trial = live
    outcomes = {}
    with httpx.Client(base_url=base, timeout=30) as http:
        for label, path, kwargs in _absurd(study_id, trial):
            tracemalloc.start()
            t0 = time.monotonic()
            r = http.post(path, **kwargs)
            took = time.monotonic() - t0
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            outcomes[label] = (r.status_code, r.json().get("detail", "")[:80], took, peak)
            assert 400 <= r.status_code < 500, (label, r.status_code, r.text[:300])
            assert r.json()["detail"], label
            assert took < 10, (label, took)
            # a 5 MB body is refused before it is read: nothing near its size is held
            assert peak < 32 * 2**20, (label, peak)
        # the server is still healthy after all of it
        assert http.get("/healthz").status_code == 200
    assert outcomes["5 MB body"][0] == 413
    assert outcomes["5 MB body streamed without a length"][0] == 413
    # the detail names the field at fault
    for label, field in (("model_size 1e308", "model_size"), ("ladder with 1e308", "model_sizes"),
                         ("steps 10**12", "steps.max"), ("measurement at step 10**12", "step"),
                         ("10**4 domains", "domains"), ("losses with 10**4 keys", "losses"),
                         ("study id beyond 64 bits", "study_id")):
        status, detail = outcomes[label][:2]
        assert status == 422 and detail.startswith(field), (label, outcomes[label])
