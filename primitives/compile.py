"""Graph -> nn.Module, by executing the generated standalone source.

The class is built once per generated source and registered as a module in
`sys.modules` with its source in `linecache`, so TorchScript, `inspect` and
pickle see it like any imported class.
"""

from __future__ import annotations

import hashlib
import linecache
import re
import sys
import types
from functools import lru_cache

from torch import nn

from primitives.canonical import structural_hash
from primitives.codegen import module_source
from primitives.graph import Graph


def class_name_for(name: str | None, graph: Graph) -> str:
    """`evonorm_s0` -> `EvonormS0`; no name -> `Layer_<hash8>`."""
    if not name:
        return f"Layer_{structural_hash(graph)[:8]}"
    parts = re.split(r"[^0-9a-zA-Z]+", name)
    text = "".join(p[:1].upper() + p[1:] for p in parts if p)
    return text if text[:1].isalpha() else f"Layer{text}"


@lru_cache(maxsize=2048)
def layer_class(graph: Graph, layout: str = "nchw", name: str | None = None,
                eps: float = 1e-5, fuse: bool = True) -> type[nn.Module]:
    """The nn.Module class of a graph: `layer_class(g)(num_features, eps=..., groups=...)`.

    fuse: standardizations as fused torch kernels (see `primitives.codegen`).
    """
    cls_name = class_name_for(name, graph)
    source = module_source(graph, class_name=cls_name, layout=layout, eps=eps, fuse=fuse)
    # One module per distinct source, never replaced: pickle looks a class up by module and
    # name, so a second class under the same name (another eps, or the same graph written
    # another way) would make instances of the first unpicklable.
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    module_name = f"primitives._generated.{cls_name}_{digest}_{layout}"
    existing = getattr(sys.modules.get(module_name), cls_name, None)
    if isinstance(existing, type) and issubclass(existing, nn.Module):
        return existing
    filename = f"<evonorm-generated {module_name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(module_name)
    module.__file__ = filename
    sys.modules[module_name] = module
    exec(compile(source, filename, "exec"), module.__dict__)
    cls: type[nn.Module] = getattr(module, cls_name)
    return cls


def compile_graph(graph: Graph, num_features: int, *, layout: str = "nchw", eps: float = 1e-5,
                  groups: int = 32, momentum: float = 0.1, name: str | None = None) -> nn.Module:
    return layer_class(graph, layout, name, eps)(num_features, eps=eps, groups=groups, momentum=momentum)
