"""A throwaway PostgreSQL cluster for the tests that stop, restart or kill a database server.

Those tests must never touch the server a user runs at 127.0.0.1:5432 (the
shared one keeps serving the ordinary tests). `ThrowawayPostgres` runs
`initdb` in a temporary directory, starts the server on a free loopback port
with its socket in that directory, and removes everything on `destroy()`.

initdb and postgres refuse to run as root (CI runs as root): there they run
as the `postgres` user (`setpriv`), which owns the directory. `unavailable()`
says why a cluster cannot be made here (no binaries, no unprivileged user).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg


def _bin_dir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def libpq(url: str) -> str:
    """A SQLAlchemy URL (`postgresql+psycopg://...`) as a libpq connection URI."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def schema_url(server_url: str, schema: str) -> str:
    # libpq `options` selects the schema for every pooled connection, alembic_version included.
    url = urlsplit(server_url)
    query = [(k, v) for k, v in parse_qsl(url.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(url._replace(query=urlencode(query)))


def admin_execute(server_url: str, sql: str) -> None:
    with psycopg.connect(libpq(server_url), autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


@contextlib.contextmanager
def fresh_schema(server_url: str) -> Iterator[str]:
    """A new, uniquely named schema in the server at `server_url`, dropped afterwards; yields its URL."""
    schema = f"evonorm_test_{uuid.uuid4().hex[:16]}"
    admin_execute(server_url, f'CREATE SCHEMA "{schema}"')
    try:
        yield schema_url(server_url, schema)
    finally:
        admin_execute(server_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def unavailable() -> str | None:
    """Why a throwaway cluster cannot be started on this machine (None when it can)."""
    if _bin_dir() is None:
        return "no PostgreSQL server binaries (initdb) to start a throwaway cluster"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run a throwaway cluster as"
    return None


class ThrowawayPostgres:
    """One private PostgreSQL server: trust auth, database `test`, on 127.0.0.1:<free port>."""

    def __init__(self) -> None:
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        bin_dir = _bin_dir()
        assert bin_dir is not None
        self.bin = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="evpg-", dir="/tmp"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = _free_port()
        self._user: pwd.struct_passwd | None = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if self._user is not None:
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)
        self._as_owner([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                        "--no-sync", "-E", "UTF8"], timeout=120)
        self.start()
        self._as_owner([str(self.bin / "createdb"), "-h", str(self.dir), "-p", str(self.port), "-U",
                        "postgres", "test"], timeout=60)

    @property
    def url(self) -> str:
        """SQLAlchemy URL of its `test` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/test"

    def _as_owner(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
        if self._user is not None:
            cmd = ["setpriv", f"--reuid={self._user.pw_uid}", f"--regid={self._user.pw_gid}", "--init-groups",
                   "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=self.dir)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n"
                               f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}")
        return done

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", *args], timeout=timeout)

    def start(self) -> None:
        # fsync off: a test cluster need not survive a power cut, and it starts and commits faster.
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-l", str(self.log), "-o", opts, "start")

    def stop(self) -> None:
        """Fast shutdown: connections are closed, the server is down until `start()`."""
        self._pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def is_running(self) -> bool:
        return self._postmaster_pid() is not None

    def _postmaster_pid(self) -> int | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def destroy(self) -> None:
        """Stop the server (killing it if it will not stop) and remove its directory."""
        pid = self._postmaster_pid()
        if pid is not None:
            try:
                self._pg_ctl("-m", "immediate", "stop", timeout=30)
            except Exception:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)
        shutil.rmtree(self.dir, ignore_errors=True)
