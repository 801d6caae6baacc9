"""Every shell snippet in README.md is run by a test, so a copied example works.

The README's fenced ``bash``/``sh``/``shell``/``console`` blocks (and unlabelled blocks that
start with a command) are split into commands; every command must be in ``RUN`` (executed
here for real, with ``bash -c``, in a temporary directory with its own SQLite database and no
``MFMS_*`` variables from the caller) or in ``EXEMPT`` with the reason it cannot run in a
test. A command in neither table fails the test, so a new snippet cannot slip in untested,
and a table entry the README no longer has fails too, so the tables cannot rot. Exempt
commands are still checked as far as is cheap: ``mfms ...`` against the real argument
parser (a renamed flag fails), ``python script.py`` by its ``--help``, ``make`` targets
and ``docker compose`` services against the Makefile and the compose file.

The README's commands name a server at ``http://mfms:8000``, ``localhost:8000`` or
``127.0.0.1:8000``; here the server runs on a free port (tests run side by side) and only
that address is rewritten. A worker runs until stopped, so the test adds ``--max-trials``;
placeholders a user replaces (a PostgreSQL URL) are filled in by the step that runs them.
Python blocks are classified the same way: the orchestrator quickstart runs against the
live server (it reads ``MFMS_SERVER_URL``); blocks with the user's own training loop are
compiled and their imports run.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from mfms_bo.bench.harness import load_problem
from mfms_cli.demo import study_of_problem
from mfms_cli.main import build_parser
from mfms_client.client import MFMSClient
from server import migrate
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
README_PORT = "8000"

# -- the README's commands, classified ----------------------------------------------------
# Keys are the commands as the README has them: continuation lines joined, the trailing
# comment dropped, whitespace collapsed.

SERVE = ".venv/bin/mfms serve --host 0.0.0.0 --port 8000"
SERVE_PG = ("MFMS_DATABASE_URL=postgresql://user@db/mfms MFMS_ADMIN_TOKEN=adm "
            "MFMS_WORKER_TOKEN=wrk .venv/bin/mfms serve --upgrade --workers 2 --host 0.0.0.0")
DB_BACKUP = ".venv/bin/mfms db backup -o all.json"
DB_EXPORT = ".venv/bin/mfms db export --study pile-mix-v1 -o s.json"
DB_IMPORT = (".venv/bin/mfms db import s.json --name pile-mix-v2 "
             "--database-url postgresql://user@db/mfms")
CURL_CREATE = ("curl -X POST localhost:8000/studies -H 'content-type: application/json' "
               "-d @study.json")
CURL_RECOMMEND = "curl localhost:8000/studies/1/recommendation"
WORKER_COMMAND = (
    '.venv/bin/mfms worker --server http://mfms:8000 --token secret --backend command '
    '--command "python examples/train_example.py --mixture {mixture_json} --model-size '
    '{model_size} --steps {steps} --checkpoints {checkpoints} --out {trial_dir}"')
WORKER_SIMULATE = (".venv/bin/mfms worker --server http://mfms:8000 --backend simulate "
                   "--problem sim-k5")
DATA_PREPARE = ".venv/bin/mfms data prepare --domain code --out data/ corpus/code/"
DATA_EXAMPLE = ".venv/bin/mfms data example --out data/"
STUDY_CREATE_TORCH = (".venv/bin/mfms study create --file examples/torch_study.json "
                      "--server http://127.0.0.1:8000")

RUN: dict[str, str] = {
    SERVE: "test_quickstart_as_copied: the live server every quickstart step talks to",
    SERVE_PG: "test_postgresql_server_with_two_tokens: on a fresh PostgreSQL database",
    DB_BACKUP: "test_quickstart_as_copied: backs up the studies the quickstart made",
    DB_EXPORT: "test_quickstart_as_copied: exports the orchestrator's study",
    DB_IMPORT: "test_quickstart_as_copied: into a second SQLite database",
    CURL_CREATE: "test_quickstart_as_copied: study.json is a sim-k5 study",
    CURL_RECOMMEND: "test_quickstart_as_copied: after the command worker ran trials",
    WORKER_COMMAND: "test_quickstart_as_copied: with --max-trials 2",
    WORKER_SIMULATE: "test_quickstart_as_copied: with --max-trials 2",
    DATA_PREPARE: "test_data_commands: corpus/code/ holds a few text files",
    DATA_EXAMPLE: "test_data_commands",
    STUDY_CREATE_TORCH: "test_quickstart_as_copied",
}

_TORCH_TRIAL = ("a torch trial of examples/torch_study.json trains for minutes on a CPU; "
                "tests/workers/trainer/test_trainer_e2e.py runs the torch backend at the "
                "smallest settings")
_DOCKER = "needs a Docker daemon and builds images; tests/deploy checks the compose file"
_BENCH = "a benchmark: minutes to hours of CPU; tests/mfms_cli/test_bench.py runs the harness"

EXEMPT: dict[str, str] = {
    "make demo": "builds the virtual environment first, then `mfms demo` runs 40 trials "
                 "(about 45 s); tests/mfms_cli/test_main.py runs `mfms demo` with a trial cap",
    "make test": "CI's own command: it runs this test among all the others",
    ".venv/bin/mfms worker --server http://mfms:8000 --backend torch --data data/": _TORCH_TRIAL,
    ".venv/bin/mfms worker --server http://127.0.0.1:8000 --backend torch --data data/ --once":
        _TORCH_TRIAL,
    "docker compose up -d --build": _DOCKER,
    "docker compose --profile demo up -d": _DOCKER,
    "MFMS_SIM_WORKERS=16 docker compose --profile demo up -d": _DOCKER,
    "MFMS_DATA_DIR=$PWD/data docker compose --profile gpu up -d gpu-worker": _DOCKER,
    ".venv/bin/mfms bench --suite standard --quick --seeds 2": _BENCH,
    ".venv/bin/mfms bench --suite standard --json out.json --report out.md --plot out.png":
        _BENCH,
    ".venv/bin/mfms bench --problem my_problem.py:PROBLEM":
        _BENCH + "; my_problem.py is the reader's own problem",
    ".venv/bin/python bench/latency.py": _BENCH,
    ".venv/bin/python bench/surrogate_accuracy.py": _BENCH,
}

# Python blocks, keyed by their first line that names an mfms module.
PY_ORCHESTRATOR = "from mfms_client.client import MFMSClient"
PY_RUN: dict[str, str] = {
    PY_ORCHESTRATOR: "test_quickstart_as_copied: against the live server, with a worker",
}
PY_EXEMPT: dict[str, str] = {
    "from mfms_bo import FidelitySpace, MixtureSpace, SearchSpace, make_strategy":
        "train() and gpu_seconds are the reader's own; compiled, imports run",
    "from mfms_bo.online import Aioli":
        "the reader's own model, loaders and loop; compiled, imports run",
}
# The orchestrator block pauses here while workers run trials.
PY_WAIT_MARKER = "# ... workers run trials; once some have completed:"


# -- reading README.md --------------------------------------------------------------------
@dataclass
class Block:
    lang: str
    line: int  # of the block's first code line
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


@dataclass
class Command:
    text: str  # as bash gets it: continuations joined, trailing comment dropped
    line: int
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = " ".join(self.text.split())


def fenced_blocks(markdown: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, with their language (lower case, or '')."""
    blocks, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, start = m.group(1), i + 1
        end = start
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        blocks.append(Block(m.group(2).lower(), start + 1, lines[start:end]))
        i = end + 1
    return blocks


