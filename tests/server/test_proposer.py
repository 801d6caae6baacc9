"""The proposer: a strategy that raises is replaced by a random proposal, and the failure
shows on the study (API and dashboard data) until a proposal succeeds again."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from mfms_bo.strategies import RandomSearch
from mfms_client.client import MFMSClient
from server.app import create_app
from tests.server.conftest import make_settings, study_body


def test_strategy_failure_is_recorded_on_the_study(db_url: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(make_settings(db_url))
    with TestClient(app) as http:
        api = MFMSClient(http=http)
        s = api.create_study(study_body(strategy={"name": "random"}))
        fresh = api.get_study(s.id)
        assert fresh.last_proposal_error is None and fresh.proposal_failures == 0

        def boom(*_args, **_kwargs):
            raise RuntimeError("surrogate <b>exploded</b>")

        # The fallback calls RandomSearch.propose; only the strategy's path raises.
        monkeypatch.setattr(RandomSearch, "proposal", boom)
        assert api.next_trial("w", study_id=s.id) is not None  # a random trial all the same
        failed = api.get_study(s.id)
        assert failed.last_proposal_error == "RuntimeError: surrogate <b>exploded</b>"
        assert failed.last_proposal_error_at is not None and failed.proposal_failures == 1
        listed = {st.id: st for st in api.list_studies()}[s.id]
        assert listed.last_proposal_error == failed.last_proposal_error
        dash = http.get(f"/studies/{s.id}/dashboard").json()["study"]["proposal_error"]
        assert dash["message"] == failed.last_proposal_error and dash["failures"] == 1

        assert app.state.proposer.top_up(s.id, want=1).made == 1  # fails again
        assert api.get_study(s.id).proposal_failures == 2

        monkeypatch.undo()
        assert app.state.proposer.top_up(s.id, want=1).made == 1  # the strategy works again
        healed = api.get_study(s.id)
        assert healed.last_proposal_error is None and healed.last_proposal_error_at is None
        assert healed.proposal_failures == 2  # the count stays
        dash = http.get(f"/studies/{s.id}/dashboard").json()["study"]["proposal_error"]
        assert dash["message"] is None and dash["failures"] == 2


def test_study_page_shows_the_proposal_error_as_text() -> None:
    """The study page writes the error with ``textContent`` (the message is the strategy's
    exception text, which may hold anything)."""
    from pathlib import Path

    import server.dashboard

    root = Path(server.dashboard.__file__).parent
    assert 'id="proposal-error"' in (root / "templates" / "study.html").read_text()
    js = (root / "static" / "app.js").read_text()
    body = js[js.index("function drawProposalError"):].split("\n}\n", 1)[0]
    assert "p.textContent =" in body and "innerHTML" not in body
    assert "drawProposalError(s.proposal_error)" in js
