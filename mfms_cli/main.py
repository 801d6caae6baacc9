"""The ``mfms`` command: ``serve``, ``db``, ``worker``, ``study``, ``demo``, ``data``, ``bench``.

Each subcommand imports what it needs when it runs, so ``mfms worker`` on a GPU node never
loads the server's database stack and ``mfms bench`` never loads the web stack.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.config
import os
import socket
import sys
from typing import NoReturn

from mfms_cli.bench import add_bench_command

__all__ = ["main", "build_parser"]


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.config import Settings
    from server.logs import logging_config

    if args.database_url:
        os.environ["MFMS_DATABASE_URL"] = args.database_url
    # Server logging is configured here and only here (MFMS_LOG_FORMAT=text|json), before
    # the server stack is imported: uvicorn applies the same dictConfig in every server
    # process, and the mfms.access line per request replaces uvicorn's access log.
    logs = {"log_config": logging_config(Settings().log_format), "access_log": False}
    logging.config.dictConfig(logs["log_config"])

    from server.app import create_app

    if args.upgrade:
        from server import migrate

        migrate.upgrade(Settings().database_url)  # once, before any worker process starts
    if args.workers > 1:
        # Several processes share the database (the source of truth); each builds its app
        # from the same MFMS_* environment.
        uvicorn.run("server.app:create_app", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level=args.log_level, **logs)
        return 0
    uvicorn.run(create_app(Settings()), host=args.host, port=args.port,
                log_level=args.log_level, **logs)
    return 0


def _cmd_db(args: argparse.Namespace) -> int:
    from server import migrate
    from server.config import Settings

    url = args.database_url or Settings().database_url
    if args.action in ("export", "backup", "import"):
        return _cmd_db_transfer(args, url)
    if args.action == "upgrade":
        migrate.upgrade(url, args.revision or "head")
    elif args.action == "downgrade":
        migrate.downgrade(url, args.revision or "base")
    print(f"database at revision {migrate.current_revision(url)} "
          f"(head {migrate.head_revision()})")
    return 0


def _cmd_db_transfer(args: argparse.Namespace, url: str) -> int:
    """``mfms db export|backup|import``: studies as JSON documents (server/transfer.py)."""
    from mfms_bo import limits
    from mfms_bo.errors import MFMSError
    from server import migrate, storage, transfer
    from server.db import Database
    from server.errors import ServiceError

    where = f"mfms db {args.action}"
    if migrate.current_revision(url) != migrate.head_revision():
        print(f"{where}: the database schema is not at head; run `mfms db upgrade` first",
              file=sys.stderr)
        return 1
    if args.action == "export" and not args.study:
        print(f"{where}: --study ID|NAME is required", file=sys.stderr)
        return 2
    if args.action == "import" and not args.file:
        print(f"{where}: the FILE to import is required", file=sys.stderr)
        return 2
    db = Database(url, pool_size=1)
    try:
        if args.action == "import":
            with (sys.stdin if args.file == "-" else open(args.file)) as f:
                try:
                    doc = json.load(f)
                except RecursionError:  # the parser recurses, ~1000 levels at most
                    raise transfer.InvalidDocument(
                        f"{args.file}: JSON nested too deeply to read (a field may nest "
                        f"{limits.MAX_NESTING} levels)") from None
            with db.session() as s:
                studies = transfer.import_document(s, doc, args.name)
                done = [(st.id, st.name) for st in studies]
            with db.session() as s:
                counts = storage.study_counts(s, [sid for sid, _ in done])
            for sid, name in done:
                print(f"imported study {name!r} as id {sid} ({sum(counts[sid].values())} "
                      "trials)")
            return 0
        with db.session() as s:  # streamed: a batch of trials in memory at a time
            if args.action == "export":
                pieces = transfer.iter_export_study(
                    s, transfer.find_study(s, args.study).id, indent=1, ensure_ascii=True)
                n = 1
            else:
                n = len(storage.list_studies(s))
                pieces = transfer.iter_export_backup(s, indent=1, ensure_ascii=True)
            if args.output in (None, "-"):
                sys.stdout.writelines(pieces)
                sys.stdout.write("\n")
            else:
                tmp = f"{args.output}.tmp-{os.getpid()}"
                try:
                    with open(tmp, "w") as f:
                        f.writelines(pieces)
                        f.write("\n")
                    os.replace(tmp, args.output)  # a crash never leaves half a backup behind
                finally:
                    if os.path.exists(tmp):
                        os.remove(tmp)
        if args.output not in (None, "-"):
            print(f"wrote {n} stud{'y' if n == 1 else 'ies'} to {args.output}", file=sys.stderr)
        return 0
    except (ServiceError, MFMSError, OSError, ValueError) as exc:
        print(f"{where}: {exc}", file=sys.stderr)
        return 1
    finally:
        db.dispose()


def _cmd_worker(args: argparse.Namespace) -> int:
    from mfms_client.client import MFMSClient
    from workers.agent import WorkerAgent

    if args.backend == "simulate":
        from workers.backends.simulate import SimulateBackend

        backend = SimulateBackend(args.problem, time_per_cost=args.time_per_cost)
    elif args.backend == "command":
        from workers.backends.command import CommandBackend

        if not args.command:
            raise SystemExit("mfms worker: --backend command needs --command TEMPLATE")
        try:
            backend = CommandBackend(args.command, args.work_dir, gpus=args.gpus)
        except ValueError as exc:
            raise SystemExit(f"mfms worker: {exc}") from None
    elif args.backend == "torch":
        from workers.backends.torch_backend import TorchBackend

        if not args.data:
            raise SystemExit("mfms worker: --backend torch needs --data DIR "
                             "(see `mfms data prepare` / `mfms data example`)")
        options = {"compile": not args.no_compile}
        for name in ("batch_size", "seq_len", "micro_batch_size", "eval_tokens"):
            if getattr(args, name) is not None:
                options[name] = getattr(args, name)
        try:
            backend = TorchBackend(args.data, device=args.device, **options)
        except (ValueError, TypeError) as exc:
            raise SystemExit(f"mfms worker: {exc}") from None
    else:  # argparse restricts the choices
        raise SystemExit(f"unknown backend {args.backend!r}")
    worker_id = args.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    token = (args.token or os.environ.get("MFMS_WORKER_TOKEN")
             or os.environ.get("MFMS_API_TOKEN"))
    agent = WorkerAgent(MFMSClient(args.server, token=token, retries=5), backend, worker_id,
                        study_id=args.study, max_model_size=args.max_model_size,
                        max_trials=args.max_trials, once=args.once,
                        poll_max=args.poll_max, echo=lambda line: print(line, flush=True),
                        labels=tuple(args.label), max_failures=args.max_failures or None)
    agent.install_signal_handlers()
    which = (f"study {args.study}" if args.study is not None
             else "any study it matches")
    domains = getattr(backend, "domains", None)
    print(f"worker {worker_id}: polling {args.server} for {which} (backend {backend.name}"
          f"{', domains ' + ','.join(domains) if domains else ''}"
          f"{', labels ' + ','.join(args.label) if args.label else ''})", flush=True)
    n = agent.run()
    print(f"worker {worker_id}: {n} trial(s) completed", flush=True)
    if agent.gave_up is not None:
        print(f"mfms worker: error: {agent.gave_up}", file=sys.stderr)
        return 1
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from mfms_client.client import MFMSClient, NotFoundError

    client = MFMSClient(args.server, token=args.token or os.environ.get("MFMS_ADMIN_TOKEN")
                        or os.environ.get("MFMS_API_TOKEN"))
    if args.action == "create":
        with open(args.file) as f:
            study = client.create_study(json.load(f))
        print(json.dumps(study.model_dump(mode="json"), indent=1))
        return 0
    if args.action == "list":
        for s in client.list_studies():
            print(f"{s.id:5d}  {s.state:9s}  {s.name:30s}  trials {s.counts['completed']:4d} "
                  f"done {s.counts['running']:3d} running  cost {s.cost_spent:.4g}")
            if s.pause_reason:
                print(f"       {s.pause_reason}")
        return 0
    if args.action in ("pause", "resume", "stop"):
        changed = getattr(client, f"{args.action}_study")(args.id)
        print(f"study {changed.id} is {changed.state}")
        return 0
    if args.action in ("budget", "update"):
        changes: dict = {}
        if args.trials is not None or args.cost is not None:
            current = client.get_study(args.id).config.get("budget") or {}
            changes["budget"] = {
                "trials": (current.get("trials") if args.trials is None
                           else _limit(args.trials, int)),
                "cost": current.get("cost") if args.cost is None else _limit(args.cost, float)}
        if args.pause_after_failures is not None:
            changes["pause_after_failures"] = args.pause_after_failures
        if not changes:
            print(f"mfms study {args.action}: nothing to change; give --trials, --cost or "
                  "--pause-after-failures", file=sys.stderr)
            return 2
        changed = client.update_study(args.id, changes)
        print(f"study {changed.id} is {changed.state}; budget "
              f"{json.dumps(changed.config.get('budget'))}; {changed.trials_run} trials and "
              f"{changed.cost_spent:.4g} cost used")
        return 0
    study = client.get_study(args.id)
    print(json.dumps(study.model_dump(mode="json"), indent=1))
    try:
        rec = client.recommendation(args.id)
        print(json.dumps({"recommendation": rec.model_dump(mode="json")}, indent=1))
    except NotFoundError as exc:
        print(f"no recommendation yet: {exc.detail}")
    return 0


def _limit(text: str, kind: type) -> int | float | None:
    """A budget flag's value: a number, or ``none`` to lift the limit."""
    from mfms_bo.errors import ValidationError

    if text.strip().lower() == "none":
        return None
    try:
        return kind(text)
    except ValueError:
        raise ValidationError(f"budget: {text!r} is not a number or 'none'") from None


