"""``bench/mutation.py``: every planted bug still applies to the current source.

A refactor that moves or rewrites a snippet makes this test fail, so the mutant list is
updated with the code instead of silently testing nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]




def test_every_snippet_occurs_exactly_once_in_the_source(mutation) -> None:
    assert mutation.check_snippets(ROOT) == []


def test_mutants_cover_the_targeted_modules(mutation) -> None:
    paths = {m.path for m in mutation.MUTANTS}
    assert "server/storage.py" in paths and "mfms_bo/trials.py" in paths
    assert "mfms_bo/bench/metrics.py" in paths
    assert any(p.startswith("server/api/routes/") for p in paths)
    assert any(p.startswith("mfms_bo/strategies/") for p in paths)
    for m in mutation.MUTANTS:
        assert m.tests and all(t.startswith("tests/") for t in m.tests), m.name


def test_a_moved_snippet_is_an_error_not_a_skip(mutation, tmp_path: Path) -> None:
    m = mutation.MUTANTS[0]
    (tmp_path / m.path).parent.mkdir(parents=True)
    (tmp_path / m.path).write_text("nothing to mutate here\n")
    for t in m.tests:
        (tmp_path / t).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / t).write_text("")
    assert mutation.check_snippets(tmp_path, [m]) == [
        f"{m.name}: snippet found 0 times in {m.path} (expected exactly once; update "
        f"bench/mutation.py): {m.original!r}"]
    (tmp_path / m.path).write_text(m.original + "\n" + m.original)
    assert "found 2 times" in mutation.check_snippets(tmp_path, [m])[0]
    with pytest.raises(mutation.MutationError, match="found 2 times"):
        mutation.mutated_text((tmp_path / m.path).read_text(), m)
    assert mutation.mutated_text(m.original, m) == m.replacement
