"""The throwaway PostgreSQL cluster the restart tests use: it is private, restartable, and goes away."""

from __future__ import annotations

import psycopg
from pg_throwaway import ThrowawayPostgres, libpq


def _start_time(url: str) -> object:
    with psycopg.connect(libpq(url), connect_timeout=5) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
        return row[0] if row else None


def test_throwaway_cluster_restarts_on_its_own_port(throwaway_pg: ThrowawayPostgres) -> None:
    assert throwaway_pg.port != 5432 and throwaway_pg.dir.is_dir()
    before = _start_time(throwaway_pg.url)
    throwaway_pg.restart()
    assert _start_time(throwaway_pg.url) != before
    assert throwaway_pg.is_running()