def _cmd_demo(args: argparse.Namespace) -> int:
    from mfms_cli.demo import run_demo

    return run_demo(args.problem, args.strategy, args.workers, args.max_trials, args.budget,
                    args.seed)


class _Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a mistyped flag or choice: the closest option or
    choice anywhere in the command tree (Python 3.11's argparse suggests nothing)."""

    def error(self, message: str) -> NoReturn:
        hint = self._suggestion(message)
        super().error(message + (f"; did you mean {hint}?" if hint else ""))

    def _suggestion(self, message: str) -> str | None:
        import difflib
        import re

        if message.startswith("unrecognized arguments: "):
            flags = [a for a in message.split(": ", 1)[1].split() if a.startswith("-")]
            known = sorted(_option_strings(self))
            for flag in flags:
                close = difflib.get_close_matches(flag.split("=")[0], known, n=1)
                if close:
                    return close[0]
            return None
        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m:
            choices = re.findall(r"'([^']*)'", m.group(2)) or [
                c.strip() for c in m.group(2).split(",")]
            close = difflib.get_close_matches(m.group(1), choices, n=1)
            return repr(close[0]) if close else None
        return None


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    out: set[str] = set()
    for action in parser._actions:  # argparse keeps its tree here; no public walk exists
        out.update(s for s in action.option_strings if s.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out |= _option_strings(sub)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mfms", description="Multi-fidelity, multi-scale "
                "Bayesian optimisation of pretraining data mixtures.")
    p.add_argument("--debug", action="store_true",
                   help="show the full traceback of an error instead of one line")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the REST server (config from MFMS_* env vars)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--database-url", default=None, help="overrides MFMS_DATABASE_URL")
    s.add_argument("--upgrade", action="store_true", help="run migrations before serving")
    s.add_argument("--log-level", default="info")
    s.add_argument("--workers", type=int, default=1,
                   help="server processes (they coordinate through the database)")
    s.set_defaults(func=_cmd_serve)

    d = sub.add_parser("db", help="database migrations (Alembic); export, import and "
                                  "back up studies as JSON")
    d.add_argument("action", choices=["upgrade", "downgrade", "current", "export", "import",
                                      "backup"])
    d.add_argument("file", nargs="?", default=None,
                   help="import: a study export or a backup (- for stdin)")
    d.add_argument("--revision", default=None, help="default: head (upgrade), base (downgrade)")
    d.add_argument("--study", default=None, help="export: the study's id or name")
    d.add_argument("-o", "--output", default=None, help="export/backup: file (default stdout)")
    d.add_argument("--name", default=None, help="import: a new name for the study")
    d.add_argument("--database-url", default=None, help="overrides MFMS_DATABASE_URL")
    d.set_defaults(func=_cmd_db)

    w = sub.add_parser("worker", help="poll a server for trials and run them")
    server_url = os.environ.get("MFMS_SERVER_URL") or None  # containers, Slurm, k8s
    w.add_argument("--server", default=server_url, required=server_url is None,
                   help="e.g. http://mfms:8000 (default: $MFMS_SERVER_URL)")
    w.add_argument("--token", default=None,
                   help="default: $MFMS_WORKER_TOKEN, else $MFMS_API_TOKEN")
    w.add_argument("--study", type=int, default=None, help="only this study's trials")
    w.add_argument("--backend", choices=["simulate", "command", "torch"], default="simulate")
    w.add_argument("--data", default=None, help="torch: folder of prepared domains")
    w.add_argument("--device", default=None, help="torch: cuda, cuda:1, cpu (default: auto)")
    w.add_argument("--batch-size", type=int, default=None, help="torch: sequences per step")
    w.add_argument("--seq-len", type=int, default=None, help="torch: tokens per sequence")
    w.add_argument("--micro-batch-size", type=int, default=None,
                   help="torch: gradient-accumulation chunk (for large presets)")
    w.add_argument("--eval-tokens", type=int, default=None,
                   help="torch: validation tokens per domain at each checkpoint (default: a "
                        "quarter of the tokens trained between checkpoints, shared by the "
                        "domains, within 32768..131072)")
    w.add_argument("--no-compile", action="store_true", help="torch: skip torch.compile")
    w.add_argument("--command", default=None,
                   help="command: template with {mixture_json} {model_size} {steps} "
                        "{checkpoints} {trial_dir} ... (see README)")
    w.add_argument("--work-dir", default="mfms-trials", help="command: per-trial folders")
    w.add_argument("--gpus", type=float, default=1.0,
                   help="command: GPUs a trial uses (cost = wall seconds x gpus unless the "
                        "script prints its cost)")
    w.add_argument("--problem", default="sim-k5", help="simulate: benchmark problem")
    w.add_argument("--time-per-cost", type=float, default=0.0,
                   help="simulate: seconds slept per unit of trial cost")
    w.add_argument("--max-model-size", type=float, default=None,
                   help="largest model (parameters) this machine can train")
    w.add_argument("--label", action="append", default=[],
                   help="a label this worker carries (repeatable); a study that requires "
                        "labels (`requires.labels`) is only given to workers carrying them")
    w.add_argument("--max-failures", type=int, default=3,
                   help="exit after this many trials in a row failed (0: never)")
    w.add_argument("--max-trials", type=int, default=None)
    w.add_argument("--once", action="store_true", help="exit when there is no work")
    w.add_argument("--worker-id", default=None, help="default: hostname-pid")
    w.add_argument("--poll-max", type=float, default=30.0,
                   help="longest wait between polls when there is no work (seconds)")
    w.set_defaults(func=_cmd_worker)

    st = sub.add_parser("study", help="create, list, show, pause, resume or stop studies on "
                        "a server, or change a study's budget or pause threshold (update; "
                        "budget is its older name)")
    st.add_argument("action", choices=["create", "list", "show", "pause", "resume", "stop",
                                       "update", "budget"])
    st.add_argument("id", type=int, nargs="?", help="the study id (all but create and list)")
    st.add_argument("--trials", default=None,
                    help="update: the new budget.trials, or none to lift it (default: keep)")
    st.add_argument("--cost", default=None,
                    help="update: the new budget.cost, or none to lift it (default: keep)")
    st.add_argument("--pause-after-failures", type=int, default=None,
                    help="update: pause the study after this many trials in a row failed "
                         "before any loss (0: never)")
    st.add_argument("--server", default="http://127.0.0.1:8000")
    st.add_argument("--token", default=None,
                    help="default: $MFMS_ADMIN_TOKEN, else $MFMS_API_TOKEN")
    st.add_argument("--file", default=None, help="create: JSON body of POST /studies")
    st.set_defaults(func=_cmd_study)

    dm = sub.add_parser("demo", help="server + simulated workers end to end on a temp SQLite")
    dm.add_argument("--problem", default="sim-k5", help="shipped name or file.py:NAME")
    dm.add_argument("--strategy", default="mfms-bo")
    dm.add_argument("--workers", type=int, default=2)
    dm.add_argument("--max-trials", type=int, default=40)
    dm.add_argument("--budget", type=float, default=None,
                    help="cost budget (default: 6 full-size runs)")
    dm.add_argument("--seed", type=int, default=0)
    dm.set_defaults(func=_cmd_demo)

    add_bench_command(sub)
    from workers.trainer.cli import add_data_command

    add_data_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `bench` records its command
    if args.command == "study" and args.action == "create" and not args.file:
        print("mfms study create: --file is required", file=sys.stderr)
        return 2
    if args.command == "study" and args.action not in ("create", "list") and args.id is None:
        print(f"mfms study {args.action}: the study id is required", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # import chatter
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        message = _one_line(exc, getattr(args, "server", None))
        if args.debug or message is None:
            raise
        print(f"mfms {args.command}: error: {message}", file=sys.stderr)
        return 1


def _one_line(exc: Exception, server: str | None) -> str | None:
    """The message a user needs for an error they can fix (server down, wrong token, bad
    input, unreadable file); None for anything else, which keeps its traceback (a bug)."""
    from mfms_bo.errors import MFMSError
    from mfms_client.client import APIError, AuthError, ServerUnreachable

    if isinstance(exc, ServerUnreachable):
        return (f"cannot reach the server at {server} ({exc}); is `mfms serve` running "
                "there?")
    if isinstance(exc, AuthError):
        return (f"{exc} (check --token or MFMS_ADMIN_TOKEN / MFMS_WORKER_TOKEN)")
    if isinstance(exc, (APIError, MFMSError, OSError, json.JSONDecodeError)):
        return str(exc)
    return None


if __name__ == "__main__":
    raise SystemExit(main())
