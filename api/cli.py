"""The `evonorm-search` console script: the CLI of `evonorm_search.cli` plus `serve`, the API's command.

`serve` lives here, beside the app it serves, so that the layers keep pointing one way: the API
imports the CLI's app and adds its command; nothing in `evonorm_search` imports the API.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from evonorm_search.cli import app, console, fail

__all__ = ["LOOPBACK_HOSTS", "app", "main", "serve"]


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on; anything but loopback needs a token.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    db: Annotated[str | None, typer.Option(help="Database URL or SQLite path (default: settings).")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Join this Ray cluster (default: local).")] = None,
    executor: Annotated[str | None, typer.Option(help="ray | inprocess (default: settings, ray).")] = None,
    max_running: Annotated[int | None, typer.Option(min=0, help="Searches run at once; others queue.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the coordinator: REST API, live dashboard and the search runners, in one process.

    Searches left running or queued by a previous run are resumed. Mutating calls need
    `Authorization: Bearer $EVONORM_TOKEN` when EVONORM_TOKEN is set; it must be set to listen
    beyond loopback.
    """
    from pydantic import ValidationError

    from evonorm_search.settings import Settings

    overrides: dict[str, Any] = {"db_url": db, "ray_address": ray_address, "executor": executor,
                                 "max_running": max_running}
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        lines = [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise fail("invalid settings:\n" + "\n".join(lines)) from None
    if host not in LOOPBACK_HOSTS and not settings.token:
        raise fail(f"refusing to listen on {host!r} without a token: set EVONORM_TOKEN (mutating calls then "
                   f"need 'Authorization: Bearer <token>'), or listen on {', '.join(LOOPBACK_HOSTS)}")

    import uvicorn

    from api.app import create_app

    try:
        application = create_app(settings)
    except Exception as e:  # an unreachable database, a bad URL
        raise fail(f"cannot open the store at {settings.db_url}: {e}", code=1) from None
    shown = f"[{host}]" if ":" in host else host
    store_url = application.state.evonorm.store.url
    console.print(f"evonorm-search coordinator on http://{shown}:{port}/ (store {store_url}, "
                  f"executor {settings.executor}{', token required' if settings.token else ''})")
    # Open event streams (the dashboard's) must not hold a shutdown up for ever.
    uvicorn.run(application, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


def main() -> None:  # pragma: no cover
    app()
