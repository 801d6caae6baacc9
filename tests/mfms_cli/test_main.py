"""The ``mfms`` command: ``db`` migrations, the end-to-end ``demo`` and its errors."""

from __future__ import annotations

import json

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


def test_study_budget_pause_resume_and_the_pause_reason(tmp_path, capsys) -> None:
    """``mfms study budget`` reopens a study its budget completed; ``pause``/``resume``
    change its state; ``list`` shows why the service paused a study."""
    from mfms_client.client import MFMSClient
    from tests.server.conftest import LiveServer, fake_losses, make_settings, study_body

    url = f"sqlite:///{tmp_path}/cli.db"
    migrate.upgrade(url)
    settings = make_settings(url, pause_after_failures=2)
    with LiveServer(settings) as live, MFMSClient(live.url) as api:
        s = api.create_study(study_body(strategy={"name": "random"}, budget={"trials": 1}))
        a = api.next_trial("w", study_id=s.id)
        for step in a.checkpoints:
            api.post_measurement(a.trial_id, step, fake_losses(a.mixture, step))
        api.complete_trial(a.trial_id, cost=1.0)
        assert api.get_study(s.id).state == "completed"
        server = ["--server", live.url]
        assert main(["study", "budget", str(s.id), "--trials", "3", *server]) == 0
        out = capsys.readouterr().out
        assert f"study {s.id} is running" in out and '"trials": 3' in out
        for _ in range(2):
            b = api.next_trial("broken", study_id=s.id)
            api.fail_trial(b.trial_id, "no such file: data/code.bin")
        assert main(["study", "list", *server]) == 0
        out = capsys.readouterr().out
        assert "paused" in out and "no such file: data/code.bin" in out
        assert main(["study", "resume", str(s.id), *server]) == 0
        assert f"study {s.id} is running" in capsys.readouterr().out
        assert main(["study", "budget", str(s.id), "--trials", "many", *server]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "'many' is not a number or 'none'" in err[0]
        assert main(["study", "budget", str(s.id), "--trials", "none", *server]) == 0
        assert api.get_study(s.id).config["budget"] == {"trials": None, "cost": None}
    assert main(["study", "pause"]) == 2


def test_study_update_changes_the_pause_threshold(tmp_path, capsys) -> None:
    from mfms_client.client import MFMSClient
    from tests.server.conftest import LiveServer, make_settings, study_body

    url = f"sqlite:///{tmp_path}/cli.db"
    migrate.upgrade(url)
    with LiveServer(make_settings(url)) as live, MFMSClient(live.url) as api:
        s = api.create_study(study_body(strategy={"name": "random"}, budget={"trials": 4}))
        server = ["--server", live.url]
        assert main(["study", "update", str(s.id), "--pause-after-failures", "7",
                     "--cost", "50", *server]) == 0
        config = api.get_study(s.id).config
        assert config["pause_after_failures"] == 7
        assert config["budget"] == {"trials": 4, "cost": 50.0}
        assert main(["study", "update", str(s.id), *server]) == 2
        assert "nothing to change" in capsys.readouterr().err


def test_http_errors_are_one_line_naming_the_problem(tmp_path, capsys) -> None:
    """401 (no or wrong token), 403 (a worker token on an admin route), 404 and 409 each
    give one line on stderr and exit 1."""
    from tests.server.conftest import LiveServer, make_settings, study_body

    url = f"sqlite:///{tmp_path}/cli.db"
    migrate.upgrade(url)
    settings = make_settings(url, admin_token="adm", worker_token="wrk")
    body = tmp_path / "study.json"
    body.write_text(json.dumps(study_body()))
    with LiveServer(settings) as live:
        server = ["--server", live.url]
        cases = [
            (["study", "create", "--file", str(body), *server], "401"),
            (["study", "create", "--file", str(body), "--token", "wrong", *server], "401"),
            (["study", "create", "--file", str(body), "--token", "wrk", *server], "403"),
            (["study", "show", "999", "--token", "adm", *server], "study 999 not found"),
        ]
        for argv, expect in cases:
            assert main(argv) == 1, argv
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and expect in err[0] and "Traceback" not in err[0], (argv, err)
            assert err[0].startswith("mfms study: error: ")
        assert main(["study", "create", "--file", str(body), "--token", "adm", *server]) == 0
        sid = json.loads(capsys.readouterr().out)["id"]
        assert main(["study", "stop", str(sid), "--token", "adm", *server]) == 0
        capsys.readouterr()
        assert main(["study", "update", str(sid), "--trials", "9", "--token", "adm",
                     *server]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is stopped; a stopped study cannot be changed" in err[0], err


@pytest.mark.parametrize(("argv", "hint"), [
    (["worker", "--server", "http://x", "--max-trails", "3"], "did you mean --max-trials?"),
    (["study", "updte", "1"], "did you mean 'update'?"),
    (["stduy", "list"], "did you mean 'study'?"),
])
def test_a_mistyped_flag_or_command_gets_did_you_mean(argv, hint, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(hint)
