"""The ``mfms`` command: ``db`` migrations, the end-to-end ``demo`` and its errors."""

from __future__ import annotations

import pytest

from mfms_cli.main import main
from mfms_client.client import ServerUnreachable
from server import migrate


def test_db_upgrade_and_current(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    assert main(["db", "upgrade", "--database-url", url]) == 0
    assert migrate.current_revision(url) == migrate.head_revision()
    assert main(["db", "downgrade", "--database-url", url]) == 0
    assert migrate.current_revision(url) is None
    assert "revision None" in capsys.readouterr().out


def test_demo_runs_server_and_workers_end_to_end(capsys) -> None:
    assert main(["demo", "--problem", "sim-k3", "--strategy", "random", "--max-trials", "6",
                 "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "Study 1 completed: 6 trials" in out
    assert "Recommended mixture" in out and "gap" in out
    assert out.count(" objective ") == 6


def test_user_errors_are_one_line_and_a_non_zero_exit(tmp_path, capsys) -> None:
    """A server that is down or a file that is missing is the user's to fix: one line on
    stderr, exit 1, no traceback (``--debug`` shows it)."""
    down = "http://127.0.0.1:9"  # nothing listens on the discard port
    assert main(["study", "list", "--server", down]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mfms study: error: cannot reach the server at "
                                               f"{down}")
    assert main(["study", "create", "--file", str(tmp_path / "missing.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.json" in err[0]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["study", "create", "--file", str(bad), "--server", down]) == 1
    assert "Expecting property name" in capsys.readouterr().err
    with pytest.raises(ServerUnreachable):
        main(["--debug", "study", "list", "--server", down])


def test_db_import_of_json_nested_too_deep_is_one_line(tmp_path, capsys) -> None:
    """Python's JSON parser recurses: a document nested 10,000 deep is refused by name,
    like any other unreadable document, not with a RecursionError traceback."""
    url = f"sqlite:///{tmp_path}/deep.db"
    migrate.upgrade(url)
    deep = tmp_path / "deep.json"
    deep.write_text('{"format": "mfms-study", "version": 1, "study": '
                    + '{"a": ' * 10_000 + "1" + "}" * 10_000 + "}")
    assert main(["db", "import", str(deep), "--database-url", url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "deep.json: JSON nested too deeply to read" in err[0], err
