"""The deployment files: docker-compose.yml, the Dockerfile, deploy/kubernetes, deploy/slurm.

Three kinds of check: Docker Compose itself validates the compose file (when the docker
client and its compose plugin are installed; no daemon needed); the parsed files state what
a deployment depends on (migrations before serving, the database URL where it is needed,
workers pointed at the server, GPUs requested); and every ``mfms ...`` command line in them
is parsed by the real CLI parser, so renaming a flag breaks this test, not a deployment.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is in the dev extra: pip install -e '.[dev]'")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "deploy" / "kubernetes"
SBATCH = ROOT / "deploy" / "slurm" / "workers.sbatch"
STUDY = ROOT / "deploy" / "studies" / "sim-k5.json"


# -- helpers -----------------------------------------------------------------------------
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def _interpolate(value, env: dict[str, str]):
    """Compose's ``${VAR}`` / ``${VAR:-default}`` on every string in ``value``."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose_raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose(compose_raw: dict) -> dict:
    """The compose file as `docker compose config` sees it with no variables set."""
    return _interpolate(compose_raw, {})


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict]:
    """Every Kubernetes object under deploy/kubernetes, by ``Kind/name``."""
    objs: dict[str, dict] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objs


@pytest.fixture()
def parse(monkeypatch: pytest.MonkeyPatch):
    """Parse an ``mfms ...`` argv with the real CLI parser; fail with the argv on error."""
    for name in ("MFMS_SERVER_URL", "MFMS_API_TOKEN", "MFMS_WORKER_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    from mfms_cli.main import build_parser

    def _parse(argv: list[str], env: dict[str, str] | None = None):
        assert argv[0] == "mfms", argv
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        try:
            return build_parser().parse_args(argv[1:])
        except SystemExit as exc:  # argparse printed why on stderr
            pytest.fail(f"`mfms` refuses {argv!r} (exit {exc.code})")
        finally:
            for k in env or {}:
                monkeypatch.delenv(k, raising=False)

    return _parse


def _sub(args) -> str:
    """The subcommand a parsed argv runs (``args.command`` is the worker's --command flag)."""
    return args.func.__name__.removeprefix("_cmd_")


def _service_env(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", "KEY"]
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def _dockerfile_stages() -> dict[str, list[str]]:
    """Dockerfile instructions (continuations joined) by stage name."""
    stages: dict[str, list[str]] = {}
    current: list[str] | None = None
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.I)
        if m:
            current = stages.setdefault(m.group(1), [])
        if current is not None:
            current.append(line)
    return stages


def _k8s_argv(container: dict) -> list[str]:
    """A container's command with ``$(VAR)`` filled in as the kubelet would."""
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            key = e["valueFrom"]["secretKeyRef"]["key"]
            env[e["name"]] = "http://mfms:8000" if key == "server-url" else f"<{key}>"
        else:
            env[e["name"]] = "pod-0"
    argv = list(container.get("command", [])) + list(container.get("args", []))
    used = {v for a in argv for v in re.findall(r"\$\((\w+)\)", a)}
    assert used <= env.keys(), f"{container['name']}: $({sorted(used - env.keys())}) undefined"
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in argv]


# -- docker compose itself ---------------------------------------------------------------
def _docker_compose() -> list[str]:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker client not installed: `docker compose config` cannot validate "
                    "docker-compose.yml here (no daemon is needed, only the client)")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True,
                           timeout=30)
    if probe.returncode != 0:
        pytest.skip("docker client not installed: its compose plugin is missing "
                    f"(`docker compose version`: {(probe.stderr or probe.stdout).strip()})")
    return [docker, "compose", "-f", str(COMPOSE)]


def _clean_env() -> dict[str, str]:
    """This process's environment less the variables the compose file reads."""
    names = set(_VAR.findall(COMPOSE.read_text()))
    return {k: v for k, v in os.environ.items()
            if k not in {n for n, _ in names} and k != "COMPOSE_PROFILES"}


@pytest.mark.parametrize("profile", [[], ["--profile", "gpu"], ["--profile", "demo"]],
                         ids=["default", "gpu", "demo"])