def _strip_comment(line: str) -> str:
    """``line`` without a trailing shell comment (a ``#`` outside quotes after a blank)."""
    quote = None
    for k, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip()
    return line.rstrip()


def _looks_like_commands(block: Block) -> bool:
    """An unlabelled block counts as shell when its first line starts like a command (a
    prompt, a path, an env assignment or a known program), not like a diagram."""
    first = next((s.strip() for s in block.lines if s.strip()), "")
    word = first.removeprefix("$ ").split(" ", 1)[0]
    return (first.startswith("$ ") or word.startswith((".venv/", "./", "/"))
            or bool(re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", word))
            or word in {"make", "mfms", "python", "python3", "curl", "docker", "pip", "git",
                        "export", "cd", "psql", "alembic", "kubectl", "sbatch"})


def shell_commands(block: Block) -> list[Command]:
    """Split a shell block into commands: ``\\`` continuations joined (as bash does, also
    inside double quotes), comments dropped; in a ``console`` block only ``$ `` lines."""
    commands: list[Command] = []
    buf, first = "", 0
    for n, raw in enumerate(block.lines, block.line):
        line = raw
        if not buf:
            if block.lang == "console" or line.lstrip().startswith("$ "):
                if not line.lstrip().startswith("$ "):
                    continue  # output
                line = line.lstrip()[2:]
            if not line.strip() or line.strip().startswith("#"):
                continue
            first = n
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1]
            continue
        text = _strip_comment(buf + line).strip()
        buf = ""
        if text:
            commands.append(Command(text, first))
    return commands


