"""Package layering: which top-level packages each one may import (``docs/decisions.md``).

The library is web-free; ``server`` and ``workers`` meet only through ``mfms_client`` (the
wire schemas and the HTTP client); only ``mfms_cli`` composes them all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "mfms_bo": {"server", "workers", "mfms_client", "mfms_cli", "fastapi", "sqlalchemy"},
    "mfms_client": {"server", "workers", "mfms_cli", "fastapi", "sqlalchemy"},
    "server": {"workers", "mfms_cli"},
    "workers": {"server", "mfms_cli", "fastapi", "sqlalchemy"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_only_what_its_layer_allows(package: str) -> None:
    bad = {f"{p.relative_to(ROOT)}: {sorted(_imports(p) & FORBIDDEN[package])}"
           for p in (ROOT / package).rglob("*.py") if _imports(p) & FORBIDDEN[package]}
    assert not bad, sorted(bad)
