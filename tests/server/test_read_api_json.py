"""Every value the read API serves back is strict JSON, whatever was accepted on the way in.

Hypothesis drives the write side with extreme but legal values (losses just inside the
study's bounds, subnormal and huge costs, deep-ish metadata, odd strings) and every read
route must then answer 200 with a body that parses with NaN and infinities forbidden: one
accepted value must never make a study unreadable (a loss of 1e300 once broke the dashboard
for good). Refused writes are fine; a 5xx or a non-JSON-safe answer is not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from server.app import create_app
from tests.server.conftest import make_settings, study_body

DOMAINS = ("code", "web", "books")
JSON = {"content-type": "application/json"}
READS = ("/studies", "/studies/{sid}", "/studies/{sid}/trials", "/studies/{sid}/export",
         "/studies/{sid}/history.json", "/studies/{sid}/dashboard",
         "/studies/{sid}/recommendation", "/trials/{tid}", "/dashboard/studies")


def _strict(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"non-JSON constant {name} in a response")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('json')}/reads.db"
    with TestClient(create_app(make_settings(url, auto_upgrade=True))) as client:
        yield client


finite = st.floats(allow_nan=False, allow_infinity=False)
loss = st.one_of(st.floats(min_value=5e-324, max_value=9999.999999), finite,
                 st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e4, 1e300]))
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), finite,
                      st.text(max_size=20))
metadata = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=12)


@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate],  # a failure is reported, not shrunk
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(losses=st.lists(st.tuples(*(loss for _ in DOMAINS)), min_size=1, max_size=3),
       cost=st.one_of(finite, st.sampled_from([5e-324, 1e15, 1e300, -1.0])),
       meta=st.dictionaries(st.text(max_size=8), metadata, max_size=3))
def test_read_api_serves_strict_json_after_any_accepted_write(http: TestClient, losses,
                                                              cost, meta) -> None:
    study = http.post("/studies", json=study_body(strategy={"name": "random"}))
    assert study.status_code == 201, study.text
    sid = study.json()["id"]
    mixture = {"code": 0.5, "web": 0.25, "books": 0.25}
    enq = http.post(f"/studies/{sid}/trials", content=json.dumps(
        {"mixture": mixture, "model_size": 20e6, "steps": 1000, "metadata": meta}),
        headers=JSON)
    assert enq.status_code in (201, 422), enq.text
    claim = http.post("/next-trial", json={"worker_id": "w", "study_id": sid})
    assert claim.status_code == 200, claim.text
    tid = claim.json()["trial_id"]
    ok = http.post(f"/trials/{tid}/measurements", json={
        "worker_id": "w", "step": 100, "losses": dict.fromkeys(DOMAINS, 2.5)})
    assert ok.status_code in (200, 201), ok.text  # the study always has something to serve
    for i, values in enumerate(losses):
        body = json.dumps({"worker_id": "w", "step": 250 * (i + 1),
                           "losses": dict(zip(DOMAINS, values, strict=True))})
        r = http.post(f"/trials/{tid}/measurements", content=body, headers=JSON)
        assert r.status_code in (200, 201, 422), r.text
    done = http.post(f"/trials/{tid}/complete",
                     content=json.dumps({"worker_id": "w", "cost": cost}), headers=JSON)
    assert done.status_code in (200, 422), done.text
    if done.status_code == 422:  # a refused cost: complete it plainly, as a worker would
        done = http.post(f"/trials/{tid}/complete", json={"worker_id": "w", "cost": 1.0})
        assert done.status_code == 200, done.text
    for path in READS:
        r = http.get(path.format(sid=sid, tid=tid))
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        _strict(r.text)
    csv = http.get(f"/studies/{sid}/history.csv")
    assert csv.status_code == 200 and "nan" not in csv.text.lower().split(",")