def test_docker_compose_config_validates(profile: list[str]) -> None:
    """By default: the database and the server, no simulated workers (they would take any
    study with their domain names); ``--profile demo`` adds them, ``gpu`` the trainer."""
    base = _docker_compose()
    env = _clean_env()
    check = subprocess.run(base + profile + ["config", "-q"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    listed = subprocess.run(base + profile + ["config", "--services"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    expected = {"postgres", "server"} | {"gpu": {"gpu-worker"}, "demo": {"worker"}}.get(
        profile[-1] if profile else "", set())
    assert set(listed.stdout.split()) == expected


def test_docker_compose_worker_count_comes_from_the_environment() -> None:
    base = _docker_compose()
    env = _clean_env() | {"MFMS_SIM_WORKERS": "16"}
    out = subprocess.run(base + ["--profile", "demo", "config", "--format", "json"],
                         cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["services"]["worker"]["deploy"]["replicas"] == 16


# -- docker-compose.yml: what the deployment depends on -----------------------------------
def test_compose_services_and_postgres(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "server", "worker", "gpu-worker"}
    pg = services["postgres"]
    # A pinned major version: an unpinned image upgrades the cluster under its data volume,
    # which PostgreSQL refuses to start on.
    repo, _, tag = pg["image"].partition(":")
    assert repo == "postgres" and re.match(r"\d+", tag), pg["image"]
    # The healthcheck probes the database the server connects to, as its user; the server
    # waits for it (test_compose_server_migrates_then_serves_on_postgres).
    check = pg["healthcheck"]["test"]
    assert check[0] in ("CMD", "CMD-SHELL")
    probe = shlex.split(check[1]) if check[0] == "CMD-SHELL" else check[1:]
    assert probe[0] == "pg_isready", probe
    opts = dict(zip(probe[1::2], probe[2::2], strict=False))
    assert (opts.get("-U"), opts.get("-d")) == (pg["environment"]["POSTGRES_USER"],
                                                pg["environment"]["POSTGRES_DB"])
    # The data directory is a named volume: `docker compose down` keeps the studies.
    volume = pg["volumes"][0].split(":")
    assert volume[1] == "/var/lib/postgresql/data" and volume[0] in compose["volumes"]


def test_compose_server_migrates_then_serves_on_postgres(compose: dict, parse) -> None:
    server = compose["services"]["server"]
    args = parse(server["command"])
    assert _sub(args) == "serve" and args.upgrade, "the server must run migrations first"
    assert (args.host, args.port) == ("0.0.0.0", 8000) and args.workers >= 1
    assert "8000" in str(server["ports"][0]).split(":")[-1]
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/healthz" in " ".join(server["healthcheck"]["test"])
    assert server["build"]["target"] in _dockerfile_stages()


def test_compose_database_url_where_it_is_needed(compose: dict, parse) -> None:
    pg_env = compose["services"]["postgres"]["environment"]
    for name, service in compose["services"].items():
        if name == "postgres":
            continue
        args = parse(service["command"])
        env = _service_env(service)
        if _sub(args) in ("serve", "db"):
            url = urlsplit(env["MFMS_DATABASE_URL"])
            assert url.scheme == "postgresql+psycopg", url.scheme
            assert (url.hostname, url.port) == ("postgres", 5432)
            assert (url.username, url.password) == (pg_env["POSTGRES_USER"],
                                                    pg_env["POSTGRES_PASSWORD"])
            assert url.path == "/" + pg_env["POSTGRES_DB"]
        else:  # workers talk HTTP only: no database credentials in their containers
            assert "MFMS_DATABASE_URL" not in env, name
        token = "MFMS_ADMIN_TOKEN" if _sub(args) in ("serve", "db") else "MFMS_WORKER_TOKEN"
        assert token in env, f"{name}: {token} is not passed through"


def test_compose_workers_point_at_the_server(compose: dict, parse) -> None:
    workers = {n: s for n, s in compose["services"].items()
               if s.get("command", [None, None])[1] == "worker"}
    assert set(workers) == {"worker", "gpu-worker"}
    for name, service in workers.items():
        args = parse(service["command"])
        url = urlsplit(args.server)
        assert (url.hostname, url.port) == ("server", 8000), name
        assert service["depends_on"]["server"]["condition"] == "service_healthy"
        assert service["restart"] in ("always", "unless-stopped", "on-failure")
    assert parse(workers["worker"]["command"]).backend == "simulate"


def test_compose_worker_replicas_from_env(compose_raw: dict) -> None:
    replicas = compose_raw["services"]["worker"]["deploy"]["replicas"]
    assert int(_interpolate(replicas, {})) >= 1, "no workers without MFMS_SIM_WORKERS"
    assert _interpolate(replicas, {"MFMS_SIM_WORKERS": "16"}) == "16"


def test_compose_server_environment_names_real_settings(compose: dict) -> None:
    """Every ``MFMS_*`` variable given to the server is one ``server.config.Settings``
    reads: a misspelt or renamed one would be ignored silently (``extra="ignore"``)."""
    from server.config import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    known = {(prefix + name).upper() for name in Settings.model_fields}
    env = _service_env(compose["services"]["server"])
    given = {k for k in env if k.startswith("MFMS_")}
    assert "MFMS_DATABASE_URL" in given
    assert given <= known, f"not Settings fields: {sorted(given - known)}"


def test_compose_worker_environment_is_read_by_the_worker(compose: dict, parse) -> None:
    """Each ``MFMS_*`` variable passed to a worker container is read by the module that
    runs ``mfms worker`` (a renamed variable would leave the worker without its token)."""
    import inspect
    import sys

    for name in ("worker", "gpu-worker"):
        service = compose["services"][name]
        func = parse(service["command"]).func
        source = inspect.getsource(sys.modules[func.__module__])
        for var in _service_env(service):
            assert f'"{var}"' in source, f"{name}: {var} is never read by `mfms worker`"


def test_compose_gpu_worker(compose: dict, parse) -> None:
    gpu = compose["services"]["gpu-worker"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    args = parse(gpu["command"])
    assert args.backend == "torch" and args.data == "/data"
    assert any(v.split(":")[1] == "/data" for v in gpu["volumes"])
    assert gpu["volumes"][0].split(":")[0] in compose["volumes"]  # the default: named
    assert gpu["build"]["target"] == "gpu-worker"
    assert "gpu-worker" in _dockerfile_stages()


# -- Dockerfile -------------------------------------------------------------------------
def _cmd(stage: list[str]) -> list[str]:
    (line,) = [x for x in stage if x.upper().startswith("CMD ")]
    return json.loads(line[4:])


def test_dockerfile_stages(parse) -> None:
    text = DOCKERFILE.read_text()
    # The base image's Python is one the project supports (pyproject's requires-python).
    from packaging.specifiers import SpecifierSet

    image = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M)
    assert image, "the Python base image is a build argument"
    version = re.match(r"python:(\d+\.\d+)", image.group(1))
    assert version, image.group(1)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert version.group(1) + ".0" in SpecifierSet(requires["requires-python"])
    stages = _dockerfile_stages()
    assert {"server", "gpu-worker"} <= stages.keys()
    assert list(stages)[-1] == "server", "the default target (the last stage) is the server"
    for name in ("server", "gpu-worker"):
        stage = stages[name]
        torch = next(i for i, x in enumerate(stage) if "pip install \"torch==" in x)
        project = next(i for i, x in enumerate(stage) if "pip install /wheels/" in x)
        assert torch < project, f"{name}: torch must be installed before the project"
        users = [x.split()[1] for x in stage if x.startswith("USER ")]
        assert users and users[-1] not in ("root", "0"), f"{name}: runs as root"
    assert "download.pytorch.org/whl/cpu" in " ".join(stages["server"])
    # The torch both images pin satisfies the project's own torch requirement.
    from packaging.requirements import Requirement

    pinned = re.search(r"^ARG TORCH_VERSION=(\S+)", text, re.M)
    assert pinned, "torch is pinned by one build argument"
    (torch_req,) = [r for r in map(Requirement, requires["dependencies"]) if r.name == "torch"]
    assert pinned.group(1) in torch_req.specifier, (pinned.group(1), str(torch_req))
    serve = parse(_cmd(stages["server"]))
    assert _sub(serve) == "serve" and serve.host == "0.0.0.0" and serve.upgrade
    exposed = [int(p.split("/")[0]) for x in stages["server"] if x.startswith("EXPOSE ")
               for p in x.split()[1:]]
    assert exposed == [serve.port], "EXPOSE is the port the server's CMD listens on"
    # Both images start `mfms`: the console script pyproject installs, and it resolves.
    scripts = requires.get("scripts", {})
    for name in ("server", "gpu-worker"):
        assert _cmd(stages[name])[0] in scripts, f"{name}: CMD is not a console script"
    module, _, attr = scripts["mfms"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    # The GPU image's default command takes the server URL from the environment.
    work = parse(_cmd(stages["gpu-worker"]), env={"MFMS_SERVER_URL": "http://mfms:8000"})
    assert (work.backend, work.data, work.server) == ("torch", "/data", "http://mfms:8000")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "bench/results", "*.db"} <= set(ignored)


# -- Kubernetes -------------------------------------------------------------------------
def test_k8s_server_deployment_and_service(k8s: dict, parse) -> None:
    deploy = k8s["Deployment/mfms-server"]
    pod = deploy["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    migrate = parse(_k8s_argv(init))
    assert (_sub(migrate), migrate.action) == ("db", "upgrade")
    (server,) = pod["containers"]
    serve = parse(_k8s_argv(server))
    assert _sub(serve) == "serve" and (serve.host, serve.port) == ("0.0.0.0", 8000)
    for c in (init, server):
        names = {e["name"]: e for e in c["env"]}
        ref = names["MFMS_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("mfms-server", "database-url")
    secrets = {name: doc for name, doc in k8s.items() if name.startswith("Secret/")}
    env = {e["name"]: e for e in server["env"]}
    for var in ("MFMS_ADMIN_TOKEN", "MFMS_WORKER_TOKEN"):  # the server checks both tokens
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secrets[f"Secret/{ref['name']}"]["stringData"], var
    assert server["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    service = k8s["Service/mfms"]
    assert service["spec"]["ports"][0]["port"] == 8000
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_k8s_worker_job_one_gpu_per_pod(k8s: dict, parse) -> None:
    job = k8s["Job/mfms-workers"]
    assert job["spec"]["parallelism"] > 1 and "completions" not in job["spec"]
    pod = job["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    args = parse(_k8s_argv(worker))
    assert (_sub(args), args.backend, args.data) == ("worker", "torch", "/data")
    assert args.server == "http://mfms:8000" and args.study == 1
    env = {e["name"]: e for e in worker["env"]}
    secrets = {name: doc for name, doc in k8s.items() if name.startswith("Secret/")}
    for var in ("MFMS_SERVER_URL", "MFMS_WORKER_TOKEN"):
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secrets[f"Secret/{ref['name']}"]["stringData"], var
    assert "MFMS_DATABASE_URL" not in env
    (mount,) = [m for m in worker["volumeMounts"] if m["mountPath"] == "/data"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert f"PersistentVolumeClaim/{volume['persistentVolumeClaim']['claimName']}" in k8s


# -- Slurm ------------------------------------------------------------------------------
def _run_sbatch(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run the batch script with bash, ``mfms`` replaced by a stub that saves its argv."""
    stub = tmp_path / "mfms"
    stub.write_text("#!/bin/sh\nprintf '%s\\0' \"$@\" > \"$ARGV_OUT\"\n")
    stub.chmod(0o755)
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MFMS": str(stub),
            "ARGV_OUT": str(tmp_path / "argv")}
    return subprocess.run(["bash", str(SBATCH)], env=base | env, capture_output=True,
                          text=True, timeout=30)


def test_slurm_job_array_one_gpu_per_task(tmp_path: Path, parse) -> None:
    directives = re.findall(r"^#SBATCH\s+(\S+)", SBATCH.read_text(), re.M)
    assert any(d.startswith("--array=") for d in directives)
    assert "--gres=gpu:1" in directives or "--gpus-per-task=1" in directives
    common = {"MFMS_SERVER_URL": "http://mfms.example:8000", "MFMS_DATA": "/shared/data",
              "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "3"}
    for extra, study in (({}, None), ({"MFMS_STUDY_ID": "5"}, 5)):
        run = _run_sbatch(tmp_path, **common, **extra)
        assert run.returncode == 0, run.stderr
        argv = (tmp_path / "argv").read_text().split("\0")[:-1]
        args = parse(["mfms", *argv])
        assert (_sub(args), args.backend, args.data, args.gpus) == (
            "worker", "torch", "/shared/data", 1.0)
        assert args.server == "http://mfms.example:8000" and args.study == study
        assert args.worker_id == "slurm-77_3"


def test_slurm_refuses_to_start_without_a_server(tmp_path: Path) -> None:
    run = _run_sbatch(tmp_path, MFMS_DATA="/shared/data")
    assert run.returncode != 0 and "MFMS_SERVER_URL" in run.stderr


# -- the example study the README posts to the compose stack -----------------------------
def test_example_study_matches_the_simulated_workers_problem(compose: dict, parse) -> None:
    from mfms_bo.bench.harness import load_problem
    from mfms_cli.demo import study_of_problem
    from mfms_client.schemas import StudyCreate

    body = json.loads(STUDY.read_text())
    StudyCreate.model_validate(body)
    problem = parse(compose["services"]["worker"]["command"]).problem
    assert body == study_of_problem(load_problem(problem), body["name"],
                                    body["strategy"]["name"], body["seed"], body["budget"])