def readme_blocks() -> list[Block]:
    return fenced_blocks(README.read_text())


def readme_commands() -> list[Command]:
    commands = []
    for b in readme_blocks():
        if b.lang in SHELL_LANGUAGES or (b.lang == "" and _looks_like_commands(b)):
            commands += shell_commands(b)
    return commands


def python_key(block: Block) -> str:
    return next((s.strip() for s in block.lines if "mfms" in s), block.lines[0].strip())


def python_blocks() -> list[Block]:
    return [b for b in readme_blocks() if b.lang in ("python", "py", "python3")]


def readme_command(key: str) -> Command:
    """The README's current text of a classified command (it fails if the README lost it)."""
    for c in readme_commands():
        if c.key == key:
            return c
    raise AssertionError(f"README.md has no command {key!r} any more; update the tables in "
                         f"{Path(__file__).name}")


# -- the classification itself ------------------------------------------------------------
def test_every_readme_snippet_is_classified() -> None:
    commands = readme_commands()
    assert commands, "no shell commands found in README.md: is the parser broken?"
    unknown = [c for c in commands if c.key not in RUN and c.key not in EXEMPT]
    assert not unknown, (
        "README.md commands that no test runs or exempts; add each to RUN (and run it in a "
        f"test) or to EXEMPT with the reason in {Path(__file__).name}:\n"
        + "\n".join(f"  line {c.line}: {c.key}" for c in unknown))
    keys = {c.key for c in commands}
    stale = [k for k in [*RUN, *EXEMPT] if k not in keys]
    assert not stale, ("entries that README.md no longer has (update or remove them):\n"
                       + "\n".join(f"  {k}" for k in stale))
    assert not set(RUN) & set(EXEMPT)
    for key, how in RUN.items():
        test = how.split(":", 1)[0]
        assert callable(globals().get(test)), f"RUN[{key!r}] names no test here: {test}"

    blocks = {python_key(b): b for b in python_blocks()}
    unknown_py = [k for k in blocks if k not in PY_RUN and k not in PY_EXEMPT]
    assert not unknown_py, ("README.md python blocks neither run nor exempted (add them to "
                            f"PY_RUN or PY_EXEMPT): {unknown_py}")
    stale_py = [k for k in [*PY_RUN, *PY_EXEMPT] if k not in blocks]
    assert not stale_py, f"python entries README.md no longer has: {stale_py}"


def test_parser_handles_continuations_comments_and_prompts() -> None:
    """The splitter does what bash does with the README's constructs."""
    block = Block("bash", 1, [
        "# a comment line",
        "A=1 B=2 \\",
        '  prog --x "one \\',
        '   two" # trailing comment',
        "prog 'it''s' --url http://h/#frag   # here # twice",
        "",
    ])
    got = [c.text for c in shell_commands(block)]
    assert got == ['A=1 B=2   prog --x "one    two"', "prog 'it''s' --url http://h/#frag"]
    console = Block("console", 1, ["$ mfms study list", "    1  running  x", "$ make test"])
    assert [c.text for c in shell_commands(console)] == ["mfms study list", "make test"]
    diagram = Block("", 1, ["orchestrator --POST /studies--> server"])
    assert not _looks_like_commands(diagram)
    assert _looks_like_commands(Block("", 1, [".venv/bin/mfms serve"]))


