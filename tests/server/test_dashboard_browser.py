"""The dashboard in a real browser: Debian's Chromium driven by Playwright (never a
downloaded browser), against a live server with a finished study.

Skipped, with the reason, only where /usr/bin/chromium or Playwright is missing;
``make test`` installs Debian's chromium when it can (root with apt-get).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from mfms_client.client import MFMSClient
from tests.server.conftest import LiveServer, fake_losses, make_settings, study_body

CHROMIUM = "/usr/bin/chromium"
ADMIN = "adm1n-dashboard"
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
def guarded(tmp_path_factory: pytest.TempPathFactory):
    """A server whose admin routes need ``ADMIN`` (reads stay open)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('guarded') / 'guarded.db'}"
    with LiveServer(make_settings(url, admin_token=ADMIN, auto_upgrade=True)) as server:
        yield server


@pytest.fixture(scope="module")
def finished(live: LiveServer) -> dict:
    """One finished MFMS-BO study (10 trials, online-mixing proportions) the page tests
    share."""
    with MFMSClient(live.url) as client:
        return run_study(client, study_body(budget={"trials": 10}), proportions=True)


@pytest.fixture(scope="module")
def browser():
    """One browser context for the module: its HTTP cache keeps Plotly's 4 MB script
    between pages (a fresh context loads and compiles it again, seconds per page)."""
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        context = b.new_context(viewport={"width": 1400, "height": 1800})
        yield context
        context.close()
        b.close()


def _page(browser, errors: list[str]):
    page = browser.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page


def _open_study(browser, url: str, study_id: int, errors: list[str]):
    page = _page(browser, errors)
    page.goto(f"{url}/ui/studies/{study_id}")
    page.wait_for_function("document.getElementById('study-state').textContent !== ''")
    return page


def _texts(page, selector: str) -> list[str]:
    return page.locator(selector).all_text_contents()


def test_dashboard_shows_a_finished_study(live: LiveServer, browser, finished: dict) -> None:
    study = finished
    with MFMSClient(live.url) as client:
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
                "plot-domain-curves", "slice-0", "plot-trajectory"]:
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
    # the new parts: slice panel titles, per-domain losses (table and legend), and a
    # server's error text (a made-up refusal naming the domain) under the controls
    page.wait_for_selector("#slices .slice-panel h3")
    assert _texts(page, "#slices .slice-panel h3") == ["code", domain]
    assert _texts(page, "#domain-final td.domain") == ["code", domain]
    assert domain in _texts(page, "#plot-domain-curves .legendtext")
    page.route(f"**/studies/{study['id']}", lambda route: route.fulfill(
        status=409, content_type="application/json", body=json.dumps({"detail": domain})))
    page.click("#ctl-budget")
    page.wait_for_function("document.getElementById('ctl-message').textContent"
                           ".includes('refused')")
    assert page.inner_text("#ctl-message") == f"Budget refused: HTTP 409: {domain}"
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main img, #studies img").count() == 0
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
        for _ in range(3):  # MFMS_PAUSE_AFTER_FAILURES' default
            t = client.next_trial("w-broken", study_id=study.id)
            client.fail_trial(t.trial_id, reason, worker_id="w-broken")
        assert client.get_study(study.id).state == "paused"
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(live.url + f"/ui/studies/{study.id}")
    page.wait_for_function("document.querySelectorAll('#trials tbody tr').length > 0")
    banner = page.inner_text("#pause-reason")
    assert "the last 3 trials failed before reporting any loss" in banner
    assert reason in banner and f"mfms study resume {study.id}" in banner
    assert page.locator("#trials td.fail-reason", has_text=reason).count() == 3
    assert page.locator("#trials b, #pause-reason b").count() == 0
    page.close()
    assert errors == []


def test_per_domain_curves_follow_the_chosen_trial(live: LiveServer, browser,
                                                   finished: dict) -> None:
    """The newest trial's per-domain losses by default; a clicked row or the menu picks
    another, and the panel lists each domain with its loss at that trial's last step."""
    with MFMSClient(live.url) as client:
        trials = client.list_trials(finished["id"])
    domains = finished["config"]["domains"]
    errors: list[str] = []
    page = _open_study(browser, live.url, finished["id"], errors)
    page.wait_for_selector("#plot-domain-curves .main-svg")
    assert page.input_value("#domain-trial") == str(max(t.id for t in trials))
    assert len(_texts(page, "#domain-trial option")) == len(trials)
    for i, pick in enumerate([trials[2], trials[5]]):
        if i == 0:
            page.click(f"#trials tbody tr[data-trial-id='{pick.id}']")
        else:
            page.select_option("#domain-trial", str(pick.id))
        assert page.input_value("#domain-trial") == str(pick.id)
        last = max(pick.measurements, key=lambda m: m.step)
        assert _texts(page, "#domain-final tbody td.domain") == domains
        assert _texts(page, "#domain-final tbody td:nth-child(2)") == [
            f"{last.losses[d]:.4f}" for d in domains]
        assert _texts(page, "#plot-domain-curves .legendtext") == [*domains, "objective"]
        points = page.evaluate("document.getElementById('plot-domain-curves').data"
                               ".map(t => t.x.length)")
        assert points == [len(pick.measurements)] * (len(domains) + 1)
        assert page.locator("#trials tbody tr.selected").get_attribute(
            "data-trial-id") == str(pick.id)
    page.close()
    assert errors == []


