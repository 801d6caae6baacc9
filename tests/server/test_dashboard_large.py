"""The study page of a 10,000-trial x 8-checkpoint study in Chromium: its main panels (the
summary, learning curves, fidelities, spend and the trials table) are drawn within
``BUDGET_MS`` of navigation (the chosen trial's per-domain losses follow, fetched on
demand, checked but not timed), measured by the page
itself (``window.mfmsTimings.overview``, ``performance.now()`` when the overview is drawn):
the best of three visits after a first one that fetches and compiles Plotly.

The study is written straight into the database (``bench/large_study.py``), not played
through the API, so the test takes seconds. The surrogate's part of the page is answered
by a stub here: its first GP fit on 10,000 trials is the library's cost, measured by
``bench/large_study.py``, and the page draws the overview without waiting for it.

Skipped where Chromium or Playwright is missing, as ``test_dashboard_browser.py`` is.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from bench.large_study import generate_study
from server import migrate
from tests.server.conftest import LiveServer, make_settings

CHROMIUM = "/usr/bin/chromium"
N_TRIALS = 10_000
BUDGET_MS = 2000.0  # the page's budget on a machine with a core free for the browser


def _budget_ms() -> float:
    """``BUDGET_MS``, scaled by how oversubscribed the CPUs are (the 1-minute load average
    over the core count, when above 1): on a machine shared with other heavy jobs the page
    gets that much less CPU, and a fixed bound would fail on the neighbours' load. The
    bound still catches what matters (the page before it scaled took minutes), and the
    measured time is printed either way. ``MFMS_DASHBOARD_BUDGET_MS`` sets it outright."""
    if "MFMS_DASHBOARD_BUDGET_MS" in os.environ:
        return float(os.environ["MFMS_DASHBOARD_BUDGET_MS"])
    return BUDGET_MS * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
NO_SURROGATE = {"recommendation": None, "uniform_prediction": None, "slices": [],
                "progress": []}

playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="Playwright for Python is not installed")
if not shutil.which(CHROMIUM):
    pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory):
    url = f"sqlite:///{tmp_path_factory.mktemp('large') / 'large.db'}"
    migrate.upgrade(url)
    sid = generate_study(url, N_TRIALS)
    with LiveServer(make_settings(url)) as server:
        yield server, sid


def _open(context, url: str, errors: list[str]):
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/dashboard?part=surrogate", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(NO_SURROGATE)))
    page.goto(url)
    page.wait_for_function("window.mfmsTimings && window.mfmsTimings.overview !== undefined",
                           timeout=60_000)
    return page


def test_a_10k_trial_study_page_is_usable_in_2_s(large) -> None:
    server, sid = large
    url = f"{server.url}/ui/studies/{sid}"
    errors: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1400, "height": 1800})
        try:
            # First visit: Plotly's 4 MB script is fetched and compiled once (the HTTP
            # cache keeps it, as a returning user's browser does).
            first = _open(context, url, errors)
            cold = first.evaluate("window.mfmsTimings.overview")
            first.close()
            visits = []  # the best of three: one visit can land on a burst of other load
            for _ in range(3):
                page = _open(context, url, errors)
                visits.append(page.evaluate("window.mfmsTimings.overview"))
                if len(visits) < 3:
                    page.close()
            warm = min(visits)
            print(f"\nstudy page, {N_TRIALS} trials: main panels drawn "
                  f"{', '.join(f'{v:.0f}' for v in visits)} ms after navigation (first "
                  f"visit, Plotly not yet cached: {cold:.0f} ms; load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
            summary = page.inner_text("#study-summary")
            assert f"{N_TRIALS * 9 // 10} completed" in summary, summary
            assert page.locator("#trials tbody tr").count() == 100
            assert page.inner_text("#page-info") == f"rows 1\u2013100 of {N_TRIALS}"
            for pid in ("plot-curves", "plot-fidelities", "plot-mixture"):
                assert page.locator(f"#{pid} .scatterlayer .trace, #{pid} .barlayer .trace"
                                    ).count() > 0, pid
            assert page.locator("#spend-total").count() == 1
            assert "500 of 10000 trials' curves" in page.inner_text("#curves-note")
            # The newest trial's per-domain losses, fetched on demand.
            page.wait_for_selector("#plot-domain-curves .main-svg")
            assert page.input_value("#domain-trial") == str(page.evaluate(
                "Math.max(...lastData.trials.filter(t => t.n_measurements).map(t => t.id))"))
            assert len(page.locator("#domain-trial option").all()) == 200
            # Paging, then a row of another page: its curves come from GET /trials/{id}.
            page.click("#page-next")
            assert page.inner_text("#page-info") == f"rows 101\u2013200 of {N_TRIALS}"
            row = page.locator("#trials tbody tr").nth(5)
            pick = row.get_attribute("data-trial-id")
            row.click()
            page.wait_for_function(f"document.getElementById('domain-trial').value === '{pick}'"
                                   " && document.querySelectorAll('#domain-final tbody tr')"
                                   ".length === 3")
            page.close()
        finally:
            context.close()
            browser.close()
    assert errors == []
    budget = _budget_ms()
    assert warm < budget, f"main panels drawn after {warm:.0f} ms (budget {budget:.0f} ms)"
