"""Two token scopes: the admin token may do everything, the worker token only runs trials
(and reads). Every route of the app is enumerated from ``app.routes``, so a route added
later is checked too: a write route is admin-only unless listed in ``WORKER_ROUTES``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Route

from mfms_client.client import AuthError, ForbiddenError, MFMSClient
from server.app import create_app
from tests.server.conftest import fake_losses, make_settings, study_body

ADMIN, WORKER = "adm1n-s3cret", "w0rker-s3cret"
WORKER_ROUTES = {  # what a GPU worker needs; everything else that writes is admin-only
    ("POST", "/next-trial"), ("POST", "/trials/{trial_id}/heartbeat"),
    ("POST", "/trials/{trial_id}/measurements"), ("POST", "/trials/{trial_id}/complete"),
    ("POST", "/trials/{trial_id}/fail"), ("POST", "/trials/{trial_id}/measurements/batch"),
}
READ_POSTS = {("POST", "/studies/{study_id}/predict")}  # a POST that only reads
PUBLIC = {("GET", "/healthz"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc"),
          ("GET", "/docs/oauth2-redirect"), ("GET", "/metrics"),
          # the dashboard's HTML shells and static files hold no study data: the pages
          # fetch it from read routes (with a token when reads are protected)
          ("GET", "/"), ("GET", "/ui/studies/{study_id}"), ("GET", "/ui/static/{name}")}
NEEDS_ADMIN = "this route needs the admin token"


@pytest.fixture
def url(tmp_path) -> str:
    from server import migrate

    url = f"sqlite:///{tmp_path}/scopes.db"
    migrate.upgrade(url)
    return url


def _routes(app) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, routers included (FastAPI >= 0.16x keeps
    included routers lazily in ``app.routes``; ``iter_route_contexts`` flattens them)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is already flat
        flat = [r for r in app.routes if isinstance(r, Route)]
    else:
        flat = list(iter_route_contexts(app.routes))
    out = []
    for route in flat:  # mounts (static files) have no methods and no handler of ours
        for method in sorted(getattr(route, "methods", None) or ()):
            if method not in ("HEAD", "OPTIONS"):
                out.append((method, route.path))
    assert out, "no routes found: has FastAPI's routing changed?"
    return out


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def _call(http: TestClient, method: str, path: str, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    kwargs = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    return http.request(method, _concrete(path), headers=headers, **kwargs)


def _kind(method: str, path: str) -> str:
    if (method, path) in PUBLIC:
        return "public"
    if method == "GET" or (method, path) in READ_POSTS:
        return "read"
    return "worker" if (method, path) in WORKER_ROUTES else "admin"


def test_the_route_table_is_what_this_file_expects(url: str) -> None:
    routes = set(_routes(create_app(make_settings(url))))
    assert WORKER_ROUTES <= routes and READ_POSTS <= routes
    admin = {r for r in routes if _kind(*r) == "admin"}
    # the admin routes known today (more may come; they are admin-only by default)
    assert {("POST", "/studies"), ("POST", "/studies/{study_id}/pause"),
            ("POST", "/studies/{study_id}/resume"), ("POST", "/studies/{study_id}/stop"),
            ("POST", "/studies/{study_id}/trials"), ("POST", "/studies/import")} <= admin
    assert not any(m == "DELETE" and _kind(m, p) != "admin" for m, p in routes)


@pytest.mark.parametrize("protect_reads", [False, True])
def test_every_route_has_the_right_scope(url: str, protect_reads: bool) -> None:
    app = create_app(make_settings(url, admin_token=ADMIN, worker_token=WORKER,
                                   protect_reads=protect_reads))
    with TestClient(app) as http:
        for method, path in _routes(app):
            kind, where = _kind(method, path), (method, path)
            if kind == "public":
                continue
            guarded = kind != "read" or protect_reads
            none = _call(http, method, path, None)
            wrong = _call(http, method, path, "nope")
            if guarded:
                assert none.status_code == 401, (where, none.status_code)
                assert "missing bearer token" in none.json()["detail"], where
                assert wrong.status_code == 401, (where, wrong.status_code)
                assert wrong.json()["detail"] == "invalid bearer token", where
            else:
                assert none.status_code not in (401, 403), (where, none.status_code)
            w = _call(http, method, path, WORKER)
            if kind == "admin":
                assert w.status_code == 403, (where, w.status_code)
                assert NEEDS_ADMIN in w.json()["detail"], where
            else:
                assert w.status_code not in (401, 403), (where, w.status_code, w.text)
            a = _call(http, method, path, ADMIN)
            assert a.status_code not in (401, 403), (where, a.status_code, a.text)


def test_no_token_configured_leaves_everything_open(url: str) -> None:
    app = create_app(make_settings(url, protect_reads=True))
    with TestClient(app) as http:
        for method, path in _routes(app):
            r = _call(http, method, path, None)
            assert r.status_code not in (401, 403), (method, path, r.status_code)


def test_legacy_api_token_is_the_admin_token(url: str) -> None:
    app = create_app(make_settings(url, api_token=ADMIN, worker_token=WORKER))
    with TestClient(app) as http:
        admin = MFMSClient(http=http, token=ADMIN)
        worker = MFMSClient(http=http, token=WORKER)
        study = admin.create_study(study_body(strategy={"name": "random"}))
        with pytest.raises(ForbiddenError, match=NEEDS_ADMIN):
            worker.stop_study(study.id)
        assert worker.next_trial("w", study_id=study.id) is not None
    # MFMS_ADMIN_TOKEN wins over the legacy name: the old token no longer works
    app = create_app(make_settings(url, api_token="old", admin_token=ADMIN))
    with TestClient(app) as http:
        with pytest.raises(AuthError, match="invalid bearer token"):
            MFMSClient(http=http, token="old").create_study(study_body())
        assert MFMSClient(http=http, token=ADMIN).create_study(study_body()).id == 2


def test_worker_token_without_admin_token_locks_admin_routes(url: str) -> None:
    app = create_app(make_settings(url, worker_token=WORKER))
    with TestClient(app) as http:
        assert http.post("/studies", json=study_body()).status_code == 401
        r = http.post("/studies", json=study_body(),
                      headers={"Authorization": f"Bearer {WORKER}"})
        assert r.status_code == 403 and NEEDS_ADMIN in r.json()["detail"]
        assert http.get("/studies").status_code == 200  # reads stay open by default


def test_a_worker_runs_a_trial_with_the_worker_token(url: str) -> None:
    app = create_app(make_settings(url, admin_token=ADMIN, worker_token=WORKER,
                                   protect_reads=True))
    with TestClient(app) as http:
        admin = MFMSClient(http=http, token=ADMIN)
        worker = MFMSClient(http=http, token=WORKER)
        study = admin.create_study(study_body(strategy={"name": "random"}))
        a = worker.next_trial("w", study_id=study.id)
        assert a is not None
        worker.heartbeat(a.trial_id, worker_id="w")
        for step in a.checkpoints:
            worker.post_measurement(a.trial_id, step, fake_losses(a.mixture, step),
                                    worker_id="w")
        assert worker.complete_trial(a.trial_id, cost=1.0, worker_id="w").state == "completed"
        assert worker.get_study(study.id).counts["completed"] == 1  # reads are allowed
        with pytest.raises(ForbiddenError):
            worker.enqueue_trial(study.id, a.mixture, a.model_size, a.steps)
        with pytest.raises(ForbiddenError) as err:
            worker.create_study(study_body())
        assert err.value.status == 403 and isinstance(err.value, AuthError)
        assert [s.id for s in admin.list_studies()] == [study.id]


# -- no SQL built by string formatting -------------------------------------------------------
SERVER = Path(__file__).resolve().parents[2] / "server"
SQL_CALLS = {"text", "execute", "exec_driver_sql", "executescript", "executemany"}


def _is_formatted(node: ast.AST) -> bool:
    """An f-string, ``"..." % x``, ``"..." + x`` or ``"...".format(...)``."""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return True
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "format")


def _sql_formatting(source: str) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
            node.func, "id", None)
        if name in SQL_CALLS and node.args and _is_formatted(node.args[0]):
            lines.append(node.lineno)
    return lines


def test_the_scan_catches_formatted_sql() -> None:
    bad = ('s.execute(text(f"SELECT {x}"))\nc.execute("DELETE FROM %s" % t)\n'
           'text("SELECT {}".format(x))\nc.exec_driver_sql("DROP " + t)\n')
    assert sorted(_sql_formatting(bad)) == [1, 2, 3, 4]
    assert _sql_formatting('s.execute(text("SELECT 1"))\ns.execute(select(x))\n') == []


def test_server_builds_no_sql_with_string_formatting() -> None:
    files = sorted(SERVER.rglob("*.py"))
    assert len(files) > 10
    found = {}
    for path in files:
        source = path.read_text()
        lines = _sql_formatting(source)
        # and the plain-text spelling, in case a call is hidden behind an alias
        lines += [i for i, line in enumerate(source.splitlines(), 1)
                  if re.search(r"""(text|execute|exec_driver_sql)\(\s*f["']""", line)]
        if lines:
            found[str(path.relative_to(SERVER.parent))] = sorted(set(lines))
    assert found == {}, f"SQL built by string formatting (use bound parameters): {found}"
