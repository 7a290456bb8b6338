"""Layer files for download: `.py` inline, TorchScript and torch.export in the threadpool, cached."""

from __future__ import annotations

import anyio
from fastapi.responses import Response

from evonorm_search.domain import layer_name
from evonorm_search.lru import LockedLRU
from primitives import Graph
from primitives.export import ExportFormat, export_bytes

MEDIA = {ExportFormat.PY: "text/x-python; charset=utf-8", ExportFormat.TORCHSCRIPT: "application/octet-stream",
         ExportFormat.EXPORT: "application/octet-stream"}

# Tracing is CPU-heavy (torch.export takes ~0.5 s): at most two at a time, the rest wait.
_TRACE_LIMIT = anyio.CapacityLimiter(2)
_CACHE: LockedLRU[tuple[object, ...], bytes] = LockedLRU(64)


def _cached_export(graph: Graph, fmt: ExportFormat, layout: str, num_features: int, name: str,
                   eps: float) -> bytes:
    key = (graph.dumps(), fmt, layout, num_features, name, eps)
    data = _CACHE.get(key)
    if data is None:   # traced outside the lock: torch.export takes ~0.5 s
        data = _CACHE.put(key, export_bytes(graph, fmt, num_features=num_features, layout=layout, name=name,
                                            eps=eps))
    return data


async def export_response(graph: Graph, fmt: ExportFormat, *, layout: str, num_features: int,
                          name: str | None, eps: float) -> Response:
    fmt = ExportFormat(fmt)
    stem = name or layer_name(graph)
    if fmt is ExportFormat.PY:
        data = _cached_export(graph, fmt, layout, num_features, stem, eps)
    else:
        data = await anyio.to_thread.run_sync(_cached_export, graph, fmt, layout, num_features, stem, eps,
                                              limiter=_TRACE_LIMIT)
    filename = f"{stem}{fmt.suffix}"
    return Response(data, media_type=MEDIA[fmt],
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "X-Layer-Name": stem})
