"""Dependencies: the app's store, coordinator, live views and settings, and the bearer-token check."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.metrics import Metrics
from db import Store
from evonorm_search.coordinator import Coordinator
from evonorm_search.live import CandidateCache, LiveFronts
from evonorm_search.settings import Settings


@dataclass
class AppState:
    """Everything a request handler may need; one per app, on `app.state.evonorm`."""

    settings: Settings
    store: Store
    coordinator: Coordinator
    fronts: LiveFronts
    candidates: CandidateCache
    metrics: Metrics


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.evonorm
    return state


State = Annotated[AppState, Depends(get_state)]

_bearer = HTTPBearer(auto_error=False, description="Required on POST routes when the server has a token")


def require_token(
    state: State, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """401 unless `Authorization: Bearer <token>` matches the configured token (no token: open)."""
    token = state.settings.token
    if not token:
        return
    given = credentials.credentials if credentials and credentials.scheme.lower() == "bearer" else ""
    if not secrets.compare_digest(given.encode(), token.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


Authorized = Depends(require_token)
