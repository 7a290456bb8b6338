"""One writer per search: the runner's lease on its search row.

A runner claims its search before touching it and renews the claim every
few seconds while it runs. A second runner for the same search (`run
--resume` beside `serve`, a second coordinator on one database) is refused
with a LeaseError instead of resetting and retraining the first one's
in-flight candidates.

A holder is taken over when it is silent for `STALE_S` (its host died), or
at once when it ran on this host and its process is gone (a killed runner
restarted on the same machine need not wait). A runner that finds its lease
taken, because it was suspended past `STALE_S`, stops without writing more.

A runner's identity is `host:pid:start:nonce`; `start` (the process's start
time, from /proc where there is one) tells a dead process from a new one
that reused its pid, as happens when a container restarts.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

from db import Store

STALE_S = 30.0   # a lease not renewed for this long belongs to a dead runner
RENEW_S = 5.0


def _process_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]   # field 22: start time in clock ticks
    except (OSError, IndexError):
        return "-"


def runner_identity() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}:{uuid.uuid4().hex[:8]}"


def holder_is_gone(holder: str) -> bool:
    """True when `holder` ran on this host and its process no longer exists."""
    try:
        host, pid_text, start, _ = holder.rsplit(":", 3)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False   # another machine's process: only its silence tells
    if pid == os.getpid():
        return False   # this process: another runner thread here holds it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass   # alive, another user's
    return start != "-" and _process_start(pid) not in ("-", start)


class LeaseLost(Exception):
    """Another runner took the search over; this one must stop writing."""


class Lease:
    """A runner's hold on one search: `claim()` once, `renew()` often, `release()` at the end."""

    def __init__(self, store: Store, search_id: int, *, stale_s: float = STALE_S, renew_s: float = RENEW_S
                 ) -> None:
        self.store = store
        self.search_id = search_id
        self.stale_s = stale_s
        self.renew_s = renew_s
        self.runner = runner_identity()
        self._renewed = 0.0

    def claim(self) -> str | None:
        """Take the lease, from a dead holder on this host at once; LeaseError while another holds it.

        Returns the holder it was taken over from (a runner that died without releasing it), if any.
        """
        current = self.store.get_search(self.search_id).runner
        gone = current if current is not None and holder_is_gone(current) else None
        self.store.claim_search(self.search_id, self.runner, stale_after_s=self.stale_s, take_from=gone)
        self._renewed = time.monotonic()
        return current if current not in (None, self.runner) else None

    def renew(self) -> None:
        """Renew when due; raises LeaseLost once another runner has taken the lease over."""
        now = time.monotonic()
        if now - self._renewed < self.renew_s:
            return
        self._renewed = now
        if not self.store.renew_lease(self.search_id, self.runner):
            holder = self.store.get_search(self.search_id).runner
            raise LeaseLost(f"search {self.search_id} was taken over by {holder}")

    def release(self) -> None:
        self.store.release_search(self.search_id, self.runner)
