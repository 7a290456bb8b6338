"""Layer files for download: `.py` inline, TorchScript and torch.export in the threadpool, cached."""

from __future__ import annotations

import threading
from collections import OrderedDict

import anyio
from fastapi.responses import Response

from primitives import Graph, structural_hash
from primitives.export import ExportFormat, export_bytes

MEDIA = {ExportFormat.PY: "text/x-python; charset=utf-8", ExportFormat.TORCHSCRIPT: "application/octet-stream",
         ExportFormat.EXPORT: "application/octet-stream"}

# Tracing is CPU-heavy (torch.export takes ~0.5 s): at most two at a time, the rest wait.
_TRACE_LIMIT = anyio.CapacityLimiter(2)
_CACHE: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 64


def _cached_export(graph: Graph, fmt: ExportFormat, layout: str, num_features: int, name: str,
                   eps: float) -> bytes:
    key = (graph.dumps(), fmt, layout, num_features, name, eps)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    data = export_bytes(graph, fmt, num_features=num_features, layout=layout, name=name, eps=eps)
    with _CACHE_LOCK:
        _CACHE[key] = data
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return data


async def export_response(graph: Graph, fmt: ExportFormat, *, layout: str, num_features: int,
                          name: str | None, eps: float) -> Response:
    fmt = ExportFormat(fmt)
    stem = name or f"layer_{structural_hash(graph)[:8]}"
    if fmt is ExportFormat.PY:
        data = _cached_export(graph, fmt, layout, num_features, stem, eps)
    else:
        data = await anyio.to_thread.run_sync(_cached_export, graph, fmt, layout, num_features, stem, eps,
                                              limiter=_TRACE_LIMIT)
    filename = f"{stem}{fmt.suffix}"
    return Response(data, media_type=MEDIA[fmt],
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "X-Layer-Name": stem})
