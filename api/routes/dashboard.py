"""The dashboard: one static page, its script (plots included, as SVG) and its style.

Nothing is fetched from a CDN and no plotting library is loaded: the page's
two plots are drawn by app.js. Scripts and styles are served gzip-compressed
from memory (`gzipped`), each compressed once per file version.
"""

from __future__ import annotations

import gzip
import threading
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "static"
COMPRESSIBLE = (".js", ".css", ".html", ".svg", ".json", ".txt", ".map")
_gzip_lock = threading.Lock()


def compressible(path: str) -> bool:
    return path.endswith(COMPRESSIBLE)


@lru_cache(maxsize=64)
def _gzip(path: str, mtime_ns: int, size: int) -> bytes:
    return gzip.compress(Path(path).read_bytes(), compresslevel=9, mtime=0)


def gzipped(path: str, mtime_ns: int, size: int) -> bytes:
    """The file's bytes gzip-compressed, computed once per (path, mtime, size)."""
    with _gzip_lock:   # the startup warm-up and a first request do not both compress a file
        return _gzip(path, mtime_ns, size)


def precompress() -> None:
    """Compress the dashboard's scripts and styles ahead of the first page load (a background thread)."""
    for path in STATIC.rglob("*"):
        if path.is_file() and compressible(str(path)):
            st = path.stat()
            gzipped(str(path), st.st_mtime_ns, st.st_size)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
