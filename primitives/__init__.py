"""The search space: ops, graphs, identity, formulas, compile, export and the layer zoo.

Pure: nothing here does I/O except `primitives.export`, which writes the
files a user asks for.
"""

from primitives.canonical import canonicalize, structural_hash
from primitives.compile import compile_graph, layer_class
from primitives.formula import formula
from primitives.graph import MAX_NODES, SCHEMA, Graph, GraphError, Node
from primitives.ops import OPS, Op, get_op, op_names

__all__ = [
    "MAX_NODES",
    "OPS",
    "SCHEMA",
    "Graph",
    "GraphError",
    "Node",
    "Op",
    "canonicalize",
    "compile_graph",
    "formula",
    "get_op",
    "layer_class",
    "op_names",
    "structural_hash",
]
