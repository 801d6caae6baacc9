"""The dashboard in a real browser: Debian's Chromium driven by Playwright (never a
downloaded browser), against a live server with a finished study.

Skipped, with the reason, only where /usr/bin/chromium or Playwright is missing;
``make test`` installs Debian's chromium when it can (root with apt-get).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mfms_client.client import MFMSClient
from tests.server.conftest import LiveServer, fake_losses, make_settings, study_body

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"

playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="Playwright for Python is not installed")
if not shutil.which(CHROMIUM):
    pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)",
                allow_module_level=True)


def run_study(client: MFMSClient, body: dict, cost_per_trial: float = 3.0,
              proportions: bool = False) -> dict:
    """Create a study with a trial budget and play a worker until it completes."""
    study = client.create_study(body)
    while True:
        trial = client.next_trial("w-browser", study_id=study.id)
        if trial is None:
            break
        doms = list(trial.mixture)
        for i, step in enumerate(trial.checkpoints):
            props = None
            if proportions:  # a made-up online-mixing drift towards the first domain
                raw = [trial.mixture[d] + (0.05 * i if j == 0 else 0.0)
                       for j, d in enumerate(doms)]
                props = {d: v / sum(raw) for d, v in zip(doms, raw, strict=True)}
            client.post_measurement(trial.trial_id, step, fake_losses(trial.mixture, step),
                                    worker_id="w-browser", proportions=props)
        client.complete_trial(trial.trial_id, cost_per_trial * trial.model_size / 20e6,
                              worker_id="w-browser")
    return client.get_study(study.id).model_dump(mode="json")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    url = f"sqlite:///{tmp_path_factory.mktemp('dash') / 'dash.db'}"
    with LiveServer(make_settings(url, next_trial_wait_seconds=5.0, auto_upgrade=True)) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def _page(browser, errors: list[str]):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page


def test_dashboard_shows_a_finished_study(live: LiveServer, browser) -> None:
    with MFMSClient(live.url) as client:
        study = run_study(client, study_body(budget={"trials": 10}), proportions=True)
        n_trials = len(client.list_trials(study["id"]))
    assert study["state"] == "completed" and n_trials == 10
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(live.url + "/")
    page.wait_for_selector("#studies tbody tr")
    assert study["name"] in page.inner_text("#studies")
    page.click(f"text={study['name']}")
    page.wait_for_url(f"**/ui/studies/{study['id']}")
    page.wait_for_function("document.querySelectorAll('#trials tbody tr').length > 0")
    assert page.locator("#trials tbody tr").count() == n_trials
    # Every plot rendered: Plotly draws an SVG with its traces in each container.
    for pid in ["plot-mixture", "plot-progress", "plot-curves", "plot-fidelities",
                "plot-slices", "plot-trajectory"]:
        page.wait_for_selector(f"#{pid} .main-svg", timeout=15_000)
        assert page.locator(f"#{pid} .scatterlayer .trace, #{pid} .barlayer .trace"
                            ).count() > 0, pid
    assert "Recommended: predicted objective" in page.inner_text("#rec-text")
    # Sorting by cost puts the cheapest trial first, then the most expensive.
    page.click("#trials th[data-key=cost]")
    first = float(page.inner_text("#trials tbody tr:first-child td:nth-child(6)"))
    page.click("#trials th[data-key=cost]")
    assert float(page.inner_text("#trials tbody tr:first-child td:nth-child(6)")) >= first
    if os.environ.get("MFMS_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.close()
    assert errors == []


def test_exports_have_every_trial(live: LiveServer) -> None:
    import csv
    import io

    with MFMSClient(live.url) as client:
        study = run_study(client, study_body(budget={"trials": 4}))
        http = client._http
        js = http.get(f"/studies/{study['id']}/history.json").json()
        rows = list(csv.DictReader(io.StringIO(
            http.get(f"/studies/{study['id']}/history.csv").text)))
    assert len(js["trials"]) == 4
    n_measurements = sum(len(t["measurements"]) for t in js["trials"])
    assert len(rows) == n_measurements and {"w_code", "loss_web", "objective"} <= set(rows[0])


def test_names_are_shown_not_run(live: LiveServer, browser) -> None:
    evil = "<script>window.__pwned=1</script>"
    domain = "<img src=x onerror=window.__pwned=2>"
    with MFMSClient(live.url) as client:
        study = run_study(client, study_body(name=evil, domains=["code", domain],
                                             budget={"trials": 3},
                                             strategy={"name": "random"}))
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(live.url + "/")
    page.wait_for_selector("#studies tbody tr")
    assert evil in page.inner_text("#studies")
    page.goto(live.url + f"/ui/studies/{study['id']}")
    page.wait_for_function("document.querySelectorAll('#trials tbody tr').length > 0")
    assert page.inner_text("#study-name") == evil
    assert domain in page.inner_text("#trials")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#trials img, #studies img").count() == 0
    page.close()


def test_api_docs_render_offline(live: LiveServer, browser) -> None:
    """/docs (Swagger UI) and /redoc render with every request refused except to the server
    itself: their scripts and styles come from the installed package, not a CDN. (ReDoc's
    bundle still asks for its "powered by" logo image; refused, nothing else changes.)"""
    outside: list[str] = []
    images: list[str] = []

    def local_only(route) -> None:
        url = route.request.url
        if url.startswith(live.url):
            route.continue_()
        else:
            (images if route.request.resource_type == "image" else outside).append(url)
            route.abort()

    errors: list[str] = []
    page = _page(browser, errors)
    page.route("**/*", local_only)
    page.goto(live.url + "/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=15_000)
    assert page.locator(".swagger-ui .opblock").count() >= 10  # one per operation
    page.goto(live.url + "/redoc")
    page.wait_for_selector("h1", timeout=15_000)
    assert "mfms-bo" in page.inner_text("h1")
    page.close()
    assert outside == []
    refused = [e for e in errors if e.startswith("Failed to load resource")]
    assert len(refused) == len(images) and len(errors) == len(refused), errors


def test_a_study_paused_for_failures_says_why(live: LiveServer, browser) -> None:
    """The service paused a study whose trials kept failing: its page says why and how to
    resume, and each failed trial's row shows its reason (as text, never as markup)."""
    reason = "FileNotFoundError: data/<b>web</b>.bin"
    with MFMSClient(live.url) as client:
        study = client.create_study(study_body(strategy={"name": "random"}))
        for _ in range(5):  # MFMS_PAUSE_AFTER_FAILURES' default
            t = client.next_trial("w-broken", study_id=study.id)
            client.fail_trial(t.trial_id, reason, worker_id="w-broken")
        assert client.get_study(study.id).state == "paused"
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(live.url + f"/ui/studies/{study.id}")
    page.wait_for_function("document.querySelectorAll('#trials tbody tr').length > 0")
    banner = page.inner_text("#pause-reason")
    assert "the last 5 trials failed before reporting any loss" in banner
    assert reason in banner and f"mfms study resume {study.id}" in banner
    assert page.locator("#trials td.fail-reason", has_text=reason).count() == 5
    assert page.locator("#trials b, #pause-reason b").count() == 0
    page.close()
    assert errors == []
