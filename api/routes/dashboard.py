"""The dashboard: one static page, its script and style, and plotly.js from the installed plotly package.

Nothing is fetched from a CDN: plotly.min.js is served straight from the
plotly Python package's `package_data`, so the dashboard works offline and
the repository does not carry a 4 MB minified file.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "static"
CACHE = {"Cache-Control": "public, max-age=86400"}


@lru_cache(maxsize=1)
def plotly_js() -> Path | None:
    try:
        import plotly
    except ImportError:  # pragma: no cover - plotly is a dependency
        return None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/static/vendor/plotly.min.js")
def plotly() -> FileResponse:
    path = plotly_js()
    if path is None:
        raise HTTPException(404, "plotly.min.js not found in the plotly package")
    return FileResponse(path, media_type="text/javascript", headers=CACHE)
