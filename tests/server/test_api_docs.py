"""The API reference pages load nothing from outside the server (they work offline)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from server.app import create_app
from tests.server.conftest import make_settings


def test_docs_and_redoc_reference_only_the_server(tmp_path) -> None:
    with TestClient(create_app(make_settings(f"sqlite:///{tmp_path}/d.db"))) as http:
        for page in ("/docs", "/redoc"):
            html = http.get(page)
            assert html.status_code == 200
            assert re.findall(r"""(?:src|href)=["']?(https?:)""", html.text) == [], page
            assets = re.findall(r"""(?:src|href)=["'](/[^"']+)""", html.text)
            assert assets, page
            for asset in assets:
                assert http.get(asset).status_code == 200, asset
