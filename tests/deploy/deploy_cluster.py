"""The deployment topology as real processes on one machine: Ray nodes and the coordinator.

Every process is started in its own session and torn down by killing its whole
process tree (snapshotted first, since Ray's worker processes set their own
process groups). `ray stop` is never used: it stops every Ray process on the
machine, other people's clusters included. Everything listens on loopback.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
RECONNECT_S = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc (no psutil in this environment)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: fields start after the last ')'.
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    tree = _children()
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = tree.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_tree(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal a process and every descendant (snapshotted first), then reap it."""
    family = [proc.pid, *descendants(proc.pid)]
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=15)
    end = time.monotonic() + 5
    while time.monotonic() < end and any(Path(f"/proc/{pid}").exists() and not _zombie(pid)
                                         for pid in family[1:]):
        time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2:].split()[0] == "Z"


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.25) -> Any:
    """Poll until `condition()` is truthy; its value. Fails naming `what` on timeout."""
    end = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(poll_s)


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVONORM_", "RAY_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # deploy_app (the coordinator's factory and its evaluation hook) must import on the Ray workers too.
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO)])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update(extra or {})
    return env


@dataclass
class RayNode:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tasks_running(self) -> int:
        """Ray worker processes of this node busy with a job right now (their title is the task's name)."""
        if self.proc.poll() is not None:
            return 0
        return sum(cmdline(pid).startswith("ray::_run_job") for pid in descendants(self.proc.pid))

    def kill(self) -> None:
        kill_tree(self.proc)


@dataclass
class RayCluster:
    """A head plus worker nodes, each `ray start --block --num-cpus=1`, all in one temp dir."""

    temp_dir: Path
    port: int = field(default_factory=free_port)
    # Token auth with a cluster-private token: a token in ~/.ray from someone else's cluster is ignored.
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    nodes: list[RayNode] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return base_env({
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
            # Notice a killed node within seconds (default: tens of seconds), so its tasks are retried fast.
            "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
            "RAY_health_check_timeout_ms": "1000",
        })

    def _start(self, name: str, args: list[str]) -> RayNode:
        log = self.temp_dir / f"{name}.log"
        ports = ["--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port",
                 str(free_port()), "--runtime-env-agent-port", str(free_port()), "--metrics-export-port",
                 str(free_port()), "--min-worker-port=0", "--max-worker-port=0"]
        # Ray maps a loopback --node-ip-address to this host's own address; nothing leaves the machine.
        cmd = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
               f"--temp-dir={self.temp_dir}", "--disable-usage-stats", "--object-store-memory=100000000",
               *ports, *args]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env(), cwd=REPO,
                                    start_new_session=True)
        node = RayNode(name, proc, log)
        self.nodes.append(node)
        return node

    def start_head(self) -> RayNode:
        return self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                                    f"--dashboard-port={free_port()}",
                                    f"--ray-client-server-port={free_port()}"])

    def add_worker(self, name: str) -> RayNode:
        return self._start(name, [f"--address={self.address}"])

    def wait_started(self, node: RayNode, timeout_s: float = 180) -> None:
        def up() -> bool:
            if node.proc.poll() is not None:
                raise AssertionError(f"ray node {node.name} exited:\n{tail(node.log)}")
            return b"Ray runtime started" in node.log.read_bytes()

        wait_for(up, timeout_s, f"ray node {node.name} to start", poll_s=0.5)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.kill()


def tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_bytes()[-n:].decode(errors="replace")
    except OSError:
        return "(no log)"


@dataclass
class CoordinatorProcess:
    """The coordinator (API, dashboard, runners) under uvicorn, as a subprocess driven over HTTP."""

    db_url: str
    ray: RayCluster
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = self.ray.env()
        env.update({"EVONORM_DB_URL": self.db_url, "EVONORM_RAY_ADDRESS": self.ray.address,
                    "EVONORM_EXECUTOR": "ray", "EVONORM_MAX_RUNNING": "4",
                    # Runners wait out 5 s in place; a longer outage stops them until the database is back.
                    "EVONORM_RECONNECT_S": str(RECONNECT_S)})
        cmd = [str(BIN / "python"), "-m", "uvicorn", "--factory", "deploy_app:create_app",
               "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
               "--timeout-graceful-shutdown", "5"]
        self.starts += 1
        with open(self.log, "ab") as out:
            out.write(f"\n--- start {self.starts} ---\n".encode())
            out.flush()
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                         start_new_session=True)

    def wait_healthy(self, timeout_s: float = 180) -> None:
        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"coordinator exited with {self.proc.returncode}:\n{tail(self.log)}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout_s, "the coordinator's /healthz", poll_s=0.5)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as in a crash or an OOM kill."""
        if self.proc is not None:
            kill_tree(self.proc)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            kill_tree(self.proc, signal.SIGTERM)
        self.kill()
