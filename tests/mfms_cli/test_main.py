"""The ``mfms`` command: ``db`` migrations and the end-to-end ``demo``."""

from __future__ import annotations

from mfms_cli.main import main
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