# -- checks for exempt commands -----------------------------------------------------------
def _argv(command: str) -> list[str]:
    """The words of a command after its leading ``NAME=value`` assignments."""
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words.pop(0)
    return words


def test_exempt_commands_still_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """What can be checked without running them: ``mfms`` flags against the real parser,
    scripts by ``--help``, make targets and compose services by their files."""
    monkeypatch.delenv("MFMS_SERVER_URL", raising=False)  # `worker --server` stays required
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose.get("services", {})
    profiles = {p for s in services.values() for p in s.get("profiles", [])}
    makefile = (ROOT / "Makefile").read_text()
    helps: list[tuple[str, subprocess.Popen]] = []
    for key in EXEMPT:
        argv = _argv(readme_command(key).text)
        program = Path(argv[0]).name
        if program == "mfms":
            try:
                build_parser().parse_args(argv[1:])
            except SystemExit as exc:
                pytest.fail(f"README.md: `{key}` no longer parses (exit {exc.code})")
        elif program.startswith("python"):
            script = ROOT / argv[1]
            assert script.is_file(), f"README.md: `{key}`: no file {argv[1]}"
            helps.append((key, subprocess.Popen([sys.executable, str(script), "--help"],
                                                cwd=ROOT, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.PIPE, text=True)))
        elif program == "make":
            for target in argv[1:]:
                assert re.search(rf"^{re.escape(target)}:", makefile, re.M), (
                    f"README.md: `{key}`: the Makefile has no target {target}")
        elif argv[:2] == ["docker", "compose"]:
            words = argv[2:]
            for i, w in enumerate(words):
                if w == "--profile":
                    assert words[i + 1] in profiles, f"`{key}`: no profile {words[i + 1]}"
            if "up" in words:
                named = [w for w in words[words.index("up") + 1:] if not w.startswith("-")]
                missing = [s for s in named if s not in services]
                assert not missing, f"`{key}`: docker-compose.yml has no service {missing}"
        else:
            pytest.fail(f"no check for the exempt command `{key}`; add one here")
    for key, proc in helps:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"README.md: `{key} --help` failed:\n{err[-2000:]}"


def test_exempt_python_blocks_compile_and_import() -> None:
    for block in python_blocks():
        key = python_key(block)
        if key not in PY_EXEMPT:
            continue
        tree = ast.parse(block.text, filename=f"README.md:{block.line}")
        imports = ast.Module([n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)],
                             type_ignores=[])
        assert imports.body, f"README.md:{block.line}: an exempt block without imports"
        exec(compile(imports, f"README.md:{block.line}", "exec"), {})


