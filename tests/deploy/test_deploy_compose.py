"""docker-compose.yml and the Dockerfile, checked statically against the code they deploy.

No Docker engine is needed: the YAML is parsed and every name it relies on (EVONORM_* settings,
CLI subcommands and options, `ray start` options, paths the Dockerfile copies) is looked up in
the code. When a compose binary is installed, `docker compose config -q` validates the file too.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from api.cli import app
from evonorm_search.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
SERVICES = {"postgres", "coordinator", "ray-head", "ray-worker"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def _steps(service: dict[str, Any]) -> list[list[str]]:
    """A command's steps: `sh -c "a && exec b"` -> [a, b] (without `exec`), a plain command -> [it]."""
    argv = _command(service)
    if argv[:2] != ["sh", "-c"]:
        return [argv]
    steps = [shlex.split(part) for part in argv[2].split("&&")]
    return [step[1:] if step[0] == "exec" else step for step in steps]


def _options(command: Any) -> set[str]:
    return {opt for p in command.params for opt in getattr(p, "opts", [])}


def _used_options(argv: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in argv if a.startswith("--")}


def test_services_and_startup_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    pg = services["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any(v.startswith("pgdata:") for v in pg["volumes"]) and "pgdata" in compose["volumes"]
    for name in ("coordinator", "ray-head"):
        assert "healthcheck" in services[name], name
    # The coordinator starts only once the database and Ray accept connections.
    assert services["coordinator"]["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                                     "ray-head": {"condition": "service_healthy"}}
    assert services["ray-worker"]["depends_on"] == {"ray-head": {"condition": "service_healthy"}}


def test_ray_workers_reserve_a_gpu_and_can_scale(compose: dict[str, Any]) -> None:
    worker = compose["services"]["ray-worker"]
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"] and device["count"] == 1
    # `--scale ray-worker=N` needs replicas without fixed names or published host ports.
    assert "container_name" not in worker and "ports" not in worker
    assert "shm_size" in worker   # Ray's object store lives in /dev/shm


def test_environment_names_are_real_settings(compose: dict[str, Any]) -> None:
    prefix = Settings.model_config.get("env_prefix", "")
    assert prefix == "EVONORM_"
    known = {prefix + name.upper() for name in Settings.model_fields}
    used = {key for svc in compose["services"].values() for key in (svc.get("environment") or {})
            if key.startswith(prefix)}
    assert used, "no EVONORM_ settings configured"
    assert used <= known, f"not settings: {sorted(used - known)}"
    env = compose["services"]["coordinator"]["environment"]
    for required in ("EVONORM_DB_URL", "EVONORM_RAY_ADDRESS", "EVONORM_TOKEN", "EVONORM_EXECUTOR"):
        assert required in env, required
    assert env["EVONORM_DB_URL"].startswith("postgresql://") and "@postgres:5432/" in env["EVONORM_DB_URL"]
    # The coordinator's own Ray node (joined before `serve`) is what `auto` finds.
    assert env["EVONORM_RAY_ADDRESS"] == "auto"
    # The driver and every node share one Ray auth token.
    tokens = {svc["environment"]["RAY_AUTH_TOKEN"] for name, svc in compose["services"].items()
              if name != "postgres"}
    assert len(tokens) == 1
    # ...and set the auth mode explicitly: Ray 2.60 decides it per process otherwise (a token file in
    # the home directory turns it on for `ray start --head` but not for `ray start --address`).
    assert {svc["environment"]["RAY_AUTH_MODE"] for name, svc in compose["services"].items()
            if name != "postgres"} == {"token"}


def test_exports_volume_is_the_export_dir(compose: dict[str, Any]) -> None:
    coordinator = compose["services"]["coordinator"]
    export_dir = coordinator["environment"]["EVONORM_EXPORT_DIR"]
    assert f"exports:{export_dir}" in coordinator["volumes"] and "exports" in compose["volumes"]


def test_coordinator_joins_ray_as_an_empty_node_then_serves(compose: dict[str, Any]) -> None:
    from ray.scripts.scripts import start

    join, argv = _steps(compose["services"]["coordinator"])
    assert join[:2] == ["ray", "start"] and "--address=ray-head:6379" in join
    assert "--head" not in join and "--block" not in join    # it must return so that `serve` runs
    assert {"--num-cpus=0", "--num-gpus=0"} <= set(join)      # no evaluation is scheduled next to the API
    assert _used_options(join) <= _options(start), _used_options(join) - _options(start)
    assert "shm_size" in compose["services"]["coordinator"]
    assert argv[0] == "evonorm-search"
    cli = typer.main.get_command(app)
    commands: dict[str, Any] = getattr(cli, "commands", {})   # typer vendors its own click classes
    serve = commands.get(argv[1])
    assert serve is not None, f"no subcommand {argv[1]!r}: {sorted(commands)}"
    assert _used_options(argv) <= _options(serve)
    # Beyond loopback, `serve` refuses to start without a token.
    assert "0.0.0.0" in argv and "EVONORM_TOKEN" in compose["services"]["coordinator"]["environment"]


def test_ray_commands_use_real_options(compose: dict[str, Any]) -> None:
    from ray.scripts.scripts import start

    for name in ("ray-head", "ray-worker"):
        argv = _command(compose["services"][name])
        assert argv[:2] == ["ray", "start"] and "--block" in argv, name   # --block: the container's process
        assert _used_options(argv) <= _options(start), f"{name}: {_used_options(argv) - _options(start)}"
    assert "--head" in _command(compose["services"]["ray-head"])
    assert "--address=ray-head:6379" in _command(compose["services"]["ray-worker"])


def _dockerfile() -> list[list[str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [shlex.split(line, posix=False) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_base_torch_user_and_paths() -> None:
    lines = _dockerfile()
    assert lines[0][:2] == ["FROM", "python:3.11-slim"]
    args = {line[1].split("=", 1)[0] for line in lines if line[0] == "ARG"}
    assert {"TORCH_INDEX_URL", "TORCH_VERSION"} <= args
    runs = [" ".join(line[1:]) for line in lines if line[0] == "RUN"]
    torch_at = next(i for i, r in enumerate(runs) if "torch==" in r)
    package_at = next(i for i, r in enumerate(runs) if "pip install -e ." in r or "pip install ." in r)
    assert torch_at < package_at and "TORCH_INDEX_URL" in runs[torch_at]
    users = [line[1] for line in lines if line[0] == "USER"]
    assert users and users[-1] not in ("root", "0")
    ignored = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
               if p.strip() and not p.startswith("#")]
    copied = [src for line in lines if line[0] == "COPY" for src in line[1:-1] if not src.startswith("--")]
    for src in copied:
        assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
        assert not any(fnmatch.fnmatch(src.rstrip("/"), pat) for pat in ignored), f"{src} is dockerignored"
    # Every package of the distribution goes into the image.
    packages = {"primitives", "workers", "evonorm_search", "db", "api"}
    assert packages <= {src.rstrip("/") for src in copied}
    cmd = next(line for line in lines if line[0] == "CMD")
    assert "serve" in " ".join(cmd)


def _compose_binary() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_validates() -> None:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("no `docker compose` plugin or docker-compose binary here; the structure is checked above")
    env = {"EVONORM_TOKEN": "t" * 32, "RAY_AUTH_TOKEN": "r" * 32, "PATH": os.environ["PATH"]}
    out = subprocess.run([*binary, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