def test_spend_per_fidelity_sums_every_trials_cost(live: LiveServer, browser) -> None:
    """Each (model size, steps) cell holds its trials' summed cost and their number; failed
    trials' reported cost counts; the total is the study's cost spent."""
    with MFMSClient(live.url) as client:
        study = client.create_study(study_body(strategy={"name": "random"}))
        for i in range(4):
            t = client.next_trial("w-spend", study_id=study.id)
            for step in t.checkpoints:
                client.post_measurement(t.trial_id, step, fake_losses(t.mixture, step),
                                        worker_id="w-spend")
            client.complete_trial(t.trial_id, 1.25 * (i + 1), worker_id="w-spend")
        for cost in (0.5, 0.75):
            t = client.next_trial("w-spend", study_id=study.id)
            client.fail_trial(t.trial_id, "CUDA out of memory", worker_id="w-spend", cost=cost)
        client.stop_study(study.id)
        trials = [t for t in client.list_trials(study.id) if t.state != "cancelled"]
        spent = client.get_study(study.id).cost_spent
    total = sum(t.cost or 0.0 for t in trials)
    assert total == pytest.approx(1.25 * 10 + 0.5 + 0.75) and total == pytest.approx(spent)
    groups: dict[tuple[float, int], list] = {}
    for t in trials:
        groups.setdefault((t.model_size, t.steps), []).append(t)
    errors: list[str] = []
    page = _open_study(browser, live.url, study.id, errors)
    page.wait_for_selector("#spend-total")
    assert float(page.get_attribute("#spend-total", "data-cost")) == pytest.approx(total)
    assert page.inner_text("#spend-total") == f"{total:.2f} ({len(trials)})"
    shown = {}
    for td in page.locator("#spend td.spend-cell").all():
        n = int(td.get_attribute("data-trials"))
        if n:
            key = (float(td.get_attribute("data-model-size")), int(td.get_attribute("data-steps")))
            shown[key] = (n, float(td.get_attribute("data-cost")))
    assert shown.keys() == groups.keys()
    for key, ts in groups.items():
        assert shown[key][0] == len(ts)
        assert shown[key][1] == pytest.approx(sum(t.cost or 0.0 for t in ts))
    page.close()
    assert errors == []


def test_overlapping_trials_are_counted_and_log_axes_read(live: LiveServer, browser) -> None:
    """Sixteen trials at one fidelity are one marker labelled 16 (every fidelity's marker
    carries its count), and the log axes are labelled 20M, 1k, not minor digits."""
    mix = {"code": 0.2, "web": 0.3, "books": 0.5}
    with MFMSClient(live.url) as client:
        study = client.create_study(study_body(strategy={"name": "random"}))
        for _ in range(16):
            client.enqueue_trial(study.id, mix, 20e6, 1000)
        trials = [t for t in client.list_trials(study.id) if t.state != "cancelled"]
    counts = Counter((t.model_size, t.steps) for t in trials)
    assert counts[(20e6, 1000)] >= 16
    errors: list[str] = []
    page = _open_study(browser, live.url, study.id, errors)
    page.wait_for_selector("#plot-fidelities .main-svg")
    labels = _texts(page, "#plot-fidelities .textpoint text")
    assert sorted(labels) == sorted(str(n) for n in counts.values())
    assert str(counts[(20e6, 1000)]) in labels
    xs, ys = (_texts(page, "#plot-fidelities .xtick text"),
              _texts(page, "#plot-fidelities .ytick text"))
    assert {"20M", "150M"} <= set(xs) and {"1k", "4k"} <= set(ys)  # trials and the target
    si = re.compile(r"^\d+(\.\d+)?[kMB]$")
    assert all(si.match(t) for t in xs + ys), (xs, ys)
    page.close()
    assert errors == []