# -- running commands for real ------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Workspace:
    """A temporary directory laid out like a checkout: ``.venv/bin`` (this interpreter and
    an ``mfms`` that runs this checkout's CLI) and ``examples/``, with its own environment."""

    root: Path
    env: dict[str, str]
    port: int = 0
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def localize(self, command: str) -> str:
        """The README's server address rewritten to this workspace's port."""
        here = f"127.0.0.1:{self.port}"
        command = command.replace(f"http://mfms:{README_PORT}", f"http://{here}")
        for old in (f"localhost:{README_PORT}", f"127.0.0.1:{README_PORT}"):
            command = command.replace(old, here)
        return command.replace(f"--port {README_PORT}", f"--port {self.port}")

    def command(self, key: str, *, fill: dict[str, str] | None = None, append: str = "") -> str:
        text = self.localize(readme_command(key).text)
        for old, new in (fill or {}).items():
            assert old in text, f"`{key}`: nothing to fill for {old!r}"
            text = text.replace(old, new)
        return f"{text} {append}".strip()

    def run(self, key: str, *, fill: dict[str, str] | None = None, append: str = "",
            timeout: float = 120) -> str:
        """Run a README command to its end; its stdout, failing the test on a non-zero exit."""
        text = self.command(key, fill=fill, append=append)
        done = subprocess.run(["bash", "-c", text], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, (f"README command failed (exit {done.returncode}): "
                                      f"{text}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def run_together(self, *keys: str, append: dict[str, str] | None = None) -> list[str]:
        """Run independent README commands side by side (each ``mfms`` process spends
        seconds importing before it does anything); their stdouts, in order."""
        with ThreadPoolExecutor(len(keys)) as pool:
            futures = [pool.submit(self.run, k, append=(append or {}).get(k, ""))
                       for k in keys]
            return [f.result() for f in futures]

    def start(self, key: str, *, fill: dict[str, str] | None = None, append: str = "",
              log: str = "proc.log") -> subprocess.Popen:
        """Start a README command in the background (its own process group, stopped at
        the end of the test); its output goes to ``log`` in the workspace."""
        text = self.command(key, fill=fill, append=append)
        out = open(self.root / log, "w")  # closed by stop()
        proc = subprocess.Popen(["bash", "-c", text], cwd=self.root, env=self.env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        proc.log = out  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def tail(self, log: str) -> str:
        path = self.root / log
        return path.read_text()[-3000:] if path.exists() else ""

    def stop(self, proc: subprocess.Popen) -> None:
        """SIGTERM to the command's process group (bash, the server and its processes),
        SIGKILL if it is still there after 30 s."""
        if proc.poll() is not None:  # exited and reaped: its pid may be someone else's now
            proc.log.close()  # type: ignore[attr-defined]
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        proc.log.close()  # type: ignore[attr-defined]

    def wait_healthy(self, url: str, proc: subprocess.Popen, log: str) -> None:
        def up() -> bool:
            assert proc.poll() is None, f"the server exited:\n{self.tail(log)}"
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, 90, f"the server at {url}", interval=0.2)


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    # wrappers, not symlinks: a linked interpreter would lose its virtual environment
    for name, args in (("python", ""), ("mfms", " -m mfms_cli")):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec "{sys.executable}"{args} "$@"\n')
        (bin_dir / name).chmod(0o755)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFMS_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    # this checkout, importable from the workspace whether or not it is installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    ws = Workspace(tmp_path, env)
    try:
        yield ws
    finally:
        for proc in reversed(ws.procs):
            ws.stop(proc)


@pytest.fixture
def live(workspace: Workspace) -> Iterator[Workspace]:
    """The README's ``mfms serve`` on a free port, on ``./mfms.db`` in the workspace."""
    workspace.port = _free_port()
    server = workspace.start(SERVE, log="server.log")
    workspace.wait_healthy(workspace.url, server, "server.log")
    yield workspace


def _orchestrator_script() -> str:
    """The README's orchestrator block, pausing at its marker until workers completed two
    trials (a worker started by the test runs them meanwhile)."""
    block = next(b for b in python_blocks() if python_key(b) == PY_ORCHESTRATOR)
    assert PY_WAIT_MARKER in block.text, f"the orchestrator block lost {PY_WAIT_MARKER!r}"
    wait = ("import time as _t\n"
            "_deadline = _t.monotonic() + 120\n"
            "while sum(t.state == 'completed' for t in client.list_trials(study.id)) < 2:\n"
            "    assert _t.monotonic() < _deadline, 'no two trials completed in 120 s'\n"
            "    _t.sleep(0.2)\n")
    return block.text.replace(PY_WAIT_MARKER, wait)


def test_quickstart_as_copied(live: Workspace) -> None:
    """Server, orchestrator, workers, curl and the study transfer commands, in the order a
    reader follows them."""
    ws = live
    # A command worker waits for the orchestrator's study, runs two trials and exits.
    worker = ws.start(WORKER_COMMAND, append="--max-trials 2 --poll-max 1", log="worker.log")
    (ws.root / "orchestrator.py").write_text(_orchestrator_script())
    done = subprocess.run([sys.executable, "orchestrator.py"], cwd=ws.root, capture_output=True,
                          text=True, timeout=180, env={**ws.env, "MFMS_SERVER_URL": ws.url})
    assert done.returncode == 0, (f"the README's orchestrator block failed:\n{done.stderr}\n"
                                  f"worker:\n{ws.tail('worker.log')}")
    assert "code" in done.stdout and "math" in done.stdout  # the recommended mixture
    assert worker.wait(60) == 0, ws.tail("worker.log")
    assert "2 trial(s) completed" in ws.tail("worker.log")

    study = study_of_problem(load_problem("sim-k5"), "sim-k5-study", "mfms-bo", 0,
                             {"trials": 10})
    (ws.root / "study.json").write_text(json.dumps(study))
    created = json.loads(ws.run(CURL_CREATE))
    assert created["name"] == "sim-k5-study", created
    rec = json.loads(ws.run(CURL_RECOMMEND))
    assert set(rec["mixture"]) == {"code", "web", "books", "math"}, rec

    out, torch_study = ws.run_together(
        WORKER_SIMULATE, STUDY_CREATE_TORCH,
        append={WORKER_SIMULATE: "--max-trials 2 --poll-max 1"})
    assert "2 trial(s) completed" in out, out
    assert len(MFMSClient(ws.url).list_trials(created["id"], state="completed")) == 2
    assert json.loads(torch_study)["name"] == "example-torch"

    ws.run_together(DB_BACKUP, DB_EXPORT)
    names = {s["study"]["name"] for s in json.loads((ws.root / "all.json").read_text())["studies"]}
    assert {"pile-mix-v1", "sim-k5-study", "example-torch"} <= names, names
    assert json.loads((ws.root / "s.json").read_text())["study"]["name"] == "pile-mix-v1"
    other = f"sqlite:///{ws.root}/other.db"
    migrate.upgrade(other)  # the README imports into a deployment's database
    out = ws.run(DB_IMPORT, fill={"postgresql://user@db/mfms": other})
    assert "imported study 'pile-mix-v2'" in out, out


def test_data_commands(workspace: Workspace) -> None:
    ws = workspace
    code = ws.root / "corpus" / "code"
    code.mkdir(parents=True)
    for src in sorted((ROOT / "mfms_bo").glob("*.py"))[:6]:
        (code / f"{src.stem}.txt").write_text(src.read_text())
    ws.run(DATA_PREPARE)
    assert (ws.root / "data" / "code").is_dir()
    out = ws.run(DATA_EXAMPLE, timeout=300)
    assert "domains for a study:" in out, out
    study = json.loads((ROOT / "examples" / "torch_study.json").read_text())
    for domain in study["domains"]:  # what the README's torch study trains on
        assert (ws.root / "data" / domain).is_dir(), domain



@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (``mfms serve --upgrade`` creates the schema)."""
    from tests.postgres import empty_postgres_database

    with empty_postgres_database("mfms_readme") as url:
        # the README's form of the URL: plain postgresql://, as a user would write it
        yield url.replace("+psycopg", "")


def test_postgresql_server_with_two_tokens(workspace: Workspace, pg_database: str) -> None:
    ws = workspace
    ws.port = _free_port()
    server = ws.start(SERVE_PG, fill={"postgresql://user@db/mfms": pg_database},
                      append=f"--port {ws.port}", log="server-pg.log")
    ws.wait_healthy(ws.url, server, "server-pg.log")
    body = study_of_problem(load_problem("sim-k3"), "tokens", "random", 0, {"trials": 2})

    def post(token: str) -> int:
        return httpx.post(f"{ws.url}/studies", json=body, timeout=30,
                          headers={"authorization": f"Bearer {token}"}).status_code

    assert post("wrk") == 403  # the worker token on an admin route
    assert post("adm") in (200, 201)
    for _ in range(8):  # whichever process answers reads the same database
        assert [st.name for st in MFMSClient(ws.url).list_studies()] == ["tokens"]