def test_slices_are_one_panel_per_domain(live: LiveServer, browser, finished: dict) -> None:
    domains = finished["config"]["domains"]
    errors: list[str] = []
    page = _open_study(browser, live.url, finished["id"], errors)
    page.wait_for_selector(f"#slice-{len(domains) - 1} .main-svg")
    assert page.locator("#slices .slice-panel").count() == len(domains)
    assert _texts(page, "#slices .slice-panel h3") == domains
    for i in range(len(domains)):
        assert page.locator(f"#slice-{i} .scatterlayer .trace").count() == 2  # band, mean
    ranges = page.evaluate("[...document.querySelectorAll('#slices .plot-small')]"
                           ".map(p => p.layout.yaxis.range)")
    assert all(r == ranges[0] for r in ranges)  # one objective scale: the panels compare
    page.close()
    assert errors == []


def test_controls_need_the_admin_token(guarded: LiveServer, browser) -> None:
    """Pause, resume, budget and stop from the page: without or with a wrong token the
    server's reason is shown and nothing changes; with the admin token each takes effect
    (checked through the API) and the page shows the new state."""
    with MFMSClient(guarded.url, token=ADMIN) as admin:
        study = admin.create_study(study_body(strategy={"name": "random"},
                                              budget={"trials": 4}))
        errors: list[str] = []
        page = _open_study(browser, guarded.url, study.id, errors)
        msg = "document.getElementById('ctl-message').textContent"

        def act(button: str, expect: str) -> str:
            page.evaluate("document.getElementById('ctl-message').textContent = ''")
            page.click(button)
            page.wait_for_function(f"{msg}.includes({json.dumps(expect)})")
            return page.inner_text("#ctl-message")

        assert "missing bearer token" in act("#ctl-pause", "refused")
        page.fill("#admin-token", "not-the-token")
        assert "HTTP 401: invalid bearer token" in act("#ctl-pause", "refused")
        assert page.get_attribute("#ctl-message", "class") == "alert"
        assert admin.get_study(study.id).state == "running"

        page.fill("#admin-token", ADMIN)
        assert "the study is paused" in act("#ctl-pause", "done")
        assert admin.get_study(study.id).state == "paused"
        page.wait_for_function("document.getElementById('study-state').textContent === 'paused'")
        assert page.is_disabled("#ctl-pause") and page.is_enabled("#ctl-resume")
        assert page.evaluate("sessionStorage.getItem('mfmsAdminToken')") == ADMIN
        assert page.evaluate("localStorage.getItem('mfmsAdminToken')") is None

        act("#ctl-resume", "done")
        assert admin.get_study(study.id).state == "running"

        page.fill("#ctl-trials", "9")
        page.fill("#ctl-cost", "123.5")
        act("#ctl-budget", "done")
        assert admin.get_study(study.id).config["budget"] == {"trials": 9, "cost": 123.5}
        page.fill("#ctl-trials", "0")
        assert "budget.trials" in act("#ctl-budget", "refused")  # the server's 422 reason
        assert admin.get_study(study.id).config["budget"]["trials"] == 9

        page.once("dialog", lambda d: d.accept())
        act("#ctl-stop", "done")
        assert admin.get_study(study.id).state == "stopped"
        page.wait_for_function("document.getElementById('study-state').textContent === 'stopped'")
        assert page.is_disabled("#ctl-stop")
    page.close()
    # the browser logs each refused request; nothing else may fail
    assert [e for e in errors if not e.startswith("Failed to load resource")] == []


def test_index_compares_studies(live: LiveServer, browser, finished: dict) -> None:
    """The list shows each study's state, spend, trials and best predicted objective (the
    last recommendation, with its interval), "-" where there is none."""
    with MFMSClient(live.url) as client:
        rec = client.recommendation(finished["id"])
        fresh = client.create_study(study_body(strategy={"name": "random"}))
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(live.url + "/")
    page.wait_for_selector(f"#studies tbody tr[data-study-id='{fresh.id}']")
    row = page.locator(f"#studies tbody tr[data-study-id='{finished['id']}']")
    cells = row.locator("td").all_text_contents()
    assert cells[2] == "completed" and cells[4] == "10"
    assert cells[8] == f"{finished['cost_spent']:.2f}"
    assert cells[10] == "150M x 4k"
    lo, hi = rec.interval
    assert row.locator("td.best").inner_text() == (
        f"{rec.predicted_objective:.4f} ({lo:.4f} to {hi:.4f})")
    assert page.inner_text(f"#studies tbody tr[data-study-id='{fresh.id}'] td.best") == "-"
    page.click("#studies th[data-key=best]")  # sorted by it: studies with a value first
    assert page.inner_text("#studies tbody tr:first-child td.best") != "-"
    page.close()
    assert errors == []
